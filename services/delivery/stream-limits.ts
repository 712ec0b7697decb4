/**
 * Size limits of opening a stream: how many cursors a SubscribeRequest may
 * carry, and the request size that makes that many fit, so the documented
 * limit is one a client can reach on every transport and codec.
 */
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { SubscribeRequestSchema } from "../../gen/chat/v1/stream_service_pb.js";

/**
 * MAX_CURSORS caps the cursors one SubscribeRequest may carry (more is
 * InvalidArgument). A user is in at most MAX_GROUPS_PER_USER groups, which
 * the configuration keeps at or below this, so a client can always resume
 * every one of its groups in one request.
 */
export const MAX_CURSORS = 10_000;

/** A group id or epoch as the server makes them: a UUID (core/ids.ts newId), 36 characters. */
const LARGEST_ID = "ffffffff-ffff-7fff-bfff-ffffffffffff";

/**
 * CURSOR_BYTES is the room the limit gives one valid cursor: 135 bytes. The
 * largest valid cursor (a 36-character group id and epoch, as every id and
 * epoch is a newId, and the largest seq a cursor may carry, 2^53 - 1,
 * core/validate.ts checkSeq) takes 87 bytes in binary. In compact JSON (no
 * whitespace, as protobuf-es and connect-es write it) each cursor after the
 * first adds 123 bytes (its object and a comma); the 135 is what the first
 * one adds to `{}`, which includes the `"cursors":[]` around it once. Taking
 * that per cursor overestimates by 12 bytes each: 10,000 cursors measure
 * 870,000 bytes in binary and 1,230,013 in compact JSON (1,230,043 as
 * Connect's first message), so the limit leaves about 120 KB to spare. The
 * figure is kept as is because STREAM_OPEN_REQUEST_BYTES is a documented
 * number (README, config help).
 */
export const CURSOR_BYTES: number = (() => {
  const one = create(SubscribeRequestSchema, { cursors: [{ groupId: LARGEST_ID, seq: BigInt(Number.MAX_SAFE_INTEGER), epoch: LARGEST_ID }] });
  const none = create(SubscribeRequestSchema, {});
  const binary = toBinary(SubscribeRequestSchema, one).length;
  // JSON: what the first cursor adds (wrapper included, see above), plus one for a comma.
  const json = toJsonString(SubscribeRequestSchema, one).length - toJsonString(SubscribeRequestSchema, none).length + 1;
  return Math.max(binary, json);
})();

/**
 * OPEN_ENVELOPE_BYTES is room for what wraps the cursors: the request's own
 * framing (JSON braces, field names) and, for Connect's first message, the
 * ConnectRequest around the SubscribeRequest with a short request_id.
 */
const OPEN_ENVELOPE_BYTES = 1024;

/**
 * STREAM_OPEN_REQUEST_BYTES bounds the largest valid opening message (a
 * SubscribeRequest with MAX_CURSORS cursors, binary or compact JSON, or the
 * first ConnectRequest carrying it; at most 1,230,043 bytes measured):
 * 1,351,024 bytes (1.3 MiB).
 */
export const STREAM_OPEN_REQUEST_BYTES = MAX_CURSORS * CURSOR_BYTES + OPEN_ENVELOPE_BYTES;

/**
 * streamOpenRequestBytes is the request-size limit of a stream's opening
 * message — Subscribe's request, Connect's first message, the WebSocket's
 * SubscribeRequest — given the server's MAX_REQUEST_BYTES: the larger of the
 * two, so MAX_CURSORS cursors always fit. Every later message of a stream
 * (Connect's sends and acks) keeps MAX_REQUEST_BYTES.
 */
export function streamOpenRequestBytes(maxRequestBytes: number): number {
  return Math.max(maxRequestBytes, STREAM_OPEN_REQUEST_BYTES);
}
