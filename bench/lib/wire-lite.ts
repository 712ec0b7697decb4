/**
 * Hand-written protobuf encoding and decoding of the few chat.v1 messages
 * the load generators touch, so a delivery costs a few field reads and no
 * object graph. Each function here is checked against @bufbuild/protobuf
 * (toBinary / fromBinary with the generated schemas) in
 * bench/lean-reader.spec.ts.
 *
 * Field numbers (proto/chat/v1/*.proto):
 *   SubscribeResponse { ready = 1; event = 2; heartbeat = 3; cursor_reset = 4; group_joined = 5; read_marker = 6 }
 *   StreamReady { repeated GroupPosition groups = 1; heartbeat_interval_seconds = 2 }
 *   GroupPosition { group_id = 1; seq = 2; head_seq = 3; epoch = 4 }
 *   CursorReset { group_id = 1; requested_seq = 2; first_available_seq = 3; epoch = 4 }
 *   GroupJoined { group_id = 1; epoch = 2 }
 *   ReadMarker { group_id = 1; seq = 2 }
 *   GroupEvent { group_id = 1; seq = 2; occurred_at = 3; actor = 4; message = 10; member_added = 11; ... }
 *   Message { message_id = 1; group_id = 2; seq = 3; sender = 4; text = 5; sent_at = 6; client_message_id = 7 }
 *   SubscribeRequest { repeated GroupCursor cursors = 1 }
 *   GroupCursor { group_id = 1; seq = 2; epoch = 3 }
 *   SendMessageRequest { group_id = 1; text = 2; client_message_id = 3 }
 *   SendMessageResponse { message = 1; duplicate = 2 }
 *   ListMessagesRequest { group_id = 1; limit = 2; before_seq = 3; after_seq = 4 }
 *   ListMessagesResponse { repeated messages = 1; has_more = 2; head_seq = 3; first_retained_seq = 4 }
 */

// ---------------------------------------------------------------- reading

/** Cursor position shared by the read helpers (single-threaded, so a module variable is safe and allocation-free). */
let pos = 0;

function varint(buf: Uint8Array): number {
  let b = buf[pos++] as number;
  if (b < 0x80) return b;
  let value = b & 0x7f;
  let mul = 0x80;
  for (let i = 0; i < 9; i++) {
    b = buf[pos++] as number;
    if (b === undefined) throw new RangeError("truncated varint");
    value += (b & 0x7f) * mul;
    if (b < 0x80) return value;
    mul *= 0x80;
  }
  throw new RangeError("varint too long");
}

function skip(buf: Uint8Array, wireType: number): void {
  switch (wireType) {
    case 0:
      varint(buf);
      return;
    case 1:
      pos += 8;
      return;
    case 2: {
      const len = varint(buf);
      pos += len;
      return;
    }
    case 5:
      pos += 4;
      return;
    default:
      throw new RangeError(`unsupported wire type ${wireType}`);
  }
}

function latin1(buf: Buffer, start: number, end: number): string {
  return buf.toString("latin1", start, end);
}

function utf8(buf: Buffer, start: number, end: number): string {
  return buf.toString("utf8", start, end);
}

/** ItemKind names the payload of a SubscribeResponse. */
export type ItemKind = "ready" | "event" | "heartbeat" | "cursorReset" | "groupJoined" | "readMarker" | "empty";

/** Position is one group's start position in a StreamReady. */
export interface Position {
  groupId: string;
  seq: number;
  headSeq: number;
  epoch: string;
}

/**
 * LeanItem is a decoded SubscribeResponse, reduced to what a load generator
 * needs. One instance is reused for every item of a stream: copy what you
 * keep. For events, the message text stays in the frame: [textStart,
 * textEnd) of `buf` (textStart = -1 when the event is not a message).
 */
export class LeanItem {
  kind: ItemKind = "empty";
  /** event, cursorReset, groupJoined, readMarker: the group. */
  groupId = "";
  /** event: its seq; readMarker: the caller's read marker of the group. */
  seq = 0;
  /** event: the event's kind field number (10 message, 11 member added, 12 member removed, 13 role changed, 14 renamed); 0 if none. */
  eventField = 0;
  /** event carrying a message: the text's byte range in `buf`. */
  buf: Buffer = EMPTY;
  textStart = -1;
  textEnd = -1;
  /** ready: the group positions; cursorReset: requested and first available seqs. */
  positions: Position[] = [];
  heartbeatIntervalSeconds = 0;
  requestedSeq = 0;
  firstAvailableSeq = 0;
  epoch = "";

