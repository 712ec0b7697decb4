/**
 * A hand-written encoder for the one message the fan-out encodes per live
 * event: SubscribeResponse { event: GroupEvent }, written straight into its
 * gRPC frame. @bufbuild/protobuf's reflective toBinary (plus building the
 * message object it needs) costs ~24 µs per event on this machine, about
 * 1.2 µs per delivery in a group of 20; this costs ~4 µs per event.
 * event-frame.spec.ts checks it byte for byte against toBinary for every
 * event kind and edge case; the field numbers are those of
 * proto/chat/v1/message.proto, common.proto and stream_service.proto.
 *
 * Fields are written in field-number order and proto3 defaults (empty
 * strings, zero numbers) are left out, as protobuf-es does; message fields
 * (timestamps, user refs, the oneof member) are always written.
 */
import type { ChatMessage, GroupEvent, UserRef } from "../core/model.js";
import { ENVELOPE_HEADER_BYTES, varintSize, writeEnvelopeHeader, writeVarint } from "./grpc-codec.js";
import { roleToProto } from "./proto-convert.js";

// Keys (field number << 3 | wire type): 0 varint, 2 length-delimited.
const SUBSCRIBE_RESPONSE_EVENT = (2 << 3) | 2;
const EVENT_GROUP_ID = (1 << 3) | 2;
const EVENT_SEQ = 2 << 3;
const EVENT_OCCURRED_AT = (3 << 3) | 2;
const EVENT_ACTOR = (4 << 3) | 2;
const EVENT_MESSAGE = (10 << 3) | 2;
const EVENT_MEMBER_ADDED = (11 << 3) | 2;
const EVENT_MEMBER_REMOVED = (12 << 3) | 2;
const EVENT_MEMBER_ROLE_CHANGED = (13 << 3) | 2;
const EVENT_GROUP_RENAMED = (14 << 3) | 2;
const MESSAGE_ID = (1 << 3) | 2;
const MESSAGE_GROUP_ID = (2 << 3) | 2;
const MESSAGE_SEQ = 3 << 3;
const MESSAGE_SENDER = (4 << 3) | 2;
const MESSAGE_TEXT = (5 << 3) | 2;
const MESSAGE_SENT_AT = (6 << 3) | 2;
const MESSAGE_CLIENT_MESSAGE_ID = (7 << 3) | 2;
/** MemberAdded, MemberRemoved, MemberRoleChanged: member = 1, role = 2; GroupRenamed: name = 1. */
const MEMBER = (1 << 3) | 2;
const ROLE = 2 << 3;
const NAME = (1 << 3) | 2;
const USER_ID = (1 << 3) | 2;
const USERNAME = (2 << 3) | 2;
const SECONDS = 1 << 3;
const NANOS = 2 << 3;

/**
 * encodeEventFrame returns the gRPC frame (flag 0, 32-bit big-endian length,
 * then the bytes) of SubscribeResponse { event }, or undefined when a number
 * of the event is outside what this encoder handles (a negative or
 * fractional time or seq); the caller then uses the generic encoder.
 */
