/**
 * A browser page for the real-browser specs (bundled by esbuild at test time,
 * see test/support/browser-pages.ts): stock clients only — @connectrpc/connect-web
 * over gRPC-Web and Connect with the generated chat.v1 services, and the
 * native WebSocket with @bufbuild/protobuf for Subscribe (docs/websocket.md).
 * It exposes ChatPageApi on `globalThis.chatPage` and renders every stream's
 * state into `<pre id="log">`, so a screenshot shows what the page received.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Client, ConnectError, type Interceptor, type Transport, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "../../../gen/chat/v1/auth_service_pb.js";
import { GroupService } from "../../../gen/chat/v1/group_service_pb.js";
import { MessageService } from "../../../gen/chat/v1/message_service_pb.js";
import { type SubscribeResponse, StreamService, SubscribeRequestSchema, SubscribeResponseSchema } from "../../../gen/chat/v1/stream_service_pb.js";
import type { ChatPageApi, PageEvent, PageGlobal, PageProtocol, PageStream, PageStreamKind } from "./chat-page-api.js";

// The few DOM globals this page uses (the repository's tsconfig has no DOM lib; these are module-scoped).
declare const location: { readonly origin: string };
declare const document: { getElementById(id: string): { textContent: string | null } | null };
interface BrowserWebSocket {
  binaryType: string;
  onopen: (() => void) | null;
  onmessage: ((e: { data: unknown }) => void) | null;
  onclose: ((e: { code: number; reason: string }) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number): void;
}
declare const WebSocket: new (url: string, protocols: string[]) => BrowserWebSocket;

/** Clients are the typed chat.v1 clients over one connect-web transport. */
interface Clients {
  auth: Client<typeof AuthService>;
  groups: Client<typeof GroupService>;
  messages: Client<typeof MessageService>;
  streams: Client<typeof StreamService>;
}

let baseUrl = "";
let token = "";
const clients = new Map<PageProtocol, Clients>();

/** bearer sends the signed-in user's token: a non-safelisted header, so each call is preflighted. */
const bearer: Interceptor = (next) => (req) => {
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

function clientsFor(protocol: PageProtocol): Clients {
  let c = clients.get(protocol);
  if (!c) {
    const transport: Transport =
      protocol === "grpc-web"
        ? createGrpcWebTransport({ baseUrl, interceptors: [bearer] })
        : createConnectTransport({ baseUrl, interceptors: [bearer] });
    c = {
      auth: createClient(AuthService, transport),
      groups: createClient(GroupService, transport),
      messages: createClient(MessageService, transport),
      streams: createClient(StreamService, transport),
    };
    clients.set(protocol, c);
  }
  return c;
}

/** StreamState is a PageStream being filled in, with what cancels it. */
type StreamState = { -readonly [K in keyof PageStream]: PageStream[K] } & { events: PageEvent[]; cancel: () => void };
const streams = new Map<string, StreamState>();
/** calls are one line per unary call and its outcome, for the screenshot. */
const calls: string[] = [];

/** noted runs a unary call, noting its outcome (or error) for the screenshot. */
async function noted<T>(what: string, call: () => Promise<T>, outcome: (r: T) => string): Promise<T> {
  try {
    const r = await call();
    calls.push(`${what}: ${outcome(r)}`);
    return r;
  } catch (e) {
    calls.push(`${what}: failed ${describe(e)}`);
    throw e;
  } finally {
    render();
  }
}

function render(): void {
  const lines = [`page: ${location.origin}`, `server: ${baseUrl || "(not signed in)"}`, ...calls];
  for (const [name, s] of streams) {
    const state = s.ended ? `ended ${s.error || "cleanly"}` : s.ready ? "ready" : "opening";
    lines.push(`stream ${name} over ${s.kind}: ${state}`);
    for (const e of s.events) lines.push(`  seq ${e.seq} ${e.kind}${e.kind === "message" ? ` "${e.text}"` : ""}`);
  }
  const log = document.getElementById("log");
  if (log) log.textContent = lines.join("\n");
}

function describe(e: unknown): string {
  if (e instanceof ConnectError) return `${e.code} ${e.rawMessage}`;
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

function onItem(s: StreamState, item: SubscribeResponse): void {
  const p = item.payload;
  if (p.case === "ready") {
    s.ready = true;
    s.readyGroups = p.value.groups.map((g) => ({ groupId: g.groupId, seq: Number(g.seq) }));
  } else if (p.case === "event") {
    const e = p.value;
    const message = e.kind.case === "message" ? e.kind.value : undefined;
    s.events.push({
      groupId: e.groupId,
      seq: Number(e.seq),
      kind: e.kind.case ?? "unknown",
      text: message?.text ?? "",
      messageId: message?.messageId ?? "",
    });
  }
  render();
}

function end(s: StreamState, error: string): void {
  s.ended = true;
  s.error = error;
  render();
}

function openStream(name: string, kind: PageStreamKind): void {
  if (streams.has(name)) throw new Error(`stream ${name} is already open`);
  const s: StreamState = {
    kind,
    ready: false,
    readyGroups: [],
    events: [],
    ended: false,
    error: "",
    closeCode: 0,
    opened: false,
    cancel: () => {},
  };
  streams.set(name, s);
  render();
  if (kind === "websocket") {
    // docs/websocket.md: the format subprotocol, then the token as the last offered subprotocol.
    const ws = new WebSocket(`${baseUrl.replace(/^http/, "ws")}/chat.v1.StreamService/Subscribe`, ["chat.v1.proto", `bearer.${token}`]);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      s.opened = true;
      ws.send(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, {})));
    };
    ws.onmessage = (e) => {
      if (e.data instanceof ArrayBuffer) onItem(s, fromBinary(SubscribeResponseSchema, new Uint8Array(e.data)));
      else end(s, "a text message (the server sends binary only)");
    };
    ws.onclose = (e) => {
      s.closeCode = e.code;
      end(s, e.code === 1000 ? "" : `close ${e.code} ${e.reason}`);
    };
    s.cancel = () => ws.close(1000);
    return;
  }
  const abort = new AbortController();
  s.cancel = () => abort.abort();
  s.opened = true;
  void (async () => {
    try {
      for await (const item of clientsFor(kind).streams.subscribe({}, { signal: abort.signal })) onItem(s, item);
      end(s, "");
    } catch (e) {
      end(s, abort.signal.aborted ? "" : describe(e));
    }
  })();
}

