import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Code } from "@connectrpc/connect";
import { MessageSchema } from "../../gen/chat/v1/message_pb.js";
import {
  type ListMessagesRequest,
  ListMessagesRequestSchema,
  type SendMessageRequest,
  SendMessageRequestSchema,
} from "../../gen/chat/v1/message_service_pb.js";
import { ChatError } from "../core/errors.js";
import type { ChatMessage } from "../core/model.js";
import type { HistoryAnchor } from "../core/recent-history.js";
import { checkSeq } from "../core/validate.js";
import { encodeMessage } from "../delivery/event-frame.js";
import { varintSize, writeVarint } from "../delivery/grpc-codec.js";
import { messageToProto } from "../delivery/proto-convert.js";
import type { MessageService } from "../message/message-service.js";
import type { FastUnaryRoute } from "./framed-unary.js";

/**
 * messageFastRoutes are MessageService's hot unary RPCs for the unary fast
 * path (framed-unary.ts): SendMessage and ListMessages over gRPC and
 * gRPC-Web, with the same answers as rpc/message-rpc.ts gives through
 * connect-node (e2e tests compare them).
 */
export function messageFastRoutes(messages: MessageService, onSendResult?: (code: Code | undefined) => void): FastUnaryRoute[] {
  const encoded = new EncodedMessages(32 * 2 ** 20);
  return [
    {
      rpc: "chat.v1.MessageService/SendMessage",
      ...(onSendResult ? { onResult: onSendResult } : {}),
      async handle(principal, request) {
        const req = decode<SendMessageRequest>(() => fromBinary(SendMessageRequestSchema, request), "SendMessageRequest");
        const { message, duplicate } = await messages.send(principal, req.groupId, req.text, req.clientMessageId);
        return encodeSendMessageResponse(encoded.get(message), duplicate);
      },
    },
    {
      rpc: "chat.v1.MessageService/ListMessages",
      async handle(principal, request) {
        const req = decode<ListMessagesRequest>(() => fromBinary(ListMessagesRequestSchema, request), "ListMessagesRequest");
        let anchor: HistoryAnchor = {};
        if (req.anchor.case === "beforeSeq") anchor = { beforeSeq: checkSeq("before_seq", req.anchor.value) };
        if (req.anchor.case === "afterSeq") anchor = { afterSeq: checkSeq("after_seq", req.anchor.value) };
        const page = await messages.list(principal, req.groupId, anchor, req.limit);
        return encodeListMessagesResponse(page.messages.map((m) => encoded.get(m)), page.hasMore, page.headSeq, page.firstRetainedSeq);
      },
    },
  ];
}

function decode<T>(parse: () => T, type: string): T {
  try {
    return parse();
  } catch (e) {
    throw new ChatError("InvalidArgument", `request is not a valid chat.v1.${type}`, { cause: e });
  }
}

/**
 * EncodedMessages remembers each message's chat.v1.Message encoding (the
 * hand encoder of delivery/event-frame.ts, checked byte for byte against
 * protobuf-es, else protobuf-es itself) by message id, so a history page
 * costs one copy per message instead of a reflective encode (~17 µs each
 * here). Messages are immutable once stored; edits (roadmap) must change the
 * key or drop the entry. Bounded by bytes: the map starts over past
 * `maxBytes`. Both encoders return memory of its own, so no entry keeps a
 * shared 8 KiB Buffer pool slab alive.
 */
class EncodedMessages {
  private readonly byId = new Map<string, { seq: number; bytes: Uint8Array }>();
  private bytesHeld = 0;

  constructor(private readonly maxBytes: number) {}

  get(m: ChatMessage): Uint8Array {
    const known = this.byId.get(m.id);
    if (known && known.seq === m.seq) return known.bytes;
    const bytes = encodeMessage(m) ?? toBinary(MessageSchema, messageToProto(m));
    if (this.bytesHeld + bytes.length > this.maxBytes) {
      this.byId.clear();
      this.bytesHeld = 0;
    }
    this.byId.set(m.id, { seq: m.seq, bytes });
    this.bytesHeld += bytes.length;
    return bytes;
  }
}

/**
 * encodeListMessagesResponse writes chat.v1.ListMessagesResponse from
 * encoded messages: messages = 1 (repeated, length-delimited), has_more = 2,
 * head_seq = 3, first_retained_seq = 4, leaving proto3 defaults out as
 * protobuf-es does (framed-message-routes.spec.ts compares it with toBinary).
 */
export function encodeListMessagesResponse(messages: readonly Uint8Array[], hasMore: boolean, headSeq: number, firstRetainedSeq: number): Uint8Array {
  let size = 0;
  for (const m of messages) size += 1 + varintSize(m.length) + m.length;
  if (hasMore) size += 2;
  if (headSeq > 0) size += 1 + varintSize(headSeq);
  if (firstRetainedSeq > 0) size += 1 + varintSize(firstRetainedSeq);
  const out = new Uint8Array(size);
  let at = 0;
  for (const m of messages) {
    out[at++] = (1 << 3) | 2;
    at = writeVarint(out, at, m.length);
    out.set(m, at);
    at += m.length;
  }
  if (hasMore) {
    out[at++] = 2 << 3;
    out[at++] = 1;
  }
  if (headSeq > 0) {
    out[at++] = 3 << 3;
    at = writeVarint(out, at, headSeq);
  }
  if (firstRetainedSeq > 0) {
    out[at++] = 4 << 3;
    writeVarint(out, at, firstRetainedSeq);
  }
  return out;
}

/**
 * encodeSendMessageResponse writes chat.v1.SendMessageResponse from the
 * encoded message: message = 1 (length-delimited), duplicate = 2 (left out
 * when false), as protobuf-es does (framed-message-routes.spec.ts compares it with
 * toBinary). The message's encoding is the one history pages reuse.
 */
export function encodeSendMessageResponse(message: Uint8Array, duplicate: boolean): Uint8Array {
  const out = new Uint8Array(1 + varintSize(message.length) + message.length + (duplicate ? 2 : 0));
  out[0] = (1 << 3) | 2;
  let at = writeVarint(out, 1, message.length);
  out.set(message, at);
  at += message.length;
  if (duplicate) {
    out[at++] = 2 << 3;
    out[at] = 1;
  }
  return out;
}
