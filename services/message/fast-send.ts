import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import { SendMessageRequestSchema, SendMessageResponseSchema } from "../../gen/chat/v1/message_service_pb.js";
import type { AccessTokens, Principal } from "../auth/access-tokens.js";
import { ChatError } from "../core/errors.js";
import { newId } from "../core/ids.js";
import type { Clock } from "../core/ports.js";
import { verifyBearer } from "../platform/bearer.js";
import { toConnectError } from "../platform/errors.js";
import { REQUEST_ID_RE } from "../platform/interceptors.js";
import type { Logger } from "../platform/logger.js";
import { messageToProto } from "../platform/proto-convert.js";
import { type AnyRequest, type AnyResponse, type Frame, FrameReader, FrameWriter, binaryStreamProtocol, envelope } from "../stream/wire.js";
import type { MessageService } from "./message-service.js";

/** SEND_PATH is the path of MessageService/SendMessage. */
export const SEND_PATH = "/chat.v1.MessageService/SendMessage";

/**
 * fastSendProtocol tells whether a request is a SendMessage call the fast
 * path serves: gRPC (HTTP/2) or gRPC-Web with the binary codec. Connect
 * unary (unframed) and JSON go to connect-node.
 */
export function fastSendProtocol(req: AnyRequest): "grpc" | "grpc-web" | undefined {
  const protocol = binaryStreamProtocol(req, SEND_PATH);
  return protocol === "connect" ? undefined : protocol;
}

/** FastSendDeps are what the send fast path needs from the app. */
export interface FastSendDeps {
  readonly messages: MessageService;
  readonly tokens: AccessTokens;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly maxRequestBytes: number;
  /** onResult hears each call's outcome: undefined for OK, else the status code (metrics). */
  readonly onResult?: (code: Code | undefined) => void;
}

/**
 * serveFastSend is SendMessage over gRPC and gRPC-Web without connect-node's
 * per-call machinery (the send path's largest CPU cost after the store):
 * one framed request in, the use-case, one framed response out. It keeps
 * what the interceptors give the other RPCs: bearer authentication, the
 * same status codes and messages (with retry-after on RESOURCE_EXHAUSTED),
 * an `x-request-id` echoed or made, and the same log lines (Internal at
 * error, Unavailable at warn, the rest at debug; never the token). It does
 * not enforce `grpc-timeout`: a send that outlives the client's deadline
 * still completes, durably and idempotently, and a retry with the same
 * client_message_id returns it.
 */
export function serveFastSend(protocol: "grpc" | "grpc-web", req: AnyRequest, res: AnyResponse, deps: FastSendDeps): void {
  const started = Date.now();
  const given = req.headers["x-request-id"];
  const requestId = typeof given === "string" && REQUEST_ID_RE.test(given) ? given : newId();
  const reader = new FrameReader(deps.maxRequestBytes);
  const frames: Frame[] = [];
  const writer = new FrameWriter(protocol, res);
  let principal: Principal | undefined;
  let done = false;

  const finish = (error: ConnectError | undefined, reply?: Buffer) => {
    if (done) return;
    done = true;
    deps.onResult?.(error?.code);
    const line = { rpc: "chat.v1.MessageService/SendMessage", code: error ? Code[error.code] : "OK", requestId, userId: principal?.userId, durationMs: Date.now() - started };
    if (!error) deps.logger.debug(line, "rpc done");
    else if (error.code === Code.Internal) deps.logger.error({ ...line, err: error.cause instanceof Error ? error.cause : undefined }, error.rawMessage);
    else if (error.code === Code.Unavailable) deps.logger.warn({ ...line, err: error.cause instanceof Error ? error.cause : undefined }, error.rawMessage);
    else deps.logger.debug(line, error.rawMessage);
    if (res.destroyed) return;
    res.setHeader("x-request-id", requestId);
    if (reply) {
      writer.start();
      writer.writeFrame(reply);
    }
    writer.finish(error);
  };
  const fail = (e: unknown) => finish(toConnectError(e));

  req.on("error", () => {});
  res.on("error", () => {});
  req.on("data", (chunk: Buffer) => {
    if (done) return;
    try {
      frames.push(...reader.push(chunk));
      if (frames.length > 1) throw new ChatError("InvalidArgument", "a SendMessage request must carry exactly one message");
    } catch (e) {
      fail(e);
    }
  });
  req.on("end", () => {
    if (done) return;
    void (async () => {
      const frame = frames[0];
      if (!frame || frames.length > 1 || reader.leftover > 0) {
        throw new ChatError("InvalidArgument", "a SendMessage request must carry exactly one message");
      }
      const request = decode(frame.payload);
      principal = await verifyBearer(deps.tokens, deps.clock, req.headers.authorization);
      const { message, duplicate } = await deps.messages.send(principal, request.groupId, request.text, request.clientMessageId);
      const reply = toBinary(SendMessageResponseSchema, { $typeName: "chat.v1.SendMessageResponse", message: messageToProto(message), duplicate });
      finish(undefined, envelope(0, Buffer.from(reply.buffer, reply.byteOffset, reply.byteLength)));
    })().catch(fail);
  });
}

function decode(payload: Buffer) {
  try {
    return fromBinary(SendMessageRequestSchema, payload);
  } catch (e) {
    throw new ChatError("InvalidArgument", "request is not a valid chat.v1.SendMessageRequest", { cause: e });
  }
}
