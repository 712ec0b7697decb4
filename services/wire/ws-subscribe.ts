/**
 * StreamService/Subscribe over WebSocket: the cheapest delivery transport
 * (no HTTP/2 session per connection: about a quarter of the memory and less
 * CPU per delivery than the gRPC fast path, see README "Performance"), and
 * the one browsers can hold open natively.
 *
 * The contract (docs/websocket.md):
 * - `GET /chat.v1.StreamService/Subscribe` with `Upgrade: websocket`,
 *   offering the subprotocol `chat.v1.proto`, which the server selects;
 * - the access token in `authorization: Bearer <token>` or, for browsers
 *   (which cannot set headers), as a second offered subprotocol
 *   `bearer.<token>`; the server never echoes it. It is verified before the
 *   upgrade: without a valid token the handshake is refused with HTTP 401
 *   and a text body. A token that expires (or whose session is revoked)
 *   after the upgrade ends the stream with close code 4016;
 * - the client sends one binary message, a SubscribeRequest; the server
 *   sends binary messages, each one SubscribeResponse, in the same order and
 *   with the same guarantees as the gRPC stream;
 * - the server ends the stream with a close frame whose code is 4000 + the
 *   gRPC status code (4008 RESOURCE_EXHAUSTED, 4014 UNAVAILABLE, 4016
 *   UNAUTHENTICATED, ...) and whose reason is the status message.
 */
import type http from "node:http";
import type net from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { type WebSocket, WebSocketServer } from "ws";
import { ChatError } from "../core/errors.js";
import type { Principal } from "../core/principal.js";
import { openStream } from "../delivery/open-stream.js";
import type { OutboundItem, StreamSink } from "../delivery/outbound.js";
import type { StreamHandle } from "../delivery/stream-hub.js";
import { streamOpenRequestBytes } from "../delivery/stream-limits.js";
import { verifyBearer } from "../rpc/bearer.js";
import { type CallLine, logCallEnd } from "../rpc/call-log.js";
import { toConnectError } from "../rpc/errors.js";
import { type FastPathDeps, SUBSCRIBE_PATH, SUBSCRIBE_RPC } from "./framed-subscribe.js";
import { DrainWait, type Flushable, queueFlush } from "./framing.js";
import { refuseSocket } from "./refuse-socket.js";

/** WS_SUBPROTOCOL is the subprotocol a client must offer: binary protobuf messages of chat.v1. */
export const WS_SUBPROTOCOL = "chat.v1.proto";
/** WS_BEARER_PREFIX starts the subprotocol that carries an access token (browsers cannot set headers). */
export const WS_BEARER_PREFIX = "bearer.";
/** WS_CLOSE_BASE + a gRPC status code is the close code that ends a stream with that status. */
export const WS_CLOSE_BASE = 4000;

/** LINE is what the log lines of this transport say (call-log.ts). */
const LINE: CallLine = { rpc: SUBSCRIBE_RPC, transport: "websocket" };

/** REQUEST_TIMEOUT_MS is how long a connection may stay open without sending its SubscribeRequest. */
const REQUEST_TIMEOUT_MS = 10_000;
/** END_GRACE_MS is how long a stream ended with an error may take to drain before its socket is dropped. */
const END_GRACE_MS = 10_000;
/** A close reason is at most 123 bytes (RFC 6455 section 5.5: control frames carry at most 125). */
const MAX_REASON_BYTES = 123;

/** WsSubscribeServer answers WebSocket upgrades for Subscribe on an HTTP/1.1 server's `upgrade` event. */
export interface WsSubscribeServer {
  /** handleUpgrade serves one upgrade request; anything but a well-formed Subscribe upgrade gets an HTTP error and a closed socket. */
  handleUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void;
}

/** wsSubscribeServer makes the WebSocket endpoint of Subscribe over the hub of `deps`. */
export function wsSubscribeServer(deps: FastPathDeps): WsSubscribeServer {
  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false, // the hub and the one-port server track streams and sockets
    perMessageDeflate: false, // compression would cost more than the small messages save, and a copy per recipient
    maxPayload: streamOpenRequestBytes(deps.maxRequestBytes), // the one message is a SubscribeRequest: MAX_CURSORS fit
    handleProtocols: (offered) => (offered.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false),
  });
  return {
    handleUpgrade(req, socket, head) {
      const path = req.url?.split("?")[0];
      if (path !== SUBSCRIBE_PATH) return refuseSocket(socket, 404, `no WebSocket endpoint at this path; Subscribe is at ${SUBSCRIBE_PATH}`);
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
          wss.handleUpgrade(req, socket, head, (ws) => serve(ws, socket, principal, deps));
        },
        (e: unknown) => {
          if (socket.destroyed) return;
          if (e instanceof ChatError && e.kind === "Unauthenticated") return refuseSocket(socket, 401, e.message);
          logCallEnd(deps.logger, LINE, new ConnectError("could not check the access token", Code.Internal, undefined, undefined, e));
          refuseSocket(socket, 503, "could not check the access token; retry");
        },
      );
    },
  };
}

