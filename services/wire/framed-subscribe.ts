import type { AccessTokens } from "../auth/access-tokens.js";
import type { Logger } from "../core/logger.js";
import type { Clock } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import { openStream } from "../delivery/open-stream.js";
import type { StreamHub } from "../delivery/stream-hub.js";
import { logCallEnd } from "../rpc/call-log.js";
import type { SendResultObserver } from "../rpc/connect-requests.js";
import { toConnectError } from "../rpc/errors.js";
import { type AnyRequest, type AnyResponse, FrameWriter, type WireProtocol } from "./framing.js";

/** SUBSCRIBE_PATH is the path of StreamService/Subscribe. */
export const SUBSCRIBE_PATH = "/chat.v1.StreamService/Subscribe";
/** SUBSCRIBE_RPC is StreamService/Subscribe as "package.Service/Method". */
export const SUBSCRIBE_RPC = SUBSCRIBE_PATH.slice(1);

/** FastPathDeps are what the fast path needs from the app (the framed stream paths and the WebSocket). */
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
 * the caller the front door verified (front-door.ts): the token is
 * checked once per call, there. The stream is opened by openStream
 * (delivery/open-stream.ts), as on every transport.
 */
export function serveFastSubscribe(protocol: WireProtocol, req: AnyRequest, res: AnyResponse, deps: FastPathDeps, principal: Principal, payload: Buffer): void {
  let failed = false;
  const writer = new FrameWriter(protocol, res);
  const fail = (e: unknown) => {
    if (failed) return;
    failed = true;
    const err = toConnectError(e);
    logCallEnd(deps.logger, { rpc: SUBSCRIBE_RPC, userId: principal.userId }, err);
    writer.finish(err);
  };
  req.on("error", () => {});
  res.on("error", () => {});
  const gone = () => res.destroyed || res.writableFinished;
  openStream({ hub: deps.hub, principal, request: payload, sink: writer, gone, accepted: () => writer.start() }).then((handle) => {
    if (handle && !gone()) res.once("close", () => handle.close());
  }, fail);
}
