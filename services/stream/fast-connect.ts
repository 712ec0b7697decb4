import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type ConnectRequest, ConnectRequestSchema, ConnectResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import type { Principal } from "../auth/access-tokens.js";
import { ChatError } from "../core/errors.js";
import type { MessageService } from "../message/message-service.js";
import { verifyBearer } from "../platform/bearer.js";
import { toConnectError } from "../platform/errors.js";
import { BodyDeadlines, HeldFlow } from "../platform/request-body.js";
import { answerConnectRequest } from "./connect-requests.js";
import type { FastPathDeps } from "./fast-subscribe.js";
import { grpcFrame } from "./outbound.js";
import type { StreamHandle } from "./stream-hub.js";
import { streamOpenRequestBytes } from "./stream-limits.js";
import { parseCursors } from "./stream-rpc.js";
import { type AnyRequest, type AnyResponse, FrameReader, FrameWriter, type WireProtocol, binaryStreamProtocol } from "./wire.js";

/** CONNECT_PATH is the path of StreamService/Connect. */
export const CONNECT_PATH = "/chat.v1.StreamService/Connect";

/**
 * FALLBACK_DEADLINES time a partial request message when the caller passes
 * none: REQUEST_BODY_TIMEOUT's default (platform/config.ts). The front door
 * passes its own (the configured timeout).
 */
const FALLBACK_DEADLINES = new BodyDeadlines(10_000);

/**
 * fastConnectProtocol tells whether a request is a Connect (bidirectional)
 * call the fast path serves: gRPC or the Connect protocol with the binary
 * codec, over HTTP/2 (bidirectional streams need it; gRPC-Web has none).
 */
export function fastConnectProtocol(req: AnyRequest): WireProtocol | undefined {
  const protocol = binaryStreamProtocol(req, CONNECT_PATH);
  return protocol === "grpc-web" || req.httpVersionMajor !== 2 ? undefined : protocol;
}

/**
 * serveFastConnect is StreamService/Connect written straight to the wire,
 * with the semantics of the connect-node handler: the first client item must
 * be `subscribe`; then the stream carries the hub's items, each written as
 * the shared OutboundItem.connectFrame (encoded once per event per process),
 * and answers sends and acks in order (answerConnectRequest). Replies count
 * against the stream's buffer cap. The client closing its side keeps the
 * stream open; the client going away closes it.
 */
export function serveFastConnect(
  protocol: WireProtocol,
  req: AnyRequest,
  res: AnyResponse,
  deps: FastPathDeps & { readonly messages: MessageService },
  /** caller is the principal the front door verified (platform/front-door.ts); without it the bearer is verified here. */
  caller?: Principal,
  /** deadlines time a partial request message (REQUEST_BODY_TIMEOUT): the front door's, else a 10 s default. */
  deadlines: BodyDeadlines = FALLBACK_DEADLINES,
): void {
  const writer = new FrameWriter(protocol, res, (item) => item.connectFrame);
  // The first message may carry MAX_CURSORS cursors; the sends and acks after it keep MAX_REQUEST_BYTES.
  const reader = new FrameReader(deps.maxRequestBytes, streamOpenRequestBytes(deps.maxRequestBytes));
  let handle: StreamHandle | undefined;
  let busy = false;
  let failed = false;
  let inputEnded = false;
  const noSubscribe = () => fail(new ChatError("InvalidArgument", "the first ConnectRequest must carry `subscribe`"));

  const fail = (e: unknown) => {
    if (failed) return;
    failed = true;
    flow.stop();
    const err = toConnectError(e);
    if (err.code === Code.Internal) deps.logger.error({ rpc: CONNECT_PATH, err: err.cause }, err.rawMessage);
    // The status first: closing the hub's stream ends the writer, and an ended writer writes no status (it would end OK).
    writer.finish(err);
    handle?.close();
  };
  const principal = caller ? Promise.resolve(caller) : verifyBearer(deps.tokens, deps.clock, req.headers.authorization);
  principal.catch(fail);

  // Requests are cut one at a time, as they are served; a partial one first in line must complete within the deadline.
  const flow = new HeldFlow(req, reader, deadlines, () =>
    fail(new ConnectError(`a Connect request message did not arrive within ${deadlines.timeoutMs} ms (REQUEST_BODY_TIMEOUT)`, Code.DeadlineExceeded)),
  );
  const review = () => flow.review();

  const pump = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    try {
      const caller = await principal;
      while (!failed && !writer.isEnded) {
        const frame = reader.next();
        if (!frame) break;
        const request = decode(frame.payload);
        review();
        await serveOne(caller, request);
      }
    } finally {
      busy = false;
      if (inputEnded && !failed) {
        if (reader.leftover > 0 && !reader.ready()) fail(new ChatError("InvalidArgument", "the request stream ended inside a message"));
        else if (reader.leftover === 0 && !handle) noSubscribe();
      }
    }
  };

  const serveOne = async (caller: Principal, request: ConnectRequest): Promise<void> => {
    if (!handle) {
      if (request.payload.case !== "subscribe") {
        noSubscribe();
        return;
      }
      const cursors = parseCursors(request.payload.value.cursors);
      writer.start();
      handle = await deps.hub.open(caller, cursors, writer);
      if (res.destroyed) handle.close();
      return;
    }
    const response = await answerConnectRequest(caller, request, deps.messages, deps.onStreamSend);
    if (!response) return;
    writer.writeFrame(grpcFrame(toBinary(ConnectResponseSchema, response)));
    handle.checkBuffer();
  };

  req.on("error", () => {});
  res.on("error", () => {});
  res.once("close", () => {
    flow.stop();
    handle?.close();
  });
  req.on("data", (chunk: Buffer) => {
    if (failed) return;
    try {
      reader.add(chunk);
      if (!review()) return;
    } catch (e) {
      fail(e);
      return;
    }
    pump().catch(fail);
  });
  req.on("end", () => {
    inputEnded = true;
    try {
      // Requests still held are served first; a partial one at the end is an error.
      if (!reader.ready() && reader.leftover > 0) fail(new ChatError("InvalidArgument", "the request stream ended inside a message"));
      else if (!busy && !handle && reader.leftover === 0) noSubscribe();
    } catch (e) {
      fail(e);
    }
  });
}

function decode(payload: Buffer): ConnectRequest {
  try {
    return fromBinary(ConnectRequestSchema, payload);
  } catch (e) {
    throw new ChatError("InvalidArgument", "request is not a valid chat.v1.ConnectRequest", { cause: e });
  }
}
