import { create, toBinary } from "@bufbuild/protobuf";
import { Code, type ConnectRouter, ConnectError, type HandlerContext } from "@connectrpc/connect";
import {
  type ConnectRequest,
  type ConnectResponse,
  ConnectResponseSchema,
  type SubscribeRequest,
  type SubscribeResponse,
  StreamService,
} from "../../gen/chat/v1/stream_service_pb.js";
import { ChatError } from "../core/errors.js";
import type { Principal } from "../core/principal.js";
import { openStream } from "../delivery/open-stream.js";
import type { StreamHandle, StreamHub } from "../delivery/stream-hub.js";
import type { MessageService } from "../message/message-service.js";
import { FIRST_REQUEST_MUST_SUBSCRIBE, type SendResultObserver, answerConnectRequest } from "./connect-requests.js";
import { principalOf } from "./interceptors.js";
import { QueueSink } from "./queue-sink.js";

/**
 * streamRoutes serves chat.v1.StreamService over connect-node (gRPC,
 * gRPC-Web and Connect). Both RPCs stream through the hub; Connect also
 * takes sends and acks on the same stream, answering each send in order;
 * `onStreamSend` (metrics) hears the outcome of each of those sends.
 */
export function streamRoutes(
  router: ConnectRouter,
  hub: StreamHub,
  messages: MessageService,
  onStreamSend?: SendResultObserver,
): ConnectRouter {
  return router.service(StreamService, {
    async *subscribe(req, ctx) {
      const sink = new QueueSink<SubscribeResponse>((item) => item.message);
      yield* run(hub, principalOf(ctx.values), req, sink, ctx);
    },
    async *connect(requests, ctx) {
      const principal = principalOf(ctx.values);
      const input = requests[Symbol.asyncIterator]();
      const first = await input.next();
      if (first.done || first.value.payload.case !== "subscribe") {
        throw new ChatError("InvalidArgument", FIRST_REQUEST_MUST_SUBSCRIBE);
      }
      const sink = new QueueSink<ConnectResponse>((item) =>
        create(ConnectResponseSchema, { payload: { case: "item", value: item.message } }),
      );
      yield* run(hub, principal, first.value.payload.value, sink, ctx, (handle) => void serveRequests(input, principal, messages, sink, handle, onStreamSend, ctx.signal));
    },
  });
}

/** run opens the stream (openStream) and yields its items until it ends or the client goes away. */
async function* run<T>(
  hub: StreamHub,
  principal: Principal,
  request: SubscribeRequest,
  sink: QueueSink<T>,
  ctx: HandlerContext,
  onOpen?: (handle: StreamHandle) => void,
): AsyncGenerator<T> {
  const handle = await openStream({ hub, principal, request, sink, gone: () => ctx.signal.aborted });
  if (!handle) return;
  onOpen?.(handle);
  const onAbort = () => handle.close();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  try {
    yield* sink;
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
    handle.close();
  }
}

/** serveRequests handles a Connect stream's sends and acks, one at a time, in order. */
async function serveRequests(
  input: AsyncIterator<ConnectRequest>,
  principal: Principal,
  messages: MessageService,
  sink: QueueSink<ConnectResponse>,
  handle: StreamHandle,
  onSendResult: SendResultObserver | undefined,
  signal: AbortSignal,
): Promise<void> {
  // Replies share the stream's buffer cap with the events: a client that
  // sends but never reads is cut off like any slow reader.
  const reply = (response: ConnectResponse) => {
    sink.push(response, toBinary(ConnectResponseSchema, response).length);
    handle.checkBuffer();
  };
  try {
    for (let next = await input.next(); !next.done && !sink.isEnded; next = await input.next()) {
      const response = await answerConnectRequest(principal, next.value, messages, onSendResult);
      if (response) reply(response);
    }
  } catch (e) {
    // A client that went away is the stream's own teardown. Any other failure of the request side (a message
    // over its cap, one that does not decode, a body deadline) ends the stream with that status, never with OK.
    if (signal.aborted || (e instanceof ConnectError && e.code === Code.Canceled)) return;
    sink.fail(e);
    handle.close();
  }
}
