import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type SubscribeResponse, SubscribeResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import type { ChatError } from "../core/errors.js";
import type { GroupEvent } from "../core/model.js";
import { encodeEventFrame } from "./event-frame.js";
import { ENVELOPE_HEADER_BYTES, envelope, varintSize, writeEnvelopeHeader, writeVarint } from "./grpc-codec.js";
import { eventToProto } from "./proto-convert.js";

/**
 * OutboundItem is one stream item, encoded once: `bytes` is the binary
 * SubscribeResponse. The hub builds one per event per process and hands the
 * same object to every local recipient; transports that write raw frames
 * send `grpcFrame` (Subscribe) or `connectFrame` (Connect), others may send
 * `message`.
 */
export interface OutboundItem {
  readonly message: SubscribeResponse;
  readonly bytes: Uint8Array;
  /** grpcFrame is `bytes` as one length-prefixed message (flag 0, uncompressed), ready for the wire. */
  readonly grpcFrame: Buffer;
  /**
   * connectFrame is the item as a framed ConnectResponse `{ item }` for the
   * bidirectional Connect RPC; built on first use, then shared like grpcFrame.
   */
  readonly connectFrame: Buffer;
  /**
   * wsFrame is `bytes` as one unmasked binary WebSocket frame (what a server
   * sends, RFC 6455 section 5.2), for Subscribe over WebSocket; built on
   * first use, then shared like grpcFrame.
   */
  readonly wsFrame: Buffer;
}

/** outbound encodes a SubscribeResponse into an OutboundItem. */
export function outbound(payload: SubscribeResponse["payload"]): OutboundItem {
  const message = create(SubscribeResponseSchema, { payload });
  return new EncodedItem(message, toBinary(SubscribeResponseSchema, message));
}

class EncodedItem implements OutboundItem {
  readonly grpcFrame: Buffer;
  private connect: Buffer | undefined;
  private ws: Buffer | undefined;

  constructor(
    readonly message: SubscribeResponse,
    readonly bytes: Uint8Array,
  ) {
    this.grpcFrame = envelope(0, bytes);
  }

  get connectFrame(): Buffer {
    this.connect ??= connectFrameOf(this.bytes);
    return this.connect;
  }

  get wsFrame(): Buffer {
    this.ws ??= wsBinaryFrame(this.bytes);
    return this.ws;
  }
}

/** wsBinaryFrame frames bytes as one final, unmasked binary WebSocket message (opcode 2). */
export function wsBinaryFrame(bytes: Uint8Array): Buffer {
  const n = bytes.length;
  const header = n < 126 ? 2 : n < 65_536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(header + n);
  frame[0] = 0x82; // FIN + binary
  if (n < 126) {
    frame[1] = n;
  } else if (n < 65_536) {
    frame[1] = 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(n), 2);
  }
  frame.set(bytes, header);
  return frame;
}

/** connectFrameOf frames SubscribeResponse bytes as ConnectResponse `{ item }`, written into the frame at once. */
function connectFrameOf(bytes: Uint8Array): Buffer {
  const size = 1 + varintSize(bytes.length) + bytes.length;
  const frame = Buffer.allocUnsafe(ENVELOPE_HEADER_BYTES + size);
  writeEnvelopeHeader(frame, 0, size);
  frame[ENVELOPE_HEADER_BYTES] = CONNECT_ITEM_TAG;
  frame.set(bytes, writeVarint(frame, ENVELOPE_HEADER_BYTES + 1, bytes.length));
  return frame;
}

/** CONNECT_ITEM_TAG is the key of ConnectResponse.item (field 2, length-delimited). */
const CONNECT_ITEM_TAG = (2 << 3) | 2;

/**
 * eventItem encodes a group event. The frame is written by the hand-written
 * encoder (event-frame.ts), the only encoding on the fan-out path; the
 * SubscribeResponse object is built only if a transport asks for it
 * (connect-node's JSON and grpc-web-text streams), once, and then shared.
 */
export function eventItem(event: GroupEvent): OutboundItem {
  const frame = encodeEventFrame(event);
  return frame ? new EventItem(event, frame) : outbound({ case: "event", value: eventToProto(event) });
}

/** EventItem is an event's OutboundItem around its pre-encoded frame; `message` is built on first use. */
class EventItem implements OutboundItem {
  readonly bytes: Uint8Array;
  private msg: SubscribeResponse | undefined;
  private connect: Buffer | undefined;
  private ws: Buffer | undefined;

  constructor(
    private readonly event: GroupEvent,
    readonly grpcFrame: Buffer,
  ) {
    this.bytes = grpcFrame.subarray(5);
  }

  get message(): SubscribeResponse {
    this.msg ??= create(SubscribeResponseSchema, { payload: { case: "event", value: eventToProto(this.event) } });
    return this.msg;
  }

  get connectFrame(): Buffer {
    this.connect ??= connectFrameOf(this.bytes);
    return this.connect;
  }

  get wsFrame(): Buffer {
    this.ws ??= wsBinaryFrame(this.bytes);
    return this.ws;
  }
}

/**
 * readMarkerItem encodes a ReadMarker: the stream's user has read `groupId`
 * up to `seq` (MarkRead on one of their devices). One per notice per
 * process, shared by all the user's local streams like an event's item.
 */
export function readMarkerItem(groupId: string, seq: number): OutboundItem {
  return outbound({ case: "readMarker", value: { $typeName: "chat.v1.ReadMarker", groupId, seq: BigInt(seq) } });
}

/** heartbeatItem encodes a heartbeat with the server's time. */
export function heartbeatItem(now: number): OutboundItem {
  return outbound({ case: "heartbeat", value: { $typeName: "chat.v1.Heartbeat", serverTime: timestampFromMs(now) } });
}

/**
 * StreamSink is one client stream as the hub sees it: a transport-specific
 * writer with a buffer the hub can watch. Implementations never block:
 * `write` queues, and the hub ends the stream when `bufferedBytes` passes
 * its cap (DESIGN invariant 5).
 */
export interface StreamSink {
  /** write queues an item; ignored after end. */
  write(item: OutboundItem): void;
  /** bufferedBytes is how much is queued and not yet taken by the transport. */
  readonly bufferedBytes: number;
  /** drained resolves once the buffer is empty (or the sink ended). */
  drained(): Promise<void>;
  /**
   * end finishes the stream. Without an error the queued items are sent
   * first; with one they are dropped at once (freeing the buffer) and the
   * stream fails with that status as soon as the transport can say so.
   * Idempotent: only the first call counts.
   */
  end(error?: ChatError): void;
}