export function encodeEventFrame(event: GroupEvent): Buffer | undefined {
  if (!isUint(event.seq) || !isUint(event.at)) return undefined;
  const body = event.body;
  if (body.type === "message" && (!isUint(body.message.seq) || !isUint(body.message.sentAt))) return undefined;

  // Sizes, innermost first (the strings' UTF-8 lengths are measured once).
  const groupId = utf8Length(event.groupId);
  const occurredAt = timestampSize(event.at);
  const actor = userRefSize(event.actor);
  let kind: number;
  let kindKey: number;
  let message: MessageSizes | undefined;
  let member = 0;
  let role = 0;
  let name = 0;
  switch (body.type) {
    case "message": {
      message = messageSizes(body.message);
      kind = message.total;
      kindKey = EVENT_MESSAGE;
      break;
    }
    case "member_added":
    case "member_role_changed":
      member = userRefSize(body.member);
      role = roleToProto(body.role);
      kind = 1 + varintSize(member) + member + (role === 0 ? 0 : 1 + varintSize(role));
      kindKey = body.type === "member_added" ? EVENT_MEMBER_ADDED : EVENT_MEMBER_ROLE_CHANGED;
      break;
    case "member_removed":
      member = userRefSize(body.member);
      kind = 1 + varintSize(member) + member;
      kindKey = EVENT_MEMBER_REMOVED;
      break;
    case "group_renamed":
      name = utf8Length(body.name);
      kind = stringFieldSize(name);
      kindKey = EVENT_GROUP_RENAMED;
      break;
  }
  const eventSize =
    stringFieldSize(groupId) +
    (event.seq === 0 ? 0 : 1 + varintSize(event.seq)) +
    1 +
    varintSize(occurredAt) +
    occurredAt +
    1 +
    varintSize(actor) +
    actor +
    1 +
    varintSize(kind) +
    kind;
  const size = 1 + varintSize(eventSize) + eventSize;

  const buf = Buffer.allocUnsafe(ENVELOPE_HEADER_BYTES + size);
  writeEnvelopeHeader(buf, 0, size);
  let p = ENVELOPE_HEADER_BYTES;
  buf[p++] = SUBSCRIBE_RESPONSE_EVENT;
  p = writeVarint(buf, p, eventSize);
  p = writeString(buf, p, EVENT_GROUP_ID, event.groupId, groupId);
  if (event.seq !== 0) {
    buf[p++] = EVENT_SEQ;
    p = writeVarint(buf, p, event.seq);
  }
  buf[p++] = EVENT_OCCURRED_AT;
  p = writeVarint(buf, p, occurredAt);
  p = writeTimestamp(buf, p, event.at);
  buf[p++] = EVENT_ACTOR;
  p = writeVarint(buf, p, actor);
  p = writeUserRef(buf, p, event.actor);
  buf[p++] = kindKey;
  p = writeVarint(buf, p, kind);
  switch (body.type) {
    case "message":
      p = writeMessage(buf, p, body.message, message!);
      break;
    case "member_added":
    case "member_role_changed":
    case "member_removed":
      buf[p++] = MEMBER;
      p = writeVarint(buf, p, member);
      p = writeUserRef(buf, p, body.member);
      if (role !== 0) {
        buf[p++] = ROLE;
        p = writeVarint(buf, p, role);
      }
      break;
    case "group_renamed":
      p = writeString(buf, p, NAME, body.name, name);
      break;
  }
  if (p !== buf.length) throw new Error(`event frame: wrote ${p} of ${buf.length} bytes`);
  return buf;
}

/**
 * encodeMessage returns chat.v1.Message as protobuf-es writes it (history
 * pages reuse it), or undefined for numbers outside what this encoder
 * handles; the caller then uses the generic encoder. The bytes are in memory
 * of their own, not a slice of Buffer's shared pool, so a cache can keep them
 * without keeping a pool slab alive.
 */
export function encodeMessage(m: ChatMessage): Buffer | undefined {
  if (!isUint(m.seq) || !isUint(m.sentAt)) return undefined;
  const sizes = messageSizes(m);
  const buf = Buffer.allocUnsafeSlow(sizes.total);
  const p = writeMessage(buf, 0, m, sizes);
  if (p !== buf.length) throw new Error(`message: wrote ${p} of ${buf.length} bytes`);
  return buf;
}

/** MessageSizes are a Message's encoded field sizes (strings' UTF-8 lengths measured once) and its total. */
interface MessageSizes {
  readonly id: number;
  readonly groupId: number;
  readonly text: number;
  readonly clientMessageId: number;
  readonly sender: number;
  readonly sentAt: number;
  readonly total: number;
}

