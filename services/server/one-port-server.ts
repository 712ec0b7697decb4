import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import type { Logger } from "../core/logger.js";
import { refuseSocket } from "../wire/refuse-socket.js";

/** RequestHandler serves both HTTP/1.1 and HTTP/2 (compat API) requests. */
export type RequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/** OnePortServer is a listening server; `close` drains it. */
export interface OnePortServer {
  /** The port actually bound (useful with port 0). */
  readonly port: number;
  /**
   * close stops accepting connections, asks HTTP/2 clients to go away
   * (GOAWAY) and lets in-flight requests finish for up to `graceMs`, then
   * destroys whatever is left. Resolves when every socket is closed.
   */
  close(graceMs: number): Promise<void>;
  /** connections is the number of open client sockets. */
  readonly connections: number;
}

/** H1_REQUEST_TIMEOUT_MARGIN_MS is how much longer than the body deadline an HTTP/1.1 request may take in all (Node's requestTimeout). */
const H1_REQUEST_TIMEOUT_MARGIN_MS = 5000;

/** UNREAD_BODY_GRACE_MS is how long a client may keep sending a request body after the response is complete. */
const UNREAD_BODY_GRACE_MS = 1000;

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** FIRST_BYTES_TIMEOUT_MS is how long a new connection may take to show what it speaks: the sniffed first bytes, or the TLS handshake. */
const FIRST_BYTES_TIMEOUT_MS = 10_000;

/** ALPN_PROTOCOLS are offered on TLS in the server's order of preference (RFC 7301): HTTP/2 when the client speaks it. */
const ALPN_PROTOCOLS = ["h2", "http/1.1"];