/** serve runs one upgraded connection whose token verified: one SubscribeRequest, then the hub's stream. */
function serve(ws: WebSocket, socket: net.Socket, caller: Principal, deps: FastPathDeps): void {
  const sink = new WebSocketSink(ws, socket);
  let handle: StreamHandle | undefined;
  let requested = false;
  const fail = (e: unknown) => {
    if (sink.isEnded) return;
    const err = toConnectError(e);
    logCallEnd(deps.logger, { ...LINE, userId: caller.userId }, err);
    sink.finish(err);
    // The hub forgets the stream now, not when the client has taken the close frame.
    handle?.close();
  };
  const timer = setTimeout(() => fail(new ChatError("InvalidArgument", `send one SubscribeRequest within ${REQUEST_TIMEOUT_MS / 1000} s of connecting`)), REQUEST_TIMEOUT_MS);
  timer.unref();
  ws.on("error", () => {}); // a protocol error closes the socket; the close below tidies up
  ws.once("close", () => {
    clearTimeout(timer);
    sink.closed();
    handle?.close();
  });
  ws.on("message", (data, isBinary) => {
    if (sink.isEnded) return;
    if (requested) return fail(new ChatError("InvalidArgument", "Subscribe takes one SubscribeRequest; send nothing after it"));
    requested = true;
    clearTimeout(timer);
    if (!isBinary) return fail(new ChatError("InvalidArgument", "send the SubscribeRequest as a binary message (protobuf)"));
    openStream({ hub: deps.hub, principal: caller, request: data as Buffer, sink, gone: () => sink.isEnded }).then((opened) => {
      handle = opened;
    }, fail);
  });
}

/**
 * WebSocketSink is the hub's StreamSink for one WebSocket: each item is one
 * binary message holding the item's SubscribeResponse bytes. As on the gRPC
 * fast path, the frame is built once per event (OutboundItem.wsFrame: server
 * frames are not masked, so every recipient gets the same bytes) and written
 * to the socket as is; ws does the handshake, reads the client's frames and
 * answers pings, and writes the close frame, after which nothing more is
 * written here (writes happen only while the socket is OPEN, each one whole
 * and synchronous, so they never split one of ws's frames). Like
 * FrameWriter, the items of one callback are written together: the socket
 * is corked around them, so they leave in one write. Its buffer is the
 * socket's write buffer plus what ws and this sink hold.
 */
class WebSocketSink implements StreamSink, Flushable {
  private queued: OutboundItem | OutboundItem[] | undefined;
  private queuedBytes = 0;
  private ended = false;
  private readonly drain = new DrainWait();

  constructor(
    private readonly ws: WebSocket,
    private readonly socket: net.Socket,
  ) {}

  /** Once the stream has ended or its socket is gone nothing more is written, so nothing is waited for: 0. */
  get bufferedBytes(): number {
    if (this.ended || this.socket.destroyed) return 0;
    return this.ws.bufferedAmount + this.queuedBytes;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  write(item: OutboundItem): void {
    if (this.ended) return;
    const queued = this.queued;
    if (queued === undefined) {
      this.queued = item;
      queueFlush(this);
    } else if (Array.isArray(queued)) {
      queued.push(item);
    } else {
      this.queued = [queued, item];
    }
    this.queuedBytes += item.bytes.length;
  }

  flush(): void {
    const queued = this.queued;
    if (queued === undefined) return;
    this.queued = undefined;
    this.queuedBytes = 0;
    const socket = this.socket;
    if (this.ws.readyState !== 1 /* OPEN */ || !socket.writable) return;
    if (!Array.isArray(queued)) {
      socket.write(queued.wsFrame);
      return;
    }
    socket.cork();
    try {
      for (const item of queued) socket.write(item.wsFrame);
    } finally {
      socket.uncork();
    }
  }

  abort(): void {
    this.queued = undefined;
    this.queuedBytes = 0;
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
    this.queued = undefined;
    this.queuedBytes = 0;
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
