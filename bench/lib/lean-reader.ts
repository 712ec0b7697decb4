/**
 * The lean Subscribe reader: a gRPC client of StreamService/Subscribe over
 * bare `node:http2`, cheap enough to hold thousands of live streams per load
 * generator process. It sends one framed SubscribeRequest, cuts the
 * response into length-prefixed frames and decodes each with the
 * hand-written decoder of wire-lite.ts (validated against grpc-js in
 * bench/lean-reader.spec.ts).
 */
import http2 from "node:http2";
import WebSocket from "ws";
import { LeanItem, decodeSubscribeResponse, encodeSubscribeRequest, grpcFrame, type CursorInit } from "./wire-lite.js";

/** SUBSCRIBE_PATH is the gRPC path of StreamService/Subscribe. */
export const SUBSCRIBE_PATH = "/chat.v1.StreamService/Subscribe";

/**
 * FrameParser cuts a byte stream into gRPC frames. It calls `onFrame(buf,
 * start, end)` for each complete frame's payload; a frame split across
 * chunks is reassembled, whole frames inside a chunk are passed in place
 * (no copy).
 */
export class FrameParser {
  private pending: Buffer | undefined;

  constructor(
    private readonly onFrame: (buf: Buffer, start: number, end: number) => void,
    private readonly maxBytes = 16 << 20,
  ) {}

  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = undefined;
    }
    let off = 0;
    const n = buf.length;
    while (n - off >= 5) {
      const flags = buf[off] as number;
      const len = buf.readUInt32BE(off + 1);
      if (flags & 0x01) throw new Error("compressed gRPC frame: not supported by the lean reader");
      if (len > this.maxBytes) throw new Error(`gRPC frame of ${len} bytes exceeds ${this.maxBytes}`);
      if (n - off - 5 < len) break;
      this.onFrame(buf, off + 5, off + 5 + len);
      off += 5 + len;
    }
    if (off < n) this.pending = buf.subarray(off);
  }

  /** leftover is the number of buffered bytes of an incomplete frame. */
  get leftover(): number {
    return this.pending?.length ?? 0;
  }
}

/** StreamEnd describes how a Subscribe stream ended. */
export interface StreamEnd {
  /** gRPC status code (from trailers, or trailers-only headers); -1 when the stream broke without one. */
  code: number;
  message: string;
  /** A transport error, when there was one. */
  error?: Error;
}

/** LeanSubscribeOptions configure one lean Subscribe call. */
export interface LeanSubscribeOptions {
  /** An open HTTP/2 session to the server (one per stream, as separate clients would have, or shared). */
  session: http2.ClientHttp2Session;
  token: string;
  cursors?: readonly CursorInit[];
  /** onItem gets every decoded item; the LeanItem object is reused, copy what you keep. */
  onItem: (item: LeanItem) => void;
  /** onChunk is called once per received DATA chunk, before its items (e.g. to read the clock once per chunk). */
  onChunk?: () => void;
  /** onEnd is called exactly once when the stream is over. */
  onEnd: (end: StreamEnd) => void;
}

/** LeanStream is an open lean Subscribe call. */
export interface LeanStream {
  /** close cancels the call (RST_STREAM CANCEL); onEnd still fires. */
  close(): void;
}