/** TlsOptions are the port's certificate chain and private key (PEM), as tls.createSecureContext takes them. */
export interface TlsOptions {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

/**
 * listenOnePort serves gRPC (HTTP/2 cleartext, "h2c" with prior knowledge)
 * and gRPC-Web / Connect / plain HTTP (HTTP/1.1) on one TCP port: it reads
 * the first bytes of each connection and hands the socket to an HTTP/2
 * server if they are the HTTP/2 client preface, else to an HTTP/1.1 server
 * (which answers garbage with 400 and closes).
 *
 * With `tls`, the port speaks TLS instead and ALPN does the sniffing: a
 * connection that negotiated `h2` goes to the same HTTP/2 server, one that
 * negotiated `http/1.1` or no protocol at all to the same HTTP/1.1 server,
 * so both paths keep every bound, the WebSocket upgrades and the graceful
 * close. A client that does not complete a handshake (one speaking
 * cleartext fails at its first bytes) is disconnected; it never reaches an
 * HTTP server.
 */
export async function listenOnePort(opts: {
  host: string;
  port: number;
  handler: RequestHandler;
  /**
   * onWebSocket takes HTTP/1.1 requests to upgrade to WebSocket; it owns the
   * socket from then on. Other upgrades (e.g. `Upgrade: h2c` from curl
   * --http2) are served as plain HTTP/1.1 requests, as Node does when nobody
   * listens for upgrades.
   */
  onWebSocket?: (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => void;
  logger: Logger;
  /** maxStreamsPerConnection caps concurrent HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS; default 100). */
  maxStreamsPerConnection?: number;
  /**
   * requestBodyTimeoutMs is the front door's body deadline (default 10 s);
   * HTTP/1.1 requests get it for their headers, and it plus a margin for the
   * whole request, as a backstop for paths the front door does not read.
   */
  requestBodyTimeoutMs?: number;
  /**
   * sessionIdleTimeoutMs closes (GOAWAY, NO_ERROR) an HTTP/2 connection that
   * has had no open stream for this long (default: never). A connection with
   * a stream open (a Subscribe, a Watch) is never idle, however quiet.
   */
  sessionIdleTimeoutMs?: number;
  /** tls serves the port over TLS with ALPN `h2` and `http/1.1` (default: cleartext). */
  tls?: TlsOptions;
}): Promise<OnePortServer> {
  const { handler, logger, onWebSocket } = opts;
  const sockets = new Set<net.Socket>();
  // Each stream may hold its flow-control window (64 KiB) of unread body, so the cap bounds a connection's
  // memory: docs/architecture.md, "Bounds".
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: opts.maxStreamsPerConnection ?? 100 } }, handler);
  const bodyTimeoutMs = opts.requestBodyTimeoutMs ?? 10_000;
  const h1Options: http.ServerOptions = {
    keepAliveTimeout: 65_000,
    headersTimeout: bodyTimeoutMs,
    requestTimeout: bodyTimeoutMs + H1_REQUEST_TIMEOUT_MARGIN_MS,
    // How often Node looks for requests past those timeouts (default 30 s, which would let them run that much longer).
    connectionsCheckingInterval: Math.min(1000, Math.max(100, Math.floor(bodyTimeoutMs / 4))),
  };
  const h1 = http.createServer(h1Options, handler);
  // A Node HTTP server with an "upgrade" listener hands it every upgrade request, parsed and detached from the
  // server. Non-WebSocket ones are replayed to a second server without the listener, which serves them as usual.
  const h1Plain = onWebSocket ? http.createServer(h1Options, handler) : undefined;
  const h1Servers = h1Plain ? [h1, h1Plain] : [h1];
  if (onWebSocket && h1Plain) {
    h1.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      if (req.headers.upgrade?.toLowerCase() === "websocket") onWebSocket(req, socket, head);
      else replayRequest(req, socket, head, h1Plain);
    });
  }
  h2.on("sessionError", (err) => logger.debug({ err }, "http2 session error"));
  for (const server of h1Servers) {
    server.on("clientError", (err, socket) => {
      logger.debug({ err: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, "bad HTTP/1.1 request");
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
      socket.destroy();
    });
  }

  // Counts every TCP connection (with TLS, handshakes in progress too); destroying one ends whatever runs on it.
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
  };
  let tcp: net.Server;
  if (opts.tls) {
    // A tls.Server whose secure sockets go to the cleartext path's own servers, as https.Server is a tls.Server with
    // the HTTP/1.1 connection listener. Node's http2.createSecureServer({ allowHTTP1 }) would serve HTTP/1.1 from
    // the HTTP/2 server object instead: a second set of HTTP/1.1 timeouts, upgrade handling and close to keep in step.
    const secure = tls.createServer({
      cert: opts.tls.cert,
      key: opts.tls.key,
      ALPNProtocols: ALPN_PROTOCOLS,
      // HTTP/2 over TLS needs TLS 1.2 or later (RFC 9113 section 9.2); Node's default, unless a flag lowers it.
      minVersion: "TLSv1.2",
      handshakeTimeout: FIRST_BYTES_TIMEOUT_MS,
      noDelay: true,
    });
    secure.on("connection", track);
    secure.on("secureConnection", (socket: tls.TLSSocket) => {
      socket.on("error", () => socket.destroy());
      logger.debug({ alpn: socket.alpnProtocol || "none" }, "tls connection");
      (socket.alpnProtocol === "h2" ? h2 : h1).emit("connection", socket);
    });
    // A failed handshake (cleartext on the TLS port, an untrusted certificate, the timeout) costs only its socket.
    secure.on("tlsClientError", (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
      logger.debug({ err: { message: err.message, code: err.code } }, "tls handshake failed");
      socket.destroy();
    });
    tcp = secure;
  } else {
    tcp = net.createServer({ pauseOnConnect: false, noDelay: true }, (socket) => {
      track(socket);
      sniff(socket, (isHttp2) => (isHttp2 ? h2 : h1).emit("connection", socket));
    });
  }

  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(opts.port, opts.host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });
  const address = tcp.address();
  const port = typeof address === "object" && address ? address.port : opts.port;
  // An http.Server tracks its connections (for closeIdleConnections and the
  // headersTimeout / requestTimeout checks) only from its "listening" event
  // on. h1 never listens itself (sockets are handed to it), so start the
  // tracking here; without it, idle keep-alive sockets hold up close() for
  // the whole grace period and slow requests are never timed out.
  for (const server of h1Servers) server.emit("listening");

  // A handler may answer before reading the whole request body (connect-node
  // does for a body over readMaxBytes, and stops reading). The HTTP/1.1
  // server discards the rest by itself; on HTTP/2 the unread body stalls the
  // stream's flow-control window, and the stream stays open until the
  // connection goes away (holding up close()). So once the response is
  // complete, discard what the client still sends, and if its side has not
  // ended soon after, reset the stream with NO_ERROR (RFC 9113 section 8.1).
  // The reset waits, so that the client reads the response first: clients
  // that see the reset while still writing report it instead.
  h2.on("stream", (stream: http2.ServerHttp2Stream) => {
    stream.once("finish", () => {
      if (stream.readableEnded || stream.destroyed) return;
      stream.removeAllListeners("data"); // the request object no longer reads
      stream.resume();
      const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_NO_ERROR), UNREAD_BODY_GRACE_MS);
      timer.unref();
      stream.once("close", () => clearTimeout(timer));
    });
  });

  const sessions = new Set<http2.Http2Session>();
  const idleMs = opts.sessionIdleTimeoutMs;
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (idleMs === undefined) return;
    let open = 0;
    let idle: NodeJS.Timeout | undefined;
    const arm = () => {
      idle = setTimeout(() => session.close(), idleMs);
      idle.unref();
    };
    session.on("stream", (stream: http2.ServerHttp2Stream) => {
      open++;
      clearTimeout(idle);
      stream.once("close", () => {
        if (--open === 0 && !session.closed && !session.destroyed) arm();
      });
    });
    session.once("close", () => clearTimeout(idle));
    arm();
  });

  return {
    port,
    get connections() {
      return sockets.size;
    },
    async close(graceMs: number) {
      tcp.close();
      for (const session of sessions) session.close();
      for (const server of h1Servers) server.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (sockets.size > 0 && Date.now() < deadline) {
        for (const server of h1Servers) server.closeIdleConnections();
        await new Promise((r) => setTimeout(r, 20));
      }
      for (const socket of sockets) socket.destroy();
      h2.close();
      for (const server of h1Servers) server.close();
    },
  };
}

