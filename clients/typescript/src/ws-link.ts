/**
 * The live connection over a WebSocket (docs/websocket.md): `StreamService/Connect` (subscribe, then sends over the
 * same socket, answered by request_id) or `StreamService/Subscribe` (subscribe only; sends go unary). The access
 * token travels as the subprotocol `bearer.<token>`, offered last; close code 4000 + n ends a stream with gRPC status n.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { SendMessageRequest, SendMessageResponse } from "../../../gen/chat/v1/message_service_pb.js";
import {
  ConnectRequestSchema,
  ConnectResponseSchema,
  SubscribeRequestSchema,
  SubscribeResponseSchema,
} from "../../../gen/chat/v1/stream_service_pb.js";
import { fromStreamError } from "./errors.js";
import { type LinkRun, type LiveLink, hiddenStatusError } from "./link.js";
import { WS_OPEN, type WebSocketConstructor, type WebSocketLike } from "./web.js";

/** WsEndpoint picks the WebSocket endpoint: "connect" (sends over the socket) or "subscribe" (sends unary). */
export type WsEndpoint = "connect" | "subscribe";

interface Pending {
  resolve(r: SendMessageResponse): void;
  reject(e: ConnectError): void;
}

/** wsUrl turns the http(s) baseUrl into the ws(s) URL of a StreamService method. */
export function wsUrl(baseUrl: string, method: "Connect" | "Subscribe"): string {
  return `${baseUrl.replace(/^http/, "ws").replace(/\/+$/, "")}/chat.v1.StreamService/${method}`;
}

/** closeStatus is the status a close event stands for. */
function closeStatus(code: number, reason: string, opened: boolean, errorText: string): ConnectError {
  if (code >= 4000 && code < 4100) return new ConnectError(reason || "the server ended the stream", (code - 4000) as Code);
  if (!opened) {
    // A browser hides the refused handshake's status; the ws package names it ("Unexpected server response: 401").
    if (/\b401\b/.test(errorText)) return new ConnectError("the server refused the access token", Code.Unauthenticated);
    if (/Unexpected server response: \d+/.test(errorText)) return new ConnectError(`could not open the WebSocket (${errorText})`, Code.Unavailable);
    return hiddenStatusError(`could not open the WebSocket${errorText ? ` (${errorText})` : ""}`);
  }
  return new ConnectError(`the WebSocket closed (${code}${reason ? ` ${reason}` : ""})`, Code.Unavailable);
}

function bytesOf(data: unknown): Uint8Array | undefined {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return undefined;
}

/** WebSocketLink is described at the top of the file. */
export class WebSocketLink implements LiveLink {
  readonly name: string;
  private open: { ws: WebSocketLike; pending: Map<string, Pending> } | undefined;
  private nextRequest = 0;

  constructor(
    private readonly baseUrl: string,
    private readonly WebSocket: WebSocketConstructor,
    private readonly endpoint: WsEndpoint,
  ) {
    this.name = `websocket ${endpoint}`;
  }

