/**
 * What the WebSocket endpoints of StreamService share (docs/websocket.md):
 * the handshake (path, subprotocol `chat.v1.proto`, the bearer token checked
 * before the upgrade), the hub's sink for one socket (WebSocketSink), the
 * close codes (4000 + gRPC status, the status message as reason) and the
 * life of one call (WsStreamCall: the first-message deadline, failing with a
 * logged status, tidying up when the socket closes). Subscribe
 * (ws-subscribe.ts) and Connect (ws-connect.ts) add only what their
 * messages mean.
 */
import type http from "node:http";
import type net from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { type WebSocket, WebSocketServer } from "ws";
import { ChatError } from "../core/errors.js";
import type { Principal } from "../core/principal.js";
import type { OutboundItem, StreamSink } from "../delivery/outbound.js";
import { streamOpenRequestBytes } from "../delivery/stream-limits.js";
import { verifyBearer } from "../rpc/bearer.js";
import { type CallLine, logCallEnd } from "../rpc/call-log.js";
import { toConnectError } from "../rpc/errors.js";
import type { FastPathDeps } from "./framed-subscribe.js";
import { CallbackFrames, DrainWait, type Flushable } from "./framing.js";
import { refuseSocket } from "./refuse-socket.js";

/** WS_SUBPROTOCOL is the subprotocol a client must offer: binary protobuf messages of chat.v1. */
export const WS_SUBPROTOCOL = "chat.v1.proto";
/** WS_BEARER_PREFIX starts the subprotocol that carries an access token (browsers cannot set headers). */
export const WS_BEARER_PREFIX = "bearer.";
/** WS_CLOSE_BASE + a gRPC status code is the close code that ends a stream with that status. */
export const WS_CLOSE_BASE = 4000;

/** REQUEST_TIMEOUT_MS is how long a connection may stay open without sending its first message. */
const REQUEST_TIMEOUT_MS = 10_000;
/** END_GRACE_MS is how long a stream ended with an error may take to drain before its socket is dropped. */
const END_GRACE_MS = 10_000;
/** A close reason is at most 123 bytes (RFC 6455 section 5.5: control frames carry at most 125). */
const MAX_REASON_BYTES = 123;

/** WsEndpoint serves one path: `serve` runs each upgraded connection whose token verified. */
export interface WsEndpoint {
  /** rpc is the method as "package.Service/Method" (log lines). */
  readonly rpc: string;
  serve(ws: WebSocket, socket: net.Socket, caller: Principal): void;
}

/** WsUpgradeServer answers WebSocket upgrades on an HTTP/1.1 server's `upgrade` event. */
export interface WsUpgradeServer {
  /** handleUpgrade serves one upgrade request; anything but a well-formed upgrade to one of the endpoints gets an HTTP error and a closed socket. */
  handleUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void;
}

/**
 * wsUpgradeServer makes the WebSocket server of `endpoints` (keyed by path).
 * Every endpoint gets the same handshake: an unknown path is refused with
 * 404, a handshake that does not offer `chat.v1.proto` with 400, one
 * without a valid token with 401 (503 if the token could not be checked),
 * all before the upgrade. A message may be as large as a stream's opening
 * request (streamOpenRequestBytes); larger ones close the socket with 1009.
 */
