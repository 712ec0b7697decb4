import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { MessageSchema } from "../../gen/chat/v1/message_pb.js";
import { ListMessagesResponseSchema, SendMessageResponseSchema } from "../../gen/chat/v1/message_service_pb.js";
import { encodeListMessagesResponse, encodeSendMessageResponse } from "./framed-message-routes.js";

describe("encodeListMessagesResponse", () => {
  it("writes the bytes protobuf-es writes, for empty and full pages and numbers across varint widths", () => {
    const messages = [0, 1, 3].map((n) =>
      Array.from({ length: n }, (_, i) =>
        create(MessageSchema, {
          messageId: `m${i}`,
          groupId: "g",
          seq: BigInt(i + 1),
          sender: { userId: "u", username: "ann" },
          text: "é".repeat(i * 70), // crosses the one-byte length at i >= 1
          sentAt: timestampFromMs(1_700_000_000_123 + i),
          clientMessageId: `c${i}`,
        }),
      ),
    );
    for (const page of messages) {
      for (const [hasMore, headSeq, firstRetainedSeq] of [
        [false, 0, 0],
        [true, 1, 1],
        [false, 127, 128],
        [true, 2 ** 31 + 5, 16_384],
        [false, Number.MAX_SAFE_INTEGER, 300],
      ] as const) {
        const want = toBinary(ListMessagesResponseSchema, create(ListMessagesResponseSchema, { messages: page, hasMore, headSeq: BigInt(headSeq), firstRetainedSeq: BigInt(firstRetainedSeq) }));
        const got = encodeListMessagesResponse(page.map((m) => toBinary(MessageSchema, m)), hasMore, headSeq, firstRetainedSeq);
        assert.deepEqual(Buffer.from(got), Buffer.from(want), `${page.length} messages, ${hasMore}, ${headSeq}, ${firstRetainedSeq}`);
      }
    }
  });
});

describe("encodeSendMessageResponse", () => {
  it("writes the bytes protobuf-es writes, for new and duplicate sends and messages across length widths", () => {
    for (const textLength of [0, 1, 100, 200, 20_000]) {
      const message = create(MessageSchema, {
        messageId: "m",
        groupId: "g",
        seq: 42n,
        sender: { userId: "u", username: "ann" },
        text: "x".repeat(textLength), // the message's length crosses one, two and three varint bytes
        sentAt: timestampFromMs(1_700_000_000_123),
        clientMessageId: "c",
      });
      for (const duplicate of [false, true]) {
        const want = toBinary(SendMessageResponseSchema, create(SendMessageResponseSchema, { message, duplicate }));
        const got = encodeSendMessageResponse(toBinary(MessageSchema, message), duplicate);
        assert.deepEqual(Buffer.from(got), Buffer.from(want), `${textLength} bytes, duplicate ${duplicate}`);
      }
    }
  });
});