/** leanSubscribe opens StreamService/Subscribe on `session` and feeds decoded items to `onItem`. */
export function leanSubscribe(opts: LeanSubscribeOptions): LeanStream {
  const req = opts.session.request({
    ":method": "POST",
    ":path": SUBSCRIBE_PATH,
    "content-type": "application/grpc",
    te: "trailers",
    authorization: `Bearer ${opts.token}`,
  });
  let ended = false;
  let status: number | undefined;
  let statusMessage = "";
  const finish = (end: StreamEnd) => {
    if (ended) return;
    ended = true;
    opts.onEnd(end);
  };
  const item = new LeanItem();
  const parser = new FrameParser((buf, start, end) => {
    opts.onItem(decodeSubscribeResponse(buf, start, end, item));
  });
  const readStatus = (headers: http2.IncomingHttpHeaders) => {
    const s = headers["grpc-status"];
    if (s !== undefined) {
      status = Number(s);
      const m = headers["grpc-message"];
      statusMessage = typeof m === "string" ? decodeURIComponent(m) : "";
    }
  };
  req.on("response", (headers) => {
    const httpStatus = headers[":status"];
    if (httpStatus !== 200) {
      status = status ?? 2;
      statusMessage = `HTTP ${String(httpStatus)}`;
    }
    readStatus(headers);
  });
  req.on("trailers", readStatus);
  req.on("data", (chunk: Buffer) => {
    if (ended) return;
    try {
      opts.onChunk?.();
      parser.push(chunk);
    } catch (e) {
      req.close(http2.constants.NGHTTP2_CANCEL);
      finish({ code: -1, message: "protocol error", error: e instanceof Error ? e : new Error(String(e)) });
    }
  });
  req.on("error", (err: Error) => finish({ code: status ?? -1, message: statusMessage || err.message, error: err }));
  req.on("close", () => finish({ code: status ?? -1, message: statusMessage || "stream closed without a status" }));
  req.end(grpcFrame(encodeSubscribeRequest(opts.cursors ?? [])));
  return {
    close: () => {
      if (!req.closed && !req.destroyed) req.close(http2.constants.NGHTTP2_CANCEL);
    },
  };
}

/** connectSession opens an HTTP/2 (h2c, prior knowledge) session to `url` and resolves once it is connected. */
export function connectSession(url: string, options: http2.ClientSessionOptions = {}): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, options);
    const onError = (err: Error) => {
      session.destroy();
      reject(err);
    };
    session.once("error", onError);
    session.once("connect", () => {
      session.off("error", onError);
      // A later session error surfaces on its streams; keep the process alive.
      session.on("error", () => {});
      resolve(session);
    });
  });
}

/** LeanWsSubscribeOptions configure one lean Subscribe over WebSocket. */
export interface LeanWsSubscribeOptions extends Omit<LeanSubscribeOptions, "session"> {
  /** The server's base URL (http://host:port); the stream is ws://host:port/chat.v1.StreamService/Subscribe. */
  url: string;
}

/**
 * leanWsSubscribe opens Subscribe over WebSocket (docs/websocket.md): the
 * token in the authorization header, one binary SubscribeRequest, then each
 * binary message one SubscribeResponse, decoded in place by the same lean
 * decoder. The end's code is the close code minus 4000 for a status close,
 * 0 for a normal closure, 16 (UNAUTHENTICATED) for a handshake refused with
 * HTTP 401 (a token that is invalid at the upgrade), else -1.
 */
export function leanWsSubscribe(opts: LeanWsSubscribeOptions): LeanStream {
  const ws = new WebSocket(`${opts.url.replace(/^http/, "ws")}${SUBSCRIBE_PATH}`, ["chat.v1.proto"], {
    headers: { authorization: `Bearer ${opts.token}` },
    perMessageDeflate: false,
  });
  let ended = false;
  const finish = (end: StreamEnd) => {
    if (ended) return;
    ended = true;
    opts.onEnd(end);
  };
  const item = new LeanItem();
  ws.on("open", () => ws.send(encodeSubscribeRequest(opts.cursors ?? [])));
  ws.on("message", (data: Buffer) => {
    if (ended) return;
    try {
      opts.onChunk?.();
      opts.onItem(decodeSubscribeResponse(data, 0, data.length, item));
    } catch (e) {
      ws.terminate();
      finish({ code: -1, message: "protocol error", error: e instanceof Error ? e : new Error(String(e)) });
    }
  });
  ws.on("unexpected-response", (_req, res) => {
    const status = res.statusCode ?? 0;
    res.resume();
    ws.terminate();
    finish({ code: status === 401 ? 16 : -1, message: `handshake refused with HTTP ${status}` });
  });
  ws.on("error", (err: Error) => finish({ code: -1, message: err.message, error: err }));
  ws.on("close", (code: number, reason: Buffer) => {
    const status = code >= 4000 && code < 4100 ? code - 4000 : code === 1000 ? 0 : -1;
    finish({ code: status, message: reason.toString() || `closed with ${code}` });
  });
  return {
    close: () => ws.close(1000),
  };
}