  /** text decodes the message text (UTF-8), or undefined when the event is not a message. */
  text(): string | undefined {
    return this.textStart < 0 ? undefined : utf8(this.buf, this.textStart, this.textEnd);
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * decodeSubscribeResponse decodes one SubscribeResponse payload (the bytes
 * of a gRPC frame after its 5-byte header) from buf[start, end) into `out`.
 * Group ids are decoded as latin1 (they are ASCII); the text is left in the
 * buffer. Unknown fields are skipped, as protobuf requires.
 */
export function decodeSubscribeResponse(buf: Buffer, start: number, end: number, out: LeanItem): LeanItem {
  out.kind = "empty";
  out.groupId = "";
  out.seq = 0;
  out.eventField = 0;
  out.textStart = -1;
  out.textEnd = -1;
  out.buf = buf;
  pos = start;
  while (pos < end) {
    const tag = varint(buf);
    const field = tag >>> 3;
    const wt = tag & 7;
    if (wt !== 2 || field < 1 || field > 6) {
      skip(buf, wt);
      continue;
    }
    const len = varint(buf);
    const subEnd = pos + len;
    if (subEnd > end) throw new RangeError("truncated SubscribeResponse");
    switch (field) {
      case 1:
        out.kind = "ready";
        decodeReady(buf, subEnd, out);
        break;
      case 2:
        out.kind = "event";
        decodeEvent(buf, subEnd, out);
        break;
      case 3:
        out.kind = "heartbeat";
        break;
      case 4:
        out.kind = "cursorReset";
        decodeCursorReset(buf, subEnd, out);
        break;
      case 5:
        out.kind = "groupJoined";
        decodeGroupJoined(buf, subEnd, out);
        break;
      case 6:
        out.kind = "readMarker";
        decodeReadMarker(buf, subEnd, out);
        break;
    }
    pos = subEnd;
  }
  if (pos !== end) throw new RangeError("SubscribeResponse overran its frame");
  return out;
}

function decodeReady(buf: Buffer, end: number, out: LeanItem): void {
  out.positions = [];
  out.heartbeatIntervalSeconds = 0;
  while (pos < end) {
    const tag = varint(buf);
    if (tag === ((1 << 3) | 2)) {
      const len = varint(buf);
      const subEnd = pos + len;
      const p: Position = { groupId: "", seq: 0, headSeq: 0, epoch: "" };
      while (pos < subEnd) {
        const t = varint(buf);
        if (t === ((1 << 3) | 2)) {
          const l = varint(buf);
          p.groupId = latin1(buf, pos, pos + l);
          pos += l;
        } else if (t === ((2 << 3) | 0)) p.seq = varint(buf);
        else if (t === ((3 << 3) | 0)) p.headSeq = varint(buf);
        else if (t === ((4 << 3) | 2)) {
          const l = varint(buf);
          p.epoch = utf8(buf, pos, pos + l);
          pos += l;
        } else skip(buf, t & 7);
      }
      out.positions.push(p);
    } else if (tag === ((2 << 3) | 0)) out.heartbeatIntervalSeconds = varint(buf);
    else skip(buf, tag & 7);
  }
}

function decodeEvent(buf: Buffer, end: number, out: LeanItem): void {
  while (pos < end) {
    const tag = varint(buf);
    const field = tag >>> 3;
    const wt = tag & 7;
    if (field === 1 && wt === 2) {
      const l = varint(buf);
      out.groupId = latin1(buf, pos, pos + l);
      pos += l;
    } else if (field === 2 && wt === 0) {
      out.seq = varint(buf);
    } else if (field >= 10 && field <= 14 && wt === 2) {
      out.eventField = field;
      const l = varint(buf);
      const subEnd = pos + l;
      if (field === 10) decodeMessageText(buf, subEnd, out);
      pos = subEnd;
    } else skip(buf, wt);
  }
}

function decodeMessageText(buf: Buffer, end: number, out: LeanItem): void {
  // Proto3 omits an empty string; a message event then has text "".
  out.textStart = pos;
  out.textEnd = pos;
  while (pos < end) {
    const tag = varint(buf);
    if (tag === ((5 << 3) | 2)) {
      const l = varint(buf);
      out.textStart = pos;
      out.textEnd = pos + l;
      pos += l;
    } else skip(buf, tag & 7);
  }
}

function decodeCursorReset(buf: Buffer, end: number, out: LeanItem): void {
  out.requestedSeq = 0;
  out.firstAvailableSeq = 0;
  out.epoch = "";
  while (pos < end) {
    const tag = varint(buf);
    if (tag === ((1 << 3) | 2)) {
      const l = varint(buf);
      out.groupId = latin1(buf, pos, pos + l);
      pos += l;
    } else if (tag === ((2 << 3) | 0)) out.requestedSeq = varint(buf);
    else if (tag === ((3 << 3) | 0)) out.firstAvailableSeq = varint(buf);
    else if (tag === ((4 << 3) | 2)) {
      const l = varint(buf);
      out.epoch = utf8(buf, pos, pos + l);
      pos += l;
    } else skip(buf, tag & 7);
  }
}

function decodeGroupJoined(buf: Buffer, end: number, out: LeanItem): void {
  out.epoch = "";
  while (pos < end) {
    const tag = varint(buf);
    if (tag === ((1 << 3) | 2)) {
      const l = varint(buf);
      out.groupId = latin1(buf, pos, pos + l);
      pos += l;
    } else if (tag === ((2 << 3) | 2)) {
      const l = varint(buf);
      out.epoch = utf8(buf, pos, pos + l);
      pos += l;
    } else skip(buf, tag & 7);
  }
}

function decodeReadMarker(buf: Buffer, end: number, out: LeanItem): void {
  while (pos < end) {
    const tag = varint(buf);
    if (tag === ((1 << 3) | 2)) {
      const l = varint(buf);
      out.groupId = latin1(buf, pos, pos + l);
      pos += l;
    } else if (tag === ((2 << 3) | 0)) out.seq = varint(buf);
    else skip(buf, tag & 7);
  }
}

/** SendResult is what a load generator needs from a SendMessageResponse. */
export interface SendResult {
  seq: number;
  duplicate: boolean;
}

/** decodeSendMessageResponse reads message.seq and duplicate from a SendMessageResponse payload. */
export function decodeSendMessageResponse(buf: Buffer, start = 0, end = buf.length): SendResult {
  const out: SendResult = { seq: 0, duplicate: false };
  pos = start;
  while (pos < end) {
    const tag = varint(buf);
    if (tag === ((1 << 3) | 2)) {
      const l = varint(buf);
      const subEnd = pos + l;
      while (pos < subEnd) {
        const t = varint(buf);
        if (t === ((3 << 3) | 0)) out.seq = varint(buf);
        else skip(buf, t & 7);
      }
    } else if (tag === ((2 << 3) | 0)) out.duplicate = varint(buf) !== 0;
    else skip(buf, tag & 7);
  }
  return out;
}

/** ListResult is what a load generator needs from a ListMessagesResponse. */
export interface ListResult {
  messages: number;
  firstSeq: number;
  lastSeq: number;
  hasMore: boolean;
  headSeq: number;
}

/** decodeListMessagesResponse counts the messages of a ListMessagesResponse and reads its paging fields. */
export function decodeListMessagesResponse(buf: Buffer, start = 0, end = buf.length): ListResult {
  const out: ListResult = { messages: 0, firstSeq: 0, lastSeq: 0, hasMore: false, headSeq: 0 };
  pos = start;
  while (pos < end) {
    const tag = varint(buf);
    if (tag === ((1 << 3) | 2)) {
      const l = varint(buf);
      const subEnd = pos + l;
      out.messages++;
      while (pos < subEnd) {
        const t = varint(buf);
        if (t === ((3 << 3) | 0)) {
          const seq = varint(buf);
          if (out.firstSeq === 0) out.firstSeq = seq;
          out.lastSeq = seq;
        } else skip(buf, t & 7);
      }
    } else if (tag === ((2 << 3) | 0)) out.hasMore = varint(buf) !== 0;
    else if (tag === ((3 << 3) | 0)) out.headSeq = varint(buf);
    else skip(buf, tag & 7);
  }
  return out;
}

// ---------------------------------------------------------------- writing

class Writer {
  private readonly parts: number[] = [];
  private readonly chunks: (Uint8Array | number[])[] = [];

  varint(v: number): this {
    let n = v;
    while (n > 0x7f) {
      this.parts.push((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    this.parts.push(n);
    return this;
  }

  tag(field: number, wireType: number): this {
    return this.varint(field * 8 + wireType);
  }

  bytes(b: Uint8Array): this {
    this.varint(b.length);
    this.flush();
    this.chunks.push(b);
    return this;
  }

  string(s: string): this {
    return this.bytes(Buffer.from(s, "utf8"));
  }

  private flush(): void {
    if (this.parts.length > 0) this.chunks.push(this.parts.splice(0));
  }

  finish(): Buffer {
    this.flush();
    return Buffer.concat(this.chunks.map((c) => (c instanceof Uint8Array ? c : Uint8Array.from(c))));
  }
}

/** CursorInit is a resume position for encodeSubscribeRequest. */
export interface CursorInit {
  groupId: string;
  seq: number;
  epoch?: string;
}

/** encodeSubscribeRequest encodes a SubscribeRequest with the given cursors (none: every group from its head). */
export function encodeSubscribeRequest(cursors: readonly CursorInit[] = []): Buffer {
  const w = new Writer();
  for (const c of cursors) {
    const inner = new Writer();
    if (c.groupId !== "") inner.tag(1, 2).string(c.groupId);
    if (c.seq !== 0) inner.tag(2, 0).varint(c.seq);
    if (c.epoch) inner.tag(3, 2).string(c.epoch);
    w.tag(1, 2).bytes(inner.finish());
  }
  return w.finish();
}

/** encodeSendMessageRequest encodes a SendMessageRequest. */
export function encodeSendMessageRequest(groupId: string, text: string, clientMessageId: string): Buffer {
  const w = new Writer();
  if (groupId !== "") w.tag(1, 2).string(groupId);
  if (text !== "") w.tag(2, 2).string(text);
  if (clientMessageId !== "") w.tag(3, 2).string(clientMessageId);
  return w.finish();
}

/** encodeListMessagesRequest encodes a ListMessagesRequest (newest page without an anchor). */
export function encodeListMessagesRequest(groupId: string, limit: number, anchor?: { beforeSeq: number } | { afterSeq: number }): Buffer {
  const w = new Writer();
  if (groupId !== "") w.tag(1, 2).string(groupId);
  if (limit !== 0) w.tag(2, 0).varint(limit);
  if (anchor && "beforeSeq" in anchor) w.tag(3, 0).varint(anchor.beforeSeq);
  if (anchor && "afterSeq" in anchor) w.tag(4, 0).varint(anchor.afterSeq);
  return w.finish();
}

/** grpcFrame prefixes a message with the 5-byte gRPC frame header (uncompressed). */
export function grpcFrame(payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + payload.length);
  frame[0] = 0;
  frame.writeUInt32BE(payload.length, 1);
  frame.set(payload, 5);
  return frame;
}

// ---------------------------------------------------------------- bench text

/**
 * The bench's message text: "<send time in µs since the epoch> <phase> "
 * padded with "x" to the requested size. The send time is the sender's
 * scheduled (intended) send time, performance.timeOrigin + performance.now().
 */
export function benchText(sendTimeUs: number, phase: number, bytes: number): string {
  const head = `${Math.round(sendTimeUs)} ${phase} `;
  return head.length >= bytes ? head : head + "x".repeat(bytes - head.length);
}

/** Stamp is the send time and phase read back from a bench text. */
export interface Stamp {
  sendTimeUs: number;
  phase: number;
}

/**
 * readStamp parses the send time and phase from a bench text in buf[start,
 * end) without building a string; returns false when the text is not a
 * bench text (then `out` is unchanged).
 */
export function readStamp(buf: Uint8Array, start: number, end: number, out: Stamp): boolean {
  let i = start;
  let t = 0;
  let digits = 0;
  while (i < end) {
    const c = buf[i] as number;
    if (c === 0x20) break;
    if (c < 0x30 || c > 0x39) return false;
    t = t * 10 + (c - 0x30);
    digits++;
    i++;
  }
  if (digits === 0 || i >= end) return false;
  i++;
  let phase = 0;
  let pd = 0;
  while (i < end) {
    const c = buf[i] as number;
    if (c === 0x20) break;
    if (c < 0x30 || c > 0x39) return false;
    phase = phase * 10 + (c - 0x30);
    pd++;
    i++;
  }
  if (pd === 0) return false;
  out.sendTimeUs = t;
  out.phase = phase;
  return true;
}

/** nowUs is the wall-clock time in microseconds with sub-millisecond precision, comparable across processes. */
export function nowUs(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}
