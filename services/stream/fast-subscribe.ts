import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { SubscribeRequestSchema } from "../../gen/chat/v1/stream_service_pb.js";
import type { AccessTokens, Principal } from "../auth/access-tokens.js";
import { ChatError } from "../core/errors.js";
import type { Clock } from "../core/ports.js";
import { toConnectError } from "../platform/errors.js";
import type { Logger } from "../platform/logger.js";
import type { SendResultObserver } from "./connect-requests.js";
import type { StreamHub } from "./stream-hub.js";
import { parseCursors } from "./stream-rpc.js";
import { type AnyRequest, type AnyResponse, FrameWriter, type WireProtocol, binaryStreamProtocol } from "./wire.js";

/** SUBSCRIBE_PATH is the path of StreamService/Subscribe. */
export const SUBSCRIBE_PATH = "/chat.v1.StreamService/Subscribe";

/**
 * fastSubscribeProtocol tells whether a request is a Subscribe call the
 * fast path serves: gRPC (HTTP/2), gRPC-Web or Connect streaming, each with
 * the binary codec. JSON and base64 (grpc-web-text) variants return
 * undefined and go to connect-node.
 */
export function fastSubscribeProtocol(req: AnyRequest): WireProtocol | undefined {
  return binaryStreamProtocol(req, SUBSCRIBE_PATH);
}

/** FastPathDeps are what the fast path needs from the app. */
export interface FastPathDeps {
  readonly hub: StreamHub;
  readonly tokens: AccessTokens;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly maxRequestBytes: number;
  /** onStreamSend hears the outcome of each send made on a Connect stream (metrics). */
  readonly onStreamSend?: SendResultObserver;
}

/**
 * serveFastSubscribe is the delivery fast path: StreamService/Subscribe
 * written straight to the HTTP response. All three protocols frame a message
 * the same way (flag byte, 32-bit length, protobuf bytes), so the hub's
 * OutboundItem.grpcFrame, built once per event per process, is the very
 * Buffer written to every recipient; only the stream's end differs (HTTP/2
 * trailers, a gRPC-Web trailer frame, a Connect end-of-stream frame). It
 * keeps the semantics of the connect-node handler (`payload` is the request
 * message, read by the front door): validation, status codes, the hub's
 * buffer cap (applied to the response's own write buffer). `principal` is
 * the caller the front door verified (platform/front-door.ts): the token is
 * checked once per call, there.
 */
export function serveFastSubscribe(protocol: WireProtocol, req: AnyRequest, res: AnyResponse, deps: FastPathDeps, principal: Principal, payload: Buffer): void {
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
  const subscribe = (payload: Buffer) =>
    void (async () => {
      const request = decodeSubscribeRequest(payload);
      const cursors = parseCursors(request.cursors);
      if (res.destroyed) return;
      writer.start();
      const handle = await deps.hub.open(principal, cursors, writer);
      // The client may have gone while the stream was being set up.
      if (res.destroyed || res.writableFinished) handle.close();
      else res.once("close", () => handle.close());
    })().catch(fail);
  // The request message, read by the front door (platform/front-door.ts) within its limits.
  subscribe(payload);
}

/** decodeSubscribeRequest parses a SubscribeRequest, or throws InvalidArgument (every transport's first message). */
export function decodeSubscribeRequest(payload: Buffer) {
  try {
    return fromBinary(SubscribeRequestSchema, payload);
  } catch (e) {
    throw new ChatError("InvalidArgument", "request is not a valid chat.v1.SubscribeRequest", { cause: e });
  }
}
