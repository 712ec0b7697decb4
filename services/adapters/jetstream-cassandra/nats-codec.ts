/**
 * The wire encoding of what the NATS bus carries: GroupEvent and UserNotice
 * as UTF-8 JSON, one value per NATS message. Defined here and nowhere else.
 *
 * Decoding never trusts the bytes: it checks every field's type and rebuilds
 * the value from known fields only (unknown fields are ignored, so a newer
 * writer may add fields). Anything malformed yields `undefined`, which the bus
 * drops and counts.
 */
import type { ChatMessage, EventBody, GroupEvent, Role, UserRef } from "../../core/model.js";
import type { UserNotice } from "../../core/ports.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** encodeEvent returns the wire bytes of a group event (UTF-8 JSON). */
export function encodeEvent(event: GroupEvent): Uint8Array {
  return encoder.encode(JSON.stringify(event));
}

/**
 * decodeEvent parses bytes written by {@link encodeEvent}; returns undefined
 * if they are not valid UTF-8 JSON of a well-formed GroupEvent (positive
 * integer seq, known body type, every field of the right type).
 */
export function decodeEvent(bytes: Uint8Array): GroupEvent | undefined {
  const v = parse(bytes);
  if (!isObject(v)) return undefined;
  const { groupId, seq, at, actor, body } = v;
  if (!isString(groupId) || !isSeq(seq) || !isTime(at)) return undefined;
  const a = userRef(actor);
  const b = eventBody(body);
  if (!a || !b) return undefined;
  return { groupId, seq, at, actor: a, body: b };
}

/** encodeNotice returns the wire bytes of a user notice (UTF-8 JSON). */
export function encodeNotice(notice: UserNotice): Uint8Array {
  return encoder.encode(JSON.stringify(notice));
}

/** decodeNotice parses bytes written by {@link encodeNotice}; returns undefined if they are not a well-formed UserNotice. */
export function decodeNotice(bytes: Uint8Array): UserNotice | undefined {
  const v = parse(bytes);
  if (!isObject(v)) return undefined;
  switch (v.type) {
    case "joined":
      return isString(v.groupId) && isSeq(v.seq) ? { type: "joined", groupId: v.groupId, seq: v.seq } : undefined;
    case "session_revoked":
      return isString(v.sessionId) ? { type: "session_revoked", sessionId: v.sessionId } : undefined;
    case "read":
      return isString(v.groupId) && isSeq(v.seq) ? { type: "read", groupId: v.groupId, seq: v.seq } : undefined;
    default:
      return undefined;
  }
}

type Obj = Record<string, unknown>;

function parse(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch {
    return undefined;
  }
}

function isObject(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isString(v: unknown): v is string {
  return typeof v === "string";
}

function isSeq(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 1;
}

function isTime(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v);
}

function isRole(v: unknown): v is Role {
  return v === "member" || v === "admin" || v === "owner";
}

function userRef(v: unknown): UserRef | undefined {
  if (!isObject(v) || !isString(v.id) || !isString(v.username)) return undefined;
  return { id: v.id, username: v.username };
}

function chatMessage(v: unknown): ChatMessage | undefined {
  if (!isObject(v)) return undefined;
  const { id, groupId, seq, sender, text, sentAt, clientMessageId } = v;
  if (!isString(id) || !isString(groupId) || !isSeq(seq) || !isString(text) || !isTime(sentAt) || !isString(clientMessageId)) {
    return undefined;
  }
  const s = userRef(sender);
  if (!s) return undefined;
  return { id, groupId, seq, sender: s, text, sentAt, clientMessageId };
}

/**
 * BODY_DECODERS has one decoder per EventBody variant; the mapped type makes
 * the compiler reject a new variant that has no decoder here.
 */
const BODY_DECODERS: { readonly [K in EventBody["type"]]: (v: Obj) => Extract<EventBody, { type: K }> | undefined } = {
  message: (v) => {
    const message = chatMessage(v.message);
    return message && { type: "message", message };
  },
  member_added: (v) => {
    const member = userRef(v.member);
    return member && isRole(v.role) ? { type: "member_added", member, role: v.role } : undefined;
  },
  member_removed: (v) => {
    const member = userRef(v.member);
    return member && { type: "member_removed", member };
  },
  member_role_changed: (v) => {
    const member = userRef(v.member);
    return member && isRole(v.role) ? { type: "member_role_changed", member, role: v.role } : undefined;
  },
  group_renamed: (v) => (isString(v.name) ? { type: "group_renamed", name: v.name } : undefined),
};

function eventBody(v: unknown): EventBody | undefined {
  if (!isObject(v) || !isString(v.type) || !Object.hasOwn(BODY_DECODERS, v.type)) return undefined;
  return BODY_DECODERS[v.type as EventBody["type"]](v);
}
