/**
 * ChatClient: one user's client of a chat.v1 server, for browsers and Node. It logs in and keeps the session
 * (refreshing the access token by itself), holds one live connection with per-group cursors (see live.ts), sends
 * messages with automatic idempotency keys and safe retries, and wraps the calls an app needs. Anything not
 * wrapped is one of the typed connect clients in `clients`.
 */
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, type Interceptor, type Transport, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "../../../gen/chat/v1/auth_service_pb.js";
import type { Group, Member } from "../../../gen/chat/v1/group_pb.js";
import { MemberRole } from "../../../gen/chat/v1/group_pb.js";
import { GroupService } from "../../../gen/chat/v1/group_service_pb.js";
import { MessageService, SendMessageRequestSchema, type SendMessageResponse } from "../../../gen/chat/v1/message_service_pb.js";
import { StreamService } from "../../../gen/chat/v1/stream_service_pb.js";
import { AuthSession } from "./auth-session.js";
import { type BackoffOptions, type ResolvedBackoff, backoffDelay, resolveBackoff } from "./backoff.js";
import { Emitter, type Handler } from "./emitter.js";
import { SEND_RETRYABLE, retryAfterMs } from "./errors.js";
import { type ChatMessage, type ClientEvents, type ConnectionState, type UserInfo, toChatMessage } from "./events.js";
import { HistoryPager, type HistoryOptions } from "./history.js";
import type { LiveLink } from "./link.js";
import { LiveConnection } from "./live.js";
import { type CursorStore, MemoryCursorStore, MemoryTokenStore, type TokenStore } from "./stores.js";
import { StreamLink } from "./stream-link.js";
import { type WsEndpoint, WebSocketLink } from "./ws-link.js";
import { type WebSocketConstructor, globalWebSocket, randomId, sleep } from "./web.js";

/** ChatClientOptions configure a client; only `baseUrl` is required. */
export interface ChatClientOptions {
  /** baseUrl is the server, e.g. "https://chat.example.com" (http(s); the WebSocket URL is derived from it). */
  readonly baseUrl: string;
  /** WebSocket is the WebSocket class: the global one by default; in Node 20 pass `WebSocket` of the `ws` package. */
  readonly WebSocket?: WebSocketConstructor;
  /** protocol of unary calls (and of the live stream without WebSocket): "connect" (default, binary) or "grpc-web". */
  readonly protocol?: "connect" | "grpc-web";
  /** live picks the live transport: "websocket" (default where a WebSocket class exists) or "stream" (Subscribe over `protocol`). */
  readonly live?: "websocket" | "stream";
  /** wsEndpoint: "connect" (default: sends over the socket) or "subscribe" (Subscribe over WebSocket, sends unary). */
  readonly wsEndpoint?: WsEndpoint;
  /** cursorStore keeps the per-group cursors (default: a MemoryCursorStore). */
  readonly cursorStore?: CursorStore;
  /** tokenStore keeps the session (default: a MemoryTokenStore). */
  readonly tokenStore?: TokenStore;
  /** backoff shapes reconnect and retry delays. */
  readonly backoff?: BackoffOptions;
  /** sendAttempts bounds the attempts of one send (default 6). */
  readonly sendAttempts?: number;
  /** callTimeoutMs bounds each unary call (default 15,000). */
  readonly callTimeoutMs?: number;
  /** connectTimeoutMs bounds the wait for a live connection to become ready (default 20,000). */
  readonly connectTimeoutMs?: number;
}

/** SendResult is a stored message's id and seq; `duplicate` when an earlier attempt had stored it already. */
export interface SendResult {
  readonly messageId: string;
  readonly seq: bigint;
  readonly duplicate: boolean;
  readonly clientMessageId: string;
  /** attempts is how many times it was sent (more than 1 after a retry). */
  readonly attempts: number;
  /** via says how the attempt that succeeded went: over the live WebSocket, or as a unary SendMessage. */
  readonly via: "websocket" | "unary";
  readonly message: ChatMessage;
  /** raw is the server's answer as chat.v1 has it (e.g. for toJson with SendMessageResponseSchema). */
  readonly raw: SendMessageResponse;
}

