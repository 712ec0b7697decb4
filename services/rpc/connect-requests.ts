import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { Code } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { type ConnectRequest, type ConnectResponse, ConnectResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { ChatError } from "../core/errors.js";
import type { Principal } from "../core/principal.js";
import { checkSeq } from "../core/validate.js";
import { messageToProto } from "../delivery/proto-convert.js";
import type { MessageService } from "../message/message-service.js";
import { toConnectError } from "./errors.js";

/** SendResultObserver is told the outcome of each send: undefined for OK, else the status code the client gets. */
export type SendResultObserver = (code: Code | undefined) => void;

/**
 * answerConnectRequest handles one client item of a Connect stream after
 * `subscribe` (both transports use it): a send gets a SendResult (message or
 * error), a failed ack an ack_error, a successful ack no answer. It never
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