export function wsUpgradeServer(deps: FastPathDeps, endpoints: ReadonlyMap<string, WsEndpoint>): WsUpgradeServer {
  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false, // the hub and the one-port server track streams and sockets
    perMessageDeflate: false, // compression would cost more than the small messages save, and a copy per recipient
    maxPayload: streamOpenRequestBytes(deps.maxRequestBytes), // the opening SubscribeRequest: MAX_CURSORS fit
    handleProtocols: (offered) => (offered.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false),
  });
  const paths = [...endpoints.keys()].join(" and ");
  return {
    handleUpgrade(req, socket, head) {
      const path = req.url?.split("?")[0] ?? "";
      const endpoint = endpoints.get(path);
      if (!endpoint) return refuseSocket(socket, 404, `no WebSocket endpoint at this path; the streams are at ${paths}`);
      const protocols = offeredProtocols(req);
      if (!protocols.includes(WS_SUBPROTOCOL)) {
        return refuseSocket(socket, 400, `offer the WebSocket subprotocol ${WS_SUBPROTOCOL} (binary protobuf messages)`);
      }
      const authorization = req.headers.authorization ?? bearerFromProtocols(protocols);
      // The token is checked before the upgrade: an unauthenticated client gets a 401 and never a WebSocket, so it
      // cannot make the server hold a connection that accepts a message as large as the opening request (maxPayload).
      verifyBearer(deps.tokens, deps.clock, authorization).then(
        (principal) => {
          if (socket.destroyed) return;
          wss.handleUpgrade(req, socket, head, (ws) => endpoint.serve(ws, socket, principal));
        },
        (e: unknown) => {
          if (socket.destroyed) return;
          if (e instanceof ChatError && e.kind === "Unauthenticated") return refuseSocket(socket, 401, e.message);
          const line: CallLine = { rpc: endpoint.rpc, transport: "websocket" };
          logCallEnd(deps.logger, line, new ConnectError("could not check the access token", Code.Internal, undefined, undefined, e));
          refuseSocket(socket, 503, "could not check the access token; retry");
        },
      );
    },
  };
}

/** WsCallOptions describe one kind of WebSocket stream call. */
export interface WsCallOptions {
  /** rpc is the method as "package.Service/Method" (log lines). */
  readonly rpc: string;
  /** frameOf picks the shared WebSocket frame to write for a hub item. */
  readonly frameOf: (item: OutboundItem) => Buffer;
  /** firstMessage names what the client must send first, for the timeout's message (e.g. "SubscribeRequest"). */
  readonly firstMessage: string;
  /** onMessage takes each message the client sends while the call is live (none after it failed or ended). */
  readonly onMessage: (data: Buffer, isBinary: boolean) => void;
  /** onClose runs once when the connection is gone (after the call failed, or the client left). */
  readonly onClose: () => void;
}

/**
 * WsStreamCall is one upgraded connection of a stream RPC: its sink, the
 * deadline for the client's first message (10 s from the upgrade), and how
 * it fails (`fail`: the status is logged and sent as the close code, then
 * `onClose` tells the hub). The client's messages reach `onMessage` only
 * while the call is live.
 */
export class WsStreamCall {
  readonly sink: WebSocketSink;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly ws: WebSocket,
    socket: net.Socket,
    readonly caller: Principal,
    private readonly deps: FastPathDeps,
    private readonly options: WsCallOptions,
  ) {
    this.sink = new WebSocketSink(ws, socket, options.frameOf);
    this.timer = setTimeout(
      () => this.fail(new ChatError("InvalidArgument", `send one ${options.firstMessage} within ${REQUEST_TIMEOUT_MS / 1000} s of connecting`)),
      REQUEST_TIMEOUT_MS,
    );
    this.timer.unref();
    ws.on("error", () => {}); // a protocol error closes the socket; the close below tidies up
    ws.once("close", () => {
      clearTimeout(this.timer);
      this.sink.closed();
      options.onClose();
    });
    ws.on("message", (data, isBinary) => {
      if (this.sink.isEnded) return;
      clearTimeout(this.timer);
      options.onMessage(data as Buffer, isBinary);
    });
  }

  /** fail ends the call with the status of `e` (logged) as its close code; only the first call counts. */
  fail(e: unknown): void {
    if (this.sink.isEnded) return;
    const err = toConnectError(e);
    logCallEnd(this.deps.logger, { rpc: this.options.rpc, transport: "websocket", userId: this.caller.userId }, err);
    this.sink.finish(err);
    // The hub forgets the stream now, not when the client has taken the close frame.
    this.options.onClose();
  }
}

/**
 * WebSocketSink is the hub's StreamSink for one WebSocket: each item is one
 * binary message. As on the gRPC fast path, the frame is built once per
 * event (`frameOf` picks a shared one, e.g. OutboundItem.wsFrame: server
 * frames are not masked, so every recipient gets the same bytes) and written
 * to the socket as is; ws does the handshake, reads the client's frames and
 * answers pings, and writes the close frame, after which nothing more is
 * written here (writes happen only while the socket is OPEN, each one whole
 * and synchronous, so they never split one of ws's frames). Like
 * FrameWriter, the frames of one callback are written together: the socket
 * is corked around them, so they leave in one write. Its buffer is the
 * socket's write buffer plus what ws and this sink hold, replies
 * (`writeFrame`) included.
 */