/** SignedInUser is the user register() or login() signed in as. */
export interface SignedInUser extends UserInfo {
  /** createdAt is when the account was registered. */
  readonly createdAt: Date | undefined;
}

/** Clients are the typed connect clients of every chat.v1 service, authenticated by the client's session. */
export interface Clients {
  readonly auth: Client<typeof AuthService>;
  readonly groups: Client<typeof GroupService>;
  readonly messages: Client<typeof MessageService>;
  readonly streams: Client<typeof StreamService>;
}

/**
 * networkFetch is the global fetch, with its network failures (a TypeError: refused, reset, DNS) turned into
 * UNAVAILABLE, which callers retry, instead of connect's UNKNOWN. Aborts pass through unchanged.
 */
const networkFetch = ((input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) =>
  globalThis.fetch(input, init).catch((e: unknown) => {
    if (!(e instanceof TypeError)) throw e;
    const cause = (e as { cause?: { message?: unknown } }).cause;
    const detail = typeof cause?.message === "string" ? `: ${cause.message}` : "";
    throw new ConnectError(`cannot reach the server (${e.message}${detail})`, Code.Unavailable, undefined, undefined, e);
  })) as typeof fetch;

/** UUID: usernames have at most 32 characters, so a 36-character UUID is never one. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** ChatClient is described at the top of the file. */
export class ChatClient {
  /** clients are the typed connect clients, for calls the ChatClient does not wrap. */
  readonly clients: Clients;
  readonly baseUrl: string;
  private readonly events = new Emitter<ClientEvents>();
  private readonly session: AuthSession;
  private readonly link: LiveLink;
  private readonly live: LiveConnection;
  private readonly backoff: ResolvedBackoff;
  private readonly sendAttempts: number;
  private readonly publicAuth: Client<typeof AuthService>;
  private readonly callTimeoutMs: number;

  constructor(opts: ChatClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
    this.backoff = resolveBackoff(opts.backoff);
    this.sendAttempts = Math.max(1, opts.sendAttempts ?? 6);
    const protocol = opts.protocol ?? "connect";
    const timeout = opts.callTimeoutMs ?? 15_000;
    this.callTimeoutMs = timeout;
    const transport = (interceptors: Interceptor[]): Transport =>
      protocol === "grpc-web"
        ? createGrpcWebTransport({ baseUrl: this.baseUrl, defaultTimeoutMs: timeout, interceptors, fetch: networkFetch })
        : createConnectTransport({ baseUrl: this.baseUrl, useBinaryFormat: true, defaultTimeoutMs: timeout, interceptors, fetch: networkFetch });
    const open = transport([]);
    this.publicAuth = createClient(AuthService, open);
    this.session = new AuthSession(this.baseUrl, this.publicAuth, opts.tokenStore ?? new MemoryTokenStore(), (reason) => {
      this.live.stopNow();
      void this.events.emit("signedOut", { reason }, (e) => this.reportError(e));
    });
    const authed = transport([this.bearer()]);
    this.clients = {
      auth: createClient(AuthService, authed),
      groups: createClient(GroupService, authed),
      messages: createClient(MessageService, authed),
      streams: createClient(StreamService, authed),
    };
    const WS = opts.WebSocket ?? globalWebSocket();
    const liveKind = opts.live ?? (WS ? "websocket" : "stream");
    if (liveKind === "websocket" && !WS) throw new Error('live: "websocket" needs a WebSocket class: pass the `ws` package\'s WebSocket as the WebSocket option');
    this.link = liveKind === "websocket" && WS ? new WebSocketLink(this.baseUrl, WS, opts.wsEndpoint ?? "connect") : new StreamLink(this.clients.streams, protocol);
    this.live = new LiveConnection({
      link: this.link,
      auth: this.session,
      store: opts.cursorStore ?? new MemoryCursorStore(),
      events: this.events,
      backoff: this.backoff,
      connectTimeoutMs: opts.connectTimeoutMs ?? 20_000,
      reportError: (e) => this.reportError(e),
      checkToken: () => this.clients.groups.listGroups({ pageSize: 1 }),
    });
  }