function messageSizes(m: ChatMessage): MessageSizes {
  const id = utf8Length(m.id);
  const groupId = utf8Length(m.groupId);
  const text = utf8Length(m.text);
  const clientMessageId = utf8Length(m.clientMessageId);
  const sender = userRefSize(m.sender);
  const sentAt = timestampSize(m.sentAt);
  const total =
    stringFieldSize(id) +
    stringFieldSize(groupId) +
    (m.seq === 0 ? 0 : 1 + varintSize(m.seq)) +
    1 +
    varintSize(sender) +
    sender +
    stringFieldSize(text) +
    1 +
    varintSize(sentAt) +
    sentAt +
    stringFieldSize(clientMessageId);
  return { id, groupId, text, clientMessageId, sender, sentAt, total };
}

function writeMessage(buf: Buffer, p: number, m: ChatMessage, s: MessageSizes): number {
  p = writeString(buf, p, MESSAGE_ID, m.id, s.id);
  p = writeString(buf, p, MESSAGE_GROUP_ID, m.groupId, s.groupId);
  if (m.seq !== 0) {
    buf[p++] = MESSAGE_SEQ;
    p = writeVarint(buf, p, m.seq);
  }
  buf[p++] = MESSAGE_SENDER;
  p = writeVarint(buf, p, s.sender);
  p = writeUserRef(buf, p, m.sender);
  p = writeString(buf, p, MESSAGE_TEXT, m.text, s.text);
  buf[p++] = MESSAGE_SENT_AT;
  p = writeVarint(buf, p, s.sentAt);
  p = writeTimestamp(buf, p, m.sentAt);
  return writeString(buf, p, MESSAGE_CLIENT_MESSAGE_ID, m.clientMessageId, s.clientMessageId);
}

function isUint(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** SHORT is the string length up to which a JS loop beats a native call (ids, names). */
const SHORT = 64;

/** utf8Length is the UTF-8 size of a string; short ASCII strings are measured without a native call. */
function utf8Length(s: string): number {
  const n = s.length;
  if (n > SHORT) return Buffer.byteLength(s, "utf8");
  for (let i = 0; i < n; i++) if (s.charCodeAt(i) > 0x7f) return Buffer.byteLength(s, "utf8");
  return n;
}

/** stringFieldSize is the size of a string field of `bytes` UTF-8 bytes (0: not written). */
function stringFieldSize(bytes: number): number {
  return bytes === 0 ? 0 : 1 + varintSize(bytes) + bytes;
}

function userRefSize(u: UserRef): number {
  return stringFieldSize(utf8Length(u.id)) + stringFieldSize(utf8Length(u.username));
}

/** timestampSize is the size of google.protobuf.Timestamp { seconds, nanos } for a time in ms (≥ 0, integer). */
function timestampSize(ms: number): number {
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  return (seconds === 0 ? 0 : 1 + varintSize(seconds)) + (nanos === 0 ? 0 : 1 + varintSize(nanos));
}

function writeTimestamp(buf: Buffer, p: number, ms: number): number {
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  let q = p;
  if (seconds !== 0) {
    buf[q++] = SECONDS;
    q = writeVarint(buf, q, seconds);
  }
  if (nanos !== 0) {
    buf[q++] = NANOS;
    q = writeVarint(buf, q, nanos);
  }
  return q;
}

function writeUserRef(buf: Buffer, p: number, u: UserRef): number {
  const q = writeString(buf, p, USER_ID, u.id, utf8Length(u.id));
  return writeString(buf, q, USERNAME, u.username, utf8Length(u.username));
}

function writeString(buf: Buffer, p: number, key: number, s: string, bytes: number): number {
  if (bytes === 0) return p;
  buf[p] = key;
  const q = writeVarint(buf, p + 1, bytes);
  const n = s.length;
  if (bytes !== n || n > SHORT) return q + buf.write(s, q, bytes, "utf8");
  // Short and ASCII (as many bytes as UTF-16 units): copy the codes.
  for (let i = 0; i < n; i++) buf[q + i] = s.charCodeAt(i);
  return q + n;
}
