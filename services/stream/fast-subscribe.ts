import type http from "node:http";
import http2 from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
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

/** SUBSCRIBE_PATH is the path of StreamService/Subscribe. */
export const SUBSCRIBE_PATH = "/chat.v1.StreamService/Subscribe";

/** WireProtocol is a streaming protocol whose binary framing the fast path writes itself. */
export type WireProtocol = "grpc" | "grpc-web" | "connect";

const CONTENT_TYPES: Readonly<Record<string, WireProtocol>> = {
  "application/grpc": "grpc",
  "application/grpc+proto": "grpc",
  "application/grpc-web": "grpc-web",
  "application/grpc-web+proto": "grpc-web",
  "application/connect+proto": "connect",
};

const RESPONSE_TYPES: Readonly<Record<WireProtocol, string>> = {
  grpc: "application/grpc",
  "grpc-web": "application/grpc-web+proto",
  connect: "application/connect+proto",
};

type AnyRequest = http.IncomingMessage | http2.Http2ServerRequest;
type AnyResponse = http.ServerResponse | http2.Http2ServerResponse;

/**
 * fastSubscribeProtocol tells whether a request is a Subscribe call the
 * fast path serves: gRPC (HTTP/2), gRPC-Web or Connect streaming, each with
 * the binary codec. JSON and base64 (grpc-web-text) variants return
 * undefined and go to connect-node.
 */
export function fastSubscribeProtocol(req: AnyRequest): WireProtocol | undefined {
  if (req.method !== "POST" || req.url !== SUBSCRIBE_PATH) return undefined;
  const type = req.headers["content-type"]?.split(";")[0]?.trim().toLowerCase();
  const protocol = type === undefined ? undefined : CONTENT_TYPES[type];
  if (protocol === "grpc" && req.httpVersionMajor !== 2) return undefined;
  return protocol;
}

/** FastPathDeps are what the fast path needs from the app. */
export interface FastPathDeps {
  readonly hub: StreamHub;
  readonly tokens: AccessTokens;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly maxRequestBytes: number;
}

/**
 * serveFastSubscribe is the delivery fast path: StreamService/Subscribe
 * written straight to the HTTP response. All three protocols frame a message
 * the same way (flag byte, 32-bit length, protobuf bytes), so the hub's
 * OutboundItem.grpcFrame, built once per event per process, is the very
 * Buffer written to every recipient; only the stream's end differs (HTTP/2
 * trailers, a gRPC-Web trailer frame, a Connect end-of-stream frame). It
 * keeps the semantics of the connect-node handler: bearer auth, validation,
 * status codes, the hub's buffer cap (applied to the response's own write
 * buffer).
 */
export function serveFastSubscribe(protocol: WireProtocol, req: AnyRequest, res: AnyResponse, deps: FastPathDeps): void {
  const encoding = req.headers[protocol === "connect" ? "connect-content-encoding" : "grpc-encoding"];
  const chunks: Buffer[] = [];
  let size = 0;
  let failed = false;
  const writer = new FrameWriter(protocol, res);
  const fail = (e: unknown) => {
    if (failed) return;
    failed = true;
    const err = toConnectError(e);
    if (err.code === Code.Internal) deps.logger.error({ rpc: SUBSCRIBE_PATH, err: err.cause }, err.rawMessage);
    writer.finish(err);
  };
  req.on("error", () => {});
  res.on("error", () => {});
  req.on("data", (chunk: Buffer) => {
    if (failed) return;
    chunks.push(chunk);
    size += chunk.length;
    if (size > deps.maxRequestBytes + 5) fail(new ChatError("ResourceExhausted", `request is larger than ${deps.maxRequestBytes} bytes`));
  });
  req.on("end", () => {
    if (failed) return;
    void (async () => {
      const body = Buffer.concat(chunks);
      if (body[0] === 1 && encoding !== undefined && encoding !== "identity") {
        throw new ConnectError(`${String(encoding)} compression is not supported; send uncompressed messages`, Code.Unimplemented);
      }
      const request = decodeSingleFrame(body);
      const principal = await verifyBearer(deps.tokens, deps.clock, req.headers.authorization);
      const cursors = parseCursors(request.cursors);
      if (res.destroyed) return;
      writer.start();
      const handle = await deps.hub.open(principal, cursors, writer);
      // The client may have gone while the stream was being set up.
      if (res.destroyed || res.writableFinished) handle.close();
      else res.once("close", () => handle.close());
    })().catch(fail);
  });
}