export class WebSocketSink implements StreamSink, Flushable {
  private readonly pending = new CallbackFrames(this);
  private ended = false;
  private readonly drain = new DrainWait();

  constructor(
    private readonly ws: WebSocket,
    private readonly socket: net.Socket,
    private readonly frameOf: (item: OutboundItem) => Buffer,
  ) {}

  /** Once the stream has ended or its socket is gone nothing more is written, so nothing is waited for: 0. */
  get bufferedBytes(): number {
    if (this.ended || this.socket.destroyed) return 0;
    return this.ws.bufferedAmount + this.pending.bytes;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  write(item: OutboundItem): void {
    if (this.ended) return;
    this.writeFrame(this.frameOf(item));
  }

  /** writeFrame queues one whole WebSocket frame (e.g. a reply), after what is queued; ignored after end. */
  writeFrame(frame: Buffer): void {
    if (this.ended) return;
    this.pending.add(frame);
  }

  flush(): void {
    const queued = this.pending.take();
    if (queued === undefined) return;
    const socket = this.socket;
    if (this.ws.readyState !== 1 /* OPEN */ || !socket.writable) return;
    if (!Array.isArray(queued)) {
      socket.write(queued);
      return;
    }
    socket.cork();
    try {
      for (const frame of queued) socket.write(frame);
    } finally {
      socket.uncork();
    }
  }

  abort(): void {
    this.pending.take();
    this.ended = true;
    this.ws.terminate();
  }

  /** drained resolves at once when nothing is buffered, else once the socket has taken the buffer (see DrainWait). */
  drained(): Promise<void> {
    this.flush();
    if (this.bufferedBytes === 0) return Promise.resolve();
    return this.drain.wait(this.socket, this.socket.writableNeedDrain);
  }

  /**
   * end sends what is queued, then a close frame: 1000 without an error,
   * else 4000 + the status code with the status message. A stream ended with
   * an error is dropped if its client has not taken the close within 10 s,
   * so a client that stopped reading does not pin its buffer.
   */
  end(error?: ChatError): void {
    this.finish(error ? toConnectError(error) : undefined);
  }

  /** finish ends the stream with a status (normal closure without an error). */
  finish(error: ConnectError | undefined): void {
    if (this.ended) return;
    this.flush();
    this.ended = true;
    if (this.ws.readyState !== 1 /* OPEN */) return;
    if (!error) {
      this.ws.close(1000);
      return;
    }
    this.ws.close(WS_CLOSE_BASE + error.code, closeReason(error.rawMessage));
    const timer = setTimeout(() => this.ws.terminate(), END_GRACE_MS);
    timer.unref();
    this.ws.once("close", () => clearTimeout(timer));
  }

  /** closed notes that the connection is gone: nothing more is written. */
  closed(): void {
    this.ended = true;
    this.pending.take();
  }
}

/** closeReason is the status message cut to fit a close frame, on a character boundary. */
export function closeReason(message: string): string {
  if (Buffer.byteLength(message) <= MAX_REASON_BYTES) return message;
  let out = "";
  let bytes = 0;
  for (const ch of message) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > MAX_REASON_BYTES - 3) break;
    out += ch;
    bytes += n;
  }
  return `${out}...`;
}

function offeredProtocols(req: http.IncomingMessage): string[] {
  const header = req.headers["sec-websocket-protocol"];
  return header ? header.split(",").map((p) => p.trim()) : [];
}

/** bearerFromProtocols turns an offered `bearer.<token>` subprotocol into an authorization header value. */
function bearerFromProtocols(protocols: readonly string[]): string | undefined {
  const offered = protocols.find((p) => p.startsWith(WS_BEARER_PREFIX));
  return offered ? `Bearer ${offered.slice(WS_BEARER_PREFIX.length)}` : undefined;
}
