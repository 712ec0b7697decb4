import { create, toBinary } from "@bufbuild/protobuf";
import { Code, type ConnectRouter, ConnectError, type HandlerContext } from "@connectrpc/connect";
import {
  type ConnectRequest,
  type ConnectResponse,
  ConnectResponseSchema,
  type GroupCursor,
  type SubscribeResponse,
  StreamService,
} from "../../gen/chat/v1/stream_service_pb.js";
import type { Principal } from "../auth/access-tokens.js";
import { ChatError } from "../core/errors.js";
import { checkId, checkSeq } from "../core/validate.js";
import type { MessageService } from "../message/message-service.js";
import { principalOf } from "../platform/interceptors.js";
import { type SendResultObserver, answerConnectRequest } from "./connect-requests.js";
import { QueueSink } from "./queue-sink.js";
import type { ClientCursor, StreamHandle, StreamHub } from "./stream-hub.js";
import { MAX_CURSORS } from "./stream-limits.js";

export { MAX_CURSORS } from "./stream-limits.js";

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
      yield* run(hub, principalOf(ctx.values), parseCursors(req.cursors), sink, ctx);
    },
    async *connect(requests, ctx) {
      const principal = principalOf(ctx.values);
      const input = requests[Symbol.asyncIterator]();
      const first = await input.next();
      if (first.done || first.value.payload.case !== "subscribe") {
        throw new ChatError("InvalidArgument", "the first ConnectRequest must carry `subscribe`");
      }
      const sink = new QueueSink<ConnectResponse>((item) =>
        create(ConnectResponseSchema, { payload: { case: "item", value: item.message } }),
      );
      const cursors = parseCursors(first.value.payload.value.cursors);
      yield* run(hub, principal, cursors, sink, ctx, (handle) => void serveRequests(input, principal, messages, sink, handle, onStreamSend, ctx.signal));
    },
  });
}

/** run opens the stream in the hub and yields its items until it ends or the client goes away. */
async function* run<T>(
  hub: StreamHub,
  principal: Principal,
  cursors: ReadonlyMap<string, ClientCursor>,
  sink: QueueSink<T>,
  ctx: HandlerContext,
  onOpen?: (handle: StreamHandle) => void,
): AsyncGenerator<T> {
  const handle = await hub.open(principal, cursors, sink);
  onOpen?.(handle);
  const onAbort = () => handle.close();
  if (ctx.signal.aborted) onAbort(); // the client went away while the stream was being set up
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

/** parseCursors validates and indexes the client's cursors (the last one per group wins). */
export function parseCursors(cursors: readonly GroupCursor[]): Map<string, ClientCursor> {
  if (cursors.length > MAX_CURSORS) {
    throw new ChatError("InvalidArgument", `at most ${MAX_CURSORS} cursors per request (got ${cursors.length}); send one per group you are in`);
  }
  const out = new Map<string, ClientCursor>();
  for (const c of cursors) {
    out.set(checkId("cursors.group_id", c.groupId), { seq: checkSeq("cursors.seq", c.seq), epoch: c.epoch });
  }
  return out;
}