  run(r: LinkRun): Promise<ConnectError> {
    const method = this.endpoint === "connect" ? "Connect" : "Subscribe";
    return new Promise<ConnectError>((resolve) => {
      let ws: WebSocketLike;
      try {
        ws = new this.WebSocket(wsUrl(this.baseUrl, method), ["chat.v1.proto", `bearer.${r.accessToken}`]);
      } catch (e) {
        resolve(new ConnectError(`could not open the WebSocket: ${String(e)}`, Code.Unavailable));
        return;
      }
      ws.binaryType = "arraybuffer";
      const pending = new Map<string, Pending>();
      let opened = false;
      let errorText = "";
      let done = false;
      const finish = (status: ConnectError) => {
        if (done) return;
        done = true;
        r.signal.removeEventListener("abort", onAbort);
        if (this.open?.ws === ws) this.open = undefined;
        const lost = new ConnectError(`the connection ended before the send was answered (${status.rawMessage})`, Code.Unavailable);
        for (const p of pending.values()) p.reject(lost);
        pending.clear();
        // No-ops rather than null: the ws package throws an 'error' event that has no listener.
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = () => undefined;
        resolve(status);
      };
      const fail = (status: ConnectError) => {
        try {
          ws.close(1000);
        } catch {
          // already closing
        }
        finish(status);
      };
      const onAbort = () => fail(new ConnectError(String(r.signal.reason ?? "closed"), Code.Canceled));
      r.signal.addEventListener("abort", onAbort, { once: true });
      ws.onopen = () => {
        opened = true;
        const subscribe = create(SubscribeRequestSchema, { cursors: [...r.cursors] });
        if (this.endpoint === "connect") {
          ws.send(toBinary(ConnectRequestSchema, create(ConnectRequestSchema, { payload: { case: "subscribe", value: subscribe } })));
          this.open = { ws, pending };
        } else {
          ws.send(toBinary(SubscribeRequestSchema, subscribe));
        }
      };
      ws.onerror = (ev: { message?: unknown; error?: unknown }) => {
        errorText = typeof ev?.message === "string" ? ev.message : "";
      };
      ws.onclose = (ev: { code?: unknown; reason?: unknown }) => {
        finish(closeStatus(typeof ev?.code === "number" ? ev.code : 1006, typeof ev?.reason === "string" ? ev.reason : "", opened, errorText));
      };
      ws.onmessage = (ev: { data?: unknown }) => {
        const bytes = bytesOf(ev?.data);
        if (!bytes) return fail(new ConnectError("the server sent a text message; expected binary protobuf", Code.Internal));
        try {
          if (this.endpoint === "subscribe") return r.onItem(fromBinary(SubscribeResponseSchema, bytes));
          const res = fromBinary(ConnectResponseSchema, bytes);
          const p = res.payload;
          if (p.case === "item") return r.onItem(p.value);
          if (p.case === "sendResult") {
            const waiter = pending.get(res.requestId);
            pending.delete(res.requestId);
            const o = p.value.outcome;
            if (o.case === "response") waiter?.resolve(o.value);
            else if (o.case === "error") waiter?.reject(fromStreamError(o.value));
            else waiter?.reject(new ConnectError("the server answered a send with neither result nor error", Code.Internal));
          }
          // ack_error: an ack the server refused (e.g. the user left the group meanwhile) changes nothing the app relies on.
        } catch (e) {
          fail(new ConnectError(`undecodable message from the server: ${String(e)}`, Code.Internal));
        }
      };
    });
  }

  ack(groupId: string, seq: bigint): boolean {
    const o = this.open;
    if (!o || o.ws.readyState !== WS_OPEN) return false;
    try {
      const requestId = `a${++this.nextRequest}`;
      o.ws.send(toBinary(ConnectRequestSchema, create(ConnectRequestSchema, { requestId, payload: { case: "ack", value: { groupId, seq } } })));
      return true;
    } catch {
      return false;
    }
  }

  send(req: SendMessageRequest, timeoutMs: number): Promise<SendMessageResponse> | undefined {
    const o = this.open;
    if (!o || o.ws.readyState !== WS_OPEN) return undefined;
    const requestId = `s${++this.nextRequest}`;
    return new Promise<SendMessageResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        o.pending.delete(requestId);
        reject(new ConnectError(`the send was not answered within ${timeoutMs} ms`, Code.DeadlineExceeded));
      }, timeoutMs);
      o.pending.set(requestId, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      try {
        o.ws.send(toBinary(ConnectRequestSchema, create(ConnectRequestSchema, { requestId, payload: { case: "sendMessage", value: req } })));
      } catch (e) {
        o.pending.delete(requestId);
        clearTimeout(timer);
        reject(new ConnectError(`could not write to the WebSocket: ${String(e)}`, Code.Unavailable));
      }
    });
  }
}