  /** bearer adds the access token to every call (unless the call sets its own) and, for unary calls answered UNAUTHENTICATED, refreshes once and retries. */
  private bearer(): Interceptor {
    return (next) => async (req) => {
      if (req.header.has("authorization")) return next(req);
      const token = await this.session.accessToken();
      req.header.set("authorization", `Bearer ${token}`);
      if (req.stream) return next(req);
      try {
        return await next(req);
      } catch (e) {
        if (!(e instanceof ConnectError && e.code === Code.Unauthenticated)) throw e;
        await this.session.refresh(token);
        req.header.set("authorization", `Bearer ${await this.session.accessToken()}`);
        return await next(req);
      }
    };
  }

  private reportError(e: unknown): void {
    const err = e instanceof Error ? e : new Error(String(e));
    if (this.events.count("error") === 0) return;
    void this.events.emit("error", err, () => undefined);
  }

  /** on registers a handler for an event and returns a function that removes it. Handlers may be async: the client awaits them. */
  on<K extends keyof ClientEvents>(name: K, handler: Handler<ClientEvents[K]>): () => void {
    return this.events.on(name, handler);
  }

  /** user is the signed-in user, if any. */
  get user(): UserInfo | undefined {
    const s = this.session.session;
    return s ? { userId: s.userId, username: s.username } : undefined;
  }

  /** state is the live connection's state ("closed" before start()). */
  get state(): ConnectionState {
    return this.live.state;
  }

  /** register creates an account and signs in as it. */
  async register(username: string, password: string): Promise<SignedInUser> {
    const res = await this.publicAuth.register({ username, password });
    const s = await this.session.adopt(res.user, res.tokens);
    return { userId: s.userId, username: s.username, createdAt: res.user?.createdAt ? timestampDate(res.user.createdAt) : undefined };
  }

  /** login signs in. */
  async login(username: string, password: string): Promise<SignedInUser> {
    const res = await this.publicAuth.login({ username, password });
    const s = await this.session.adopt(res.user, res.tokens);
    return { userId: s.userId, username: s.username, createdAt: res.user?.createdAt ? timestampDate(res.user.createdAt) : undefined };
  }

  /** restore loads a stored session for this server (a page reload, the next CLI run); true when there was one. */
  restore(): Promise<boolean> {
    return this.session.restore();
  }

  /** logout closes the live connection, revokes the session on the server and forgets it (also when the server says it was revoked already). */
  async logout(): Promise<void> {
    await this.live.close();
    const s = this.session.session;
    try {
      if (s) await this.clients.auth.logout({ refreshToken: s.refreshToken });
    } catch (e) {
      if (!(e instanceof ConnectError && e.code === Code.Unauthenticated)) {
        await this.session.forget();
        throw e;
      }
    }
    await this.session.forget();
  }

  /** start opens the live connection (events follow through `on`); a no-op when it is open. Rejects UNAUTHENTICATED without a session. */
  start(): Promise<void> {
    return this.live.start();
  }

  /** close closes the live connection, waits for the handlers in progress and flushes the cursor store. */
  close(): Promise<void> {
    return this.live.close();
  }

  /** reconnect drops the live connection as a network failure would; it resumes from the cursors (e.g. after a network change). */
  reconnect(): void {
    this.live.reconnect();
  }

