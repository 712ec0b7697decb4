import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { Code } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { type ConnectRequest, ConnectRequestSchema, type ConnectResponse, ConnectResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { ChatError } from "../core/errors.js";
import type { Principal } from "../core/principal.js";
import { checkSeq } from "../core/validate.js";
import { openStream } from "../delivery/open-stream.js";
import type { StreamSink } from "../delivery/outbound.js";
import { messageToProto } from "../delivery/proto-convert.js";
import type { StreamHandle, StreamHub } from "../delivery/stream-hub.js";
import type { MessageService } from "../message/message-service.js";
import { toConnectError } from "./errors.js";

/** SendResultObserver is told the outcome of each send: undefined for OK, else the status code the client gets. */
export type SendResultObserver = (code: Code | undefined) => void;

/**
 * answerConnectRequest handles one client item of a Connect stream after
 * `subscribe` (every Connect transport uses it: ConnectStream below for the
 * framed HTTP path and the WebSocket, stream-rpc.ts for connect-node): a
 * send gets a SendResult (message or error), a failed ack an ack_error, a
 * successful ack no answer. It never
 * throws: per-request failures are answers, and the stream goes on. An error
 * with a retry hint (rate limit, overload) carries it as retry_after, as the
 * unary RPCs carry it in a retry-after trailer.
 * `onSendResult` (metrics) hears the outcome of every send.
 */
export async function answerConnectRequest(
  principal: Principal,
  request: ConnectRequest,
  messages: MessageService,
  onSendResult?: SendResultObserver,
): Promise<ConnectResponse | undefined> {
  const { requestId, payload } = request;
  try {
    switch (payload.case) {
      case "sendMessage": {
        const { groupId, text, clientMessageId } = payload.value;
        const { message, duplicate } = await messages.send(principal, groupId, text, clientMessageId);
        onSendResult?.(undefined);
        return create(ConnectResponseSchema, {
          requestId,
          payload: { case: "sendResult", value: { outcome: { case: "response", value: { message: messageToProto(message), duplicate } } } },
        });
      }
      case "ack":
        await messages.ack(principal, payload.value.groupId, checkSeq("seq", payload.value.seq));
        return undefined;
      case "subscribe":
        throw new ChatError("FailedPrecondition", "the stream is already subscribed; open a new stream to change cursors");
      default:
        throw new ChatError("InvalidArgument", "ConnectRequest carries no payload");
    }
  } catch (e) {
    const err = toConnectError(e);
    if (payload.case === "sendMessage") onSendResult?.(err.code);
    const retryAfterMs = e instanceof ChatError ? e.retryAfterMs : undefined;
    const error = {
      code: codeToString(err.code),
      message: err.rawMessage,
      ...(retryAfterMs !== undefined ? { retryAfter: durationFromMs(Math.ceil(retryAfterMs)) } : {}),
    };
    return create(ConnectResponseSchema, {
      requestId,
      payload:
        payload.case === "sendMessage"
          ? { case: "sendResult", value: { outcome: { case: "error", value: error } } }
          : { case: "ackError", value: error },
    });
  }
}

/** FIRST_REQUEST_MUST_SUBSCRIBE is the status message for a Connect stream whose first request is not `subscribe`. */
export const FIRST_REQUEST_MUST_SUBSCRIBE = "the first ConnectRequest must carry `subscribe`";

/** decodeConnectRequest parses one binary ConnectRequest, or throws ChatError InvalidArgument. */
export function decodeConnectRequest(bytes: Uint8Array): ConnectRequest {
  try {
    return fromBinary(ConnectRequestSchema, bytes);
  } catch (e) {
    throw new ChatError("InvalidArgument", "request is not a valid chat.v1.ConnectRequest", { cause: e });
  }
}

/** ConnectStreamDeps are what a Connect stream needs, whatever its transport. */
export interface ConnectStreamDeps {
  readonly hub: StreamHub;
  readonly principal: Principal;
  readonly messages: MessageService;
  readonly onSendResult?: SendResultObserver | undefined;
  /** sink is the transport's StreamSink: the hub's items and the replies go to it. */
  readonly sink: StreamSink;
  /** gone tells whether the client went away (openStream asks it). */
  readonly gone: () => boolean;
  /** accepted runs once the opening request is valid (openStream's `accepted`). */
  readonly accepted?: () => void;
  /** reply writes one encoded ConnectResponse to the sink, after the items written before it. */
  readonly reply: (response: Uint8Array) => void;
}

/**
 * ConnectStream is the transport-free part of one StreamService/Connect
 * stream (the framed HTTP path and the WebSocket share it): its caller
 * hands it the client's requests one at a time, in order, each served
 * before the next (`serve`). The first must carry `subscribe` and opens the
 * stream in the hub (openStream); each later one is answered by
 * answerConnectRequest, the reply written through `reply` and counted
 * against the stream's buffer cap (StreamHandle.checkBuffer).
 */
export class ConnectStream {
  private handle: StreamHandle | undefined;

  constructor(private readonly deps: ConnectStreamDeps) {}

  /** subscribed tells whether the first request has opened the stream. */
  get subscribed(): boolean {
    return this.handle !== undefined;
  }

  /**
   * serve handles one request. It throws ChatError InvalidArgument for a
   * first request without `subscribe` or with bad cursors (openStream), and
   * resolves false if the client went away before the stream opened
   * (nothing more to serve), else true. Per-request failures after the
   * first are replies, never throws.
   */
  async serve(request: ConnectRequest): Promise<boolean> {
    const { deps } = this;
    if (!this.handle) {
      if (request.payload.case !== "subscribe") throw new ChatError("InvalidArgument", FIRST_REQUEST_MUST_SUBSCRIBE);
      const { hub, principal, sink, gone, accepted } = deps;
      this.handle = await openStream({ hub, principal, request: request.payload.value, sink, gone, ...(accepted ? { accepted } : {}) });
      return this.handle !== undefined;
    }
    const response = await answerConnectRequest(deps.principal, request, deps.messages, deps.onSendResult);
    if (response && !deps.gone()) {
      deps.reply(toBinary(ConnectResponseSchema, response));
      this.handle.checkBuffer();
    }
    return true;
  }

  /** close tells the hub the stream is over (the client went away or the stream failed); idempotent. */
  close(): void {
    this.handle?.close();
  }
}