/** MAX_REPLAY_HEADER_ENTRIES is the most raw header entries (names and values) a replayed request may have. */
const MAX_REPLAY_HEADER_ENTRIES = 1900;

/**
 * replayRequest gives an already parsed HTTP/1.1 request back to `server` as
 * if its socket had just connected: the request head is written out again
 * from what was parsed (method, target, version, raw header lines) and put
 * back in front of the bytes that followed it.
 */
function replayRequest(req: http.IncomingMessage, socket: net.Socket, head: Buffer, server: http.Server): void {
  // Node's parser hands over only the first ~2,000 raw header entries (about 1,000 lines; measured on Node 20) and
  // drops the rest: past that, the head written out again would not be the one parsed (a framing header could be
  // missing). Refuse instead.
  if (req.rawHeaders.length >= MAX_REPLAY_HEADER_ENTRIES) return refuseSocket(socket, 431, "too many header lines");
  const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
  socket.unshift(Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1"), head]));
  server.emit("connection", socket);
  socket.resume();
}

/**
 * sniff reads until it can tell whether the connection starts with the
 * HTTP/2 preface, puts the bytes back, and reports. A connection that says
 * nothing for 10 s is closed.
 */
function sniff(socket: net.Socket, route: (isHttp2: boolean) => void): void {
  let seen = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), FIRST_BYTES_TIMEOUT_MS);
  const onData = (chunk: Buffer) => {
    seen = Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, PREFACE.length);
    const isPrefix = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
    if (isPrefix && seen.length < PREFACE.length) return;
    clearTimeout(timer);
    socket.off("data", onData);
    socket.pause();
    socket.unshift(seen);
    // The "close" listener's closure shares this scope, so `seen` (a slice of
    // an 8 KiB Buffer pool slab) would live as long as the connection. Drop
    // it: measured with 4,000 idle h2c streams, -543 B of ArrayBuffers and
    // about -1.1 KB RSS per connection (38.6 -> 37.5 KB, mean of 5 runs).
    seen = Buffer.alloc(0);
    // The HTTP/2 session reads the unshifted bytes itself (on the next tick);
    // the HTTP/1.1 server needs the socket flowing again.
    route(isPrefix);
    if (!isPrefix) socket.resume();
  };
  socket.on("data", onData);
  socket.once("close", () => clearTimeout(timer));
}
