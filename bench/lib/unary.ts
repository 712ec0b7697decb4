/**
 * A cheap gRPC unary client over bare `node:http2`: a pool of sessions, one
 * framed request per call, the response payload and grpc-status back. Used
 * by the load generators for SendMessage and ListMessages (connect-node's
 * client machinery would cost more CPU than the server's handler).
 */
import http2 from "node:http2";
import { grpcFrame } from "./wire-lite.js";

/** UnaryResult is the outcome of one call. */
export interface UnaryResult {
  /** gRPC status code; -1 for a transport failure, 4 (DEADLINE_EXCEEDED) when the client gave up. */
  code: number;
  message: string;
  /** The response message (without its frame header), when the call succeeded. */
  payload: Buffer | undefined;
}

/** UnaryPool spreads calls round-robin over `size` HTTP/2 sessions to each of one or more servers. */
export class UnaryPool {
  private readonly sessions: (http2.ClientHttp2Session | undefined)[];
  private readonly urls: string[];
  private next = 0;
  private closed = false;
  /** Calls in flight. */
  inFlight = 0;

  constructor(urls: string | readonly string[], size: number) {
    const list = typeof urls === "string" ? [urls] : [...urls];
    if (list.length === 0) throw new Error("UnaryPool needs a server URL");
    // Session i talks to urls[i % urls.length].
    this.urls = list;
    this.sessions = new Array(Math.max(1, size) * list.length).fill(undefined);
  }

  private session(): http2.ClientHttp2Session {
    const i = this.next++ % this.sessions.length;
    let s = this.sessions[i];
    if (!s || s.closed || s.destroyed) {
      s = http2.connect(this.urls[i % this.urls.length] as string);
      s.on("error", () => {});
      // Unused sessions do not keep the process alive.
      s.unref();
      this.sessions[i] = s;
    }
    return s;
  }

  /** call sends one request and calls `done` exactly once. */
  call(path: string, token: string, request: Uint8Array, timeoutMs: number, done: (r: UnaryResult) => void): void {
    if (this.closed) {
      done({ code: 1, message: "pool closed", payload: undefined });
      return;
    }
    let finished = false;
    let status: number | undefined;
    let statusMessage = "";
    const chunks: Buffer[] = [];
    this.inFlight++;
    const finish = (r: UnaryResult) => {
      if (finished) return;
      finished = true;
      this.inFlight--;
      clearTimeout(timer);
      done(r);
    };
    let req: http2.ClientHttp2Stream;
    try {
      req = this.session().request({
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        authorization: `Bearer ${token}`,
        "grpc-timeout": `${timeoutMs}m`,
      });
    } catch (e) {
      finish({ code: -1, message: e instanceof Error ? e.message : String(e), payload: undefined });
      return;
    }
    const timer = setTimeout(() => {
      req.close(http2.constants.NGHTTP2_CANCEL);
      finish({ code: 4, message: "client deadline", payload: undefined });
    }, timeoutMs + 1000);
    const readStatus = (h: http2.IncomingHttpHeaders) => {
      const s = h["grpc-status"];
      if (s !== undefined) {
        status = Number(s);
        const m = h["grpc-message"];
        statusMessage = typeof m === "string" ? decodeURIComponent(m) : "";
      }
    };
    req.on("response", (h) => {
      if (h[":status"] !== 200) {
        status ??= 2;
        statusMessage = `HTTP ${String(h[":status"])}`;
      }
      readStatus(h);
    });
    req.on("trailers", readStatus);
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", (err: Error) => finish({ code: status ?? -1, message: statusMessage || err.message, payload: undefined }));
    req.on("close", () => {
      if (status === undefined) {
        finish({ code: -1, message: "stream closed without a status", payload: undefined });
        return;
      }
      if (status !== 0) {
        finish({ code: status, message: statusMessage, payload: undefined });
        return;
      }
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
      if (body.length < 5) {
        finish({ code: -1, message: "no response message", payload: undefined });
        return;
      }
      const len = body.readUInt32BE(1);
      finish({ code: 0, message: "", payload: body.subarray(5, 5 + len) });
    });
    req.end(grpcFrame(request));
  }

  /** callAsync is `call` as a promise. */
  callAsync(path: string, token: string, request: Uint8Array, timeoutMs = 30_000): Promise<UnaryResult> {
    return new Promise((resolve) => this.call(path, token, request, timeoutMs, resolve));
  }

  close(): void {
    this.closed = true;
    for (const s of this.sessions) s?.close();
  }
}

/** SEND_PATH and LIST_PATH are the MessageService methods the generators call. */
export const SEND_PATH = "/chat.v1.MessageService/SendMessage";
export const LIST_PATH = "/chat.v1.MessageService/ListMessages";