function decodeSingleFrame(buf: Buffer) {
  if (buf.length < 5) throw new ChatError("InvalidArgument", "request has no enveloped message");
  const length = buf.readUInt32BE(1);
  if (buf.length !== 5 + length) throw new ChatError("InvalidArgument", "request must carry exactly one enveloped message");
  if ((buf[0] ?? 0) & 0x01) throw new ConnectError("compressed request without an encoding header", Code.InvalidArgument);
  try {
    return fromBinary(SubscribeRequestSchema, buf.subarray(5));
  } catch (e) {
    throw new ChatError("InvalidArgument", "request is not a valid chat.v1.SubscribeRequest", { cause: e });
  }
}

/**
 * FrameWriter is the StreamSink of the fast path: it writes pre-framed items
 * to the response and ends the stream in the protocol's own way. Its buffer
 * is the response's write buffer (for HTTP/2, the stream's; for HTTP/1.1,
 * the response's and its socket's).
 */
export class FrameWriter implements StreamSink {
  private started = false;
  private ended = false;

  constructor(
    private readonly protocol: WireProtocol,
    private readonly res: AnyResponse,
  ) {}

  get bufferedBytes(): number {
    return this.res.writableLength;
  }

  /** start sends the response headers. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.res.writeHead(200, { "content-type": RESPONSE_TYPES[this.protocol] });
  }

  write(item: OutboundItem): void {
    if (this.ended || this.res.destroyed) return;
    (this.res as http.ServerResponse).write(item.grpcFrame);
  }

  /**
   * drained waits for 'drain' when the response asked for it; below the
   * stream's high-water mark no 'drain' comes, so it waits a moment for the
   * socket to take the bytes and lets the caller look again.
   */
  drained(): Promise<void> {
    const res = this.res;
    if (this.ended || res.destroyed || res.writableLength === 0) return Promise.resolve();
    const needDrain = "stream" in res ? res.stream.writableNeedDrain : res.writableNeedDrain;
    if (!needDrain) return new Promise((resolve) => setTimeout(resolve, 5));
    return new Promise((resolve) => {
      const done = () => {
        res.off("drain", done);
        res.off("close", done);
        resolve();
      };
      res.on("drain", done);
      res.on("close", done);
    });
  }

  end(error?: ChatError): void {
    this.finish(error ? toConnectError(error) : undefined);
  }

  /** finish ends the stream with a status (OK without an error). */
  finish(error: ConnectError | undefined): void {
    if (this.ended) return;
    this.ended = true;
    const res = this.res;
    if (res.destroyed || res.writableEnded) return;
    if (!this.started) {
      this.started = true;
      res.writeHead(200, { "content-type": RESPONSE_TYPES[this.protocol] });
    }
    const code = error?.code ?? 0;
    const message = error?.rawMessage;
    switch (this.protocol) {
      case "grpc":
        (res as http2.Http2ServerResponse).addTrailers(grpcStatus(code, message));
        res.end();
        break;
      case "grpc-web": {
        const lines = Object.entries(grpcStatus(code, message))
          .map(([k, v]) => `${k}: ${v}\r\n`)
          .join("");
        res.end(envelope(0x80, Buffer.from(lines, "latin1")));
        break;
      }
      case "connect": {
        const endStream = error ? { error: { code: codeToString(error.code), message: error.rawMessage } } : {};
        res.end(envelope(0x02, Buffer.from(JSON.stringify(endStream), "utf8")));
        break;
      }
    }
    if (error) {
      // The end waits behind the buffered data; a client that never reads
      // again must not pin that buffer: give it 10 s, then drop the stream.
      const timer = setTimeout(() => destroy(res), 10_000);
      timer.unref();
      res.once("close", () => clearTimeout(timer));
    }
  }
}

function destroy(res: AnyResponse): void {
  if (res.destroyed) return;
  if ("stream" in res) res.stream.close(http2.constants.NGHTTP2_CANCEL);
  else res.destroy();
}

function envelope(flags: number, payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(5 + payload.length);
  frame.writeUInt8(flags, 0);
  frame.writeUInt32BE(payload.length, 1);
  payload.copy(frame, 5);
  return frame;
}

function grpcStatus(code: number, message: string | undefined): Record<string, string> {
  const status: Record<string, string> = { "grpc-status": String(code) };
  if (message) status["grpc-message"] = percentEncode(message);
  return status;
}

/** percentEncode encodes grpc-message as the gRPC spec asks: bytes outside 0x20-0x7E, and '%', as %XX. */
function percentEncode(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