  /** whenLive resolves once the live connection is live (at once if it is); rejects when it closes first. */
  whenLive(): Promise<void> {
    if (this.live.state === "live") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const off = this.on("state", ({ state }) => {
        if (state === "live") resolve();
        else if (state === "closed") reject(new ConnectError("the live connection closed", Code.Canceled));
        else return;
        off();
      });
    });
  }

  /** cursor is the group's cursor: the last seq handed to the app (undefined before the first). */
  cursor(groupId: string): bigint | undefined {
    return this.live.cursor(groupId)?.seq;
  }

  /** listGroups returns all the user's groups (every page). */
  async listGroups(): Promise<Group[]> {
    const groups: Group[] = [];
    let pageToken = "";
    do {
      const res = await this.clients.groups.listGroups({ pageSize: 500, pageToken });
      groups.push(...res.groups);
      pageToken = res.nextPageToken;
    } while (pageToken !== "");
    return groups;
  }

  /** createGroup creates a group owned by the user, optionally with members (by username). */
  async createGroup(name: string, opts: { members?: readonly string[] } = {}): Promise<Group> {
    const { group } = await this.clients.groups.createGroup({ name, memberUsernames: [...(opts.members ?? [])] });
    if (!group) throw new ConnectError("CreateGroup answered without the group", Code.Internal);
    return group;
  }

  /** addMember adds a user, named by user id (a UUID) or username, as MEMBER unless `role` says otherwise; returns the member and the event's seq. */
  async addMember(groupId: string, userIdOrName: string, opts: { role?: MemberRole } = {}): Promise<{ member: Member | undefined; seq: bigint }> {
    const user = UUID.test(userIdOrName) ? ({ case: "userId", value: userIdOrName } as const) : ({ case: "username", value: userIdOrName } as const);
    const res = await this.clients.groups.addMember({ groupId, user, role: opts.role ?? MemberRole.MEMBER });
    return { member: res.member, seq: res.seq };
  }

  /** removeMember removes a member by user id (the user's own id leaves the group); returns the event's seq. */
  async removeMember(groupId: string, userId: string): Promise<bigint> {
    return (await this.clients.groups.removeMember({ groupId, userId })).seq;
  }

  /** listMembers returns all members of a group (every page). */
  async listMembers(groupId: string): Promise<Member[]> {
    const members: Member[] = [];
    let pageToken = "";
    do {
      const res = await this.clients.groups.listMembers({ groupId, pageSize: 1000, pageToken });
      members.push(...res.members);
      pageToken = res.nextPageToken;
    } while (pageToken !== "");
    return members;
  }

  /** markRead moves the user's read marker of a group forward to seq; returns the marker after the call. */
  async markRead(groupId: string, seq: bigint): Promise<bigint> {
    return (await this.clients.groups.markRead({ groupId, seq })).lastReadSeq;
  }

  /** history returns a pager over a group's messages, newest page first (see HistoryPager). */
  history(groupId: string, opts: HistoryOptions = {}): HistoryPager {
    return new HistoryPager(this.clients.messages, groupId, opts);
  }

  /**
   * send stores a message and resolves once it is durable, with its id and seq. It carries a client_message_id
   * (`clientMessageId`, else a fresh UUID) that every retry repeats, so the message is stored once however often it
   * is sent. It goes over the live WebSocket when one is open, else unary; either way an attempt not answered within
   * `callTimeoutMs` fails DEADLINE_EXCEEDED. Retried, up to `sendAttempts` in all: RESOURCE_EXHAUSTED after the
   * server's retry-after (or backoff), UNAVAILABLE, DEADLINE_EXCEEDED, a dropped connection and other transient
   * failures after backoff. Any other status rejects at once.
   */
  async send(groupId: string, text: string, opts: { clientMessageId?: string } = {}): Promise<SendResult> {
    const clientMessageId = opts.clientMessageId ?? randomId();
    const req = create(SendMessageRequestSchema, { groupId, text, clientMessageId });
    for (let attempt = 1; ; attempt++) {
      let res: SendMessageResponse;
      let via: SendResult["via"] = "unary";
      try {
        const overLink = this.live.state === "live" ? this.link.send(req, this.callTimeoutMs) : undefined;
        if (overLink) via = "websocket";
        res = await (overLink ?? this.clients.messages.sendMessage(req));
      } catch (e) {
        const err = ConnectError.from(e);
        if (!SEND_RETRYABLE.has(err.code) || attempt >= this.sendAttempts) throw err;
        await sleep(retryAfterMs(err) ?? backoffDelay(this.backoff, attempt - 1));
        continue;
      }
      if (!res.message) throw new ConnectError("SendMessage answered without the message", Code.Internal);
      const message = toChatMessage(res.message);
      return { messageId: message.messageId, seq: message.seq, duplicate: res.duplicate, clientMessageId, attempts: attempt, via, message, raw: res };
    }
  }
}