const api: ChatPageApi = {
  async signIn(url, protocol, mode, username, password) {
    if (baseUrl !== url) clients.clear();
    baseUrl = url;
    const auth = clientsFor(protocol).auth;
    const res = await noted(
      `${mode === "register" ? "Register" : "Login"} ${username} over ${protocol}`,
      (): Promise<{ user?: { userId: string } | undefined; tokens?: { accessToken: string } | undefined }> =>
        mode === "register" ? auth.register({ username, password }) : auth.login({ username, password }),
      (r) => `user ${r.user?.userId}`,
    );
    token = res.tokens?.accessToken ?? "";
    return { userId: res.user?.userId ?? "" };
  },
  setToken(t) {
    token = t;
  },
  async listGroups(protocol) {
    const res = await noted(
      `ListGroups over ${protocol}`,
      () => clientsFor(protocol).groups.listGroups({}),
      (r) => r.groups.map((g) => `"${g.name}"`).join(", ") || "none",
    );
    return res.groups.map((g) => ({ groupId: g.groupId, name: g.name }));
  },
  async sendMessage(protocol, groupId, text, clientMessageId) {
    const res = await noted(
      `SendMessage "${text}" over ${protocol}`,
      () => clientsFor(protocol).messages.sendMessage({ groupId, text, clientMessageId }),
      (r) => `seq ${r.message?.seq}`,
    );
    return { seq: Number(res.message?.seq ?? 0), messageId: res.message?.messageId ?? "" };
  },
  openStream,
  stream(name) {
    const s = streams.get(name);
    if (!s) throw new Error(`no stream named ${name}`);
    const { cancel: _, ...state } = s;
    return { ...state, events: [...s.events], readyGroups: [...s.readyGroups] };
  },
  closeStreams() {
    for (const s of streams.values()) s.cancel();
  },
  async rawFetch(path, headers, body) {
    const what = `fetch ${path} with ${Object.keys(headers).join(", ")}`;
    try {
      const res = await fetch(`${baseUrl}${path}`, {
        method: "POST",
        headers: { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body,
      });
      await res.arrayBuffer();
      calls.push(`${what}: HTTP ${res.status}`);
      return { status: res.status, error: "" };
    } catch (e) {
      calls.push(`${what}: refused by the browser (${describe(e)})`);
      return { status: 0, error: describe(e) };
    } finally {
      render();
    }
  },
};

(globalThis as unknown as PageGlobal).chatPage = api;
render();
