import http2 from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { SubscribeRequestSchema } from "../../gen/chat/v1/stream_service_pb.js";
import type { AccessTokens } from "../auth/access-tokens.js";
import { ChatError } from "../core/errors.js";
import type { Clock } from "../core/ports.js";
import { verifyBearer } from "../platform/bearer.js";
import { toConnectError } from "../platform/errors.js";
import type { Logger } from "../platform/logger.js";
import type { OutboundItem, StreamSink } from "./outbound.js";
import type { StreamHub } from "./stream-hub.js";
import { parseCursors } from "./stream-rpc.js";

/** SUBSCRIBE_PATH is the gRPC path this fast path serves. */
export const SUBSCRIBE_PATH = "/chat.v1.StreamService/Subscribe";

/**
 * isGrpcSubscribe tells whether an HTTP/2 request is a plain gRPC (binary
 * protobuf) call of StreamService/Subscribe, which the fast path serves;
 * everything else (gRPC-Web, Connect, JSON codecs) goes to connect-node.
 */
export function isGrpcSubscribe(req: { url: string; headers: http2.IncomingHttpHeaders; httpVersionMajor: number }): boolean {
  if (req.httpVersionMajor !== 2 || req.url !== SUBSCRIBE_PATH) return false;
  const type = req.headers["content-type"];
  return type === "application/grpc" || type === "application/grpc+proto";
}

/**
 * serveGrpcSubscribe is the delivery fast path: StreamService/Subscribe over
 * gRPC written straight to the HTTP/2 stream. Every event is framed once per
 * process (OutboundItem.grpcFrame) and the same Buffer is written to each
 * recipient, so fan-out costs a write per stream and no encoding. It keeps
 * the same semantics as the connect-node handler (auth, validation, status
 * codes); StreamSink's buffer cap applies to the HTTP/2 stream's own write
 * buffer.
 */
export function serveGrpcSubscribe(
  req: http2.Http2ServerRequest,
  res: http2.Http2ServerResponse,
  deps: { hub: StreamHub; tokens: AccessTokens; clock: Clock; logger: Logger; maxRequestBytes: number },
): void {
  const { stream, headers } = req;
  const encoding = headers["grpc-encoding"];
  let received = Buffer.alloc(0);
  let failed = false;
  const fail = (e: unknown) => {
    if (failed) return;
    failed = true;
    const err = toConnectError(e);
    if (err.code === Code.Internal) deps.logger.error({ rpc: SUBSCRIBE_PATH, err: err.cause }, err.rawMessage);
    respondStatus(res, err.code, err.rawMessage);
  };
  stream.on("error", () => {});
  req.on("error", () => {});
  req.on("data", (chunk: Buffer) => {
    if (failed) return;
    received = Buffer.concat([received, chunk]);
    if (received.length > deps.maxRequestBytes + 5) {
      fail(new ChatError("ResourceExhausted", `request is larger than ${deps.maxRequestBytes} bytes`));
    }
  });
  req.on("end", () => {
    if (failed) return;
    void (async () => {
      if (encoding !== undefined && encoding !== "identity" && received[0] === 1) {
        throw new ConnectError(`grpc-encoding ${String(encoding)} is not supported; send uncompressed messages`, Code.Unimplemented);
      }
      const request = decodeSingleFrame(received);
      const principal = await verifyBearer(deps.tokens, deps.clock, headers.authorization);
      const cursors = parseCursors(request.cursors);
      if (stream.destroyed) return;
      res.writeHead(200, { "content-type": "application/grpc" });
      const sink = new Http2Sink(res);
      const handle = await deps.hub.open(principal, cursors, sink);
      stream.once("close", () => handle.close());
    })().catch(fail);
  });
}

function decodeSingleFrame(buf: Buffer) {
  if (buf.length < 5) throw new ChatError("InvalidArgument", "request has no gRPC message");
  const length = buf.readUInt32BE(1);
  if (buf.length !== 5 + length) throw new ChatError("InvalidArgument", "request must carry exactly one gRPC message");
  try {
    return fromBinary(SubscribeRequestSchema, buf.subarray(5));
  } catch (e) {
    throw new ChatError("InvalidArgument", "request is not a valid chat.v1.SubscribeRequest", { cause: e });
  }
}

/**
 * Http2Sink writes pre-framed items to an HTTP/2 response and ends it with
 * gRPC trailers. Its buffer is the HTTP/2 stream's own write buffer.
 */
class Http2Sink implements StreamSink {
  private ended = false;

  constructor(private readonly res: http2.Http2ServerResponse) {}

  get bufferedBytes(): number {
    return this.res.stream.writableLength;
  }

  write(item: OutboundItem): void {
    if (this.ended || this.res.stream.destroyed) return;
    this.res.write(item.grpcFrame);
  }

  drained(): Promise<void> {
    const stream = this.res.stream;
    if (this.ended || stream.destroyed || stream.writableLength === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        stream.off("drain", done);
        stream.off("close", done);
        resolve();
      };
      stream.on("drain", done);
      stream.on("close", done);
    });
  }

  end(error?: ChatError): void {
    if (this.ended) return;
    this.ended = true;
    const stream = this.res.stream;
    if (stream.destroyed || stream.closed) return;
    const status = error ? toConnectError(error) : undefined;
    this.res.addTrailers(statusTrailers(status?.code ?? 0, status?.rawMessage));
    this.res.end();
    if (error) {
      // The trailers wait behind the buffered data; a client that never
      // reads again must not pin that buffer: give it 10 s, then reset.
      const timer = setTimeout(() => {
        if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
      }, 10_000);
      timer.unref();
      stream.once("close", () => clearTimeout(timer));
    }
  }
}

/** respondStatus answers with no messages and the given status (headers, then trailers). */
function respondStatus(res: http2.Http2ServerResponse, code: Code, message: string): void {
  if (res.stream.destroyed) return;
  if (res.headersSent) {
    res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  res.writeHead(200, { "content-type": "application/grpc" });
  res.addTrailers(statusTrailers(code, message));
  res.end();
}

function statusTrailers(code: number, message: string | undefined): Record<string, string> {
  const trailers: Record<string, string> = { "grpc-status": String(code) };
  if (message) trailers["grpc-message"] = percentEncode(message);
  return trailers;
}

/** percentEncode encodes grpc-message as the gRPC spec asks: bytes outside 0x20-0x7E, and '%', as %XX. */
function percentEncode(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
