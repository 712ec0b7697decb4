/**
 * The one mapping between a GroupEvent and the columns of `events_by_group`.
 *
 * A message keeps its fields in columns (`message_id`, `message_text`,
 * `client_message_id`; the sender is the actor and `at` is the sent time, as
 * in the SQLite store), so history reads need no JSON. Every other event keeps
 * its body as JSON in `payload`. `kind` is the body's `type` in both cases.
 */
import { ChatError } from "../../core/errors.js";
import type { EventBody, GroupEvent, Role, UserRef } from "../../core/model.js";

/** EventColumns are the non-key columns of one `events_by_group` row (`group_id`, `bucket`, `seq` are the key). */
export interface EventColumns {
  readonly kind: EventBody["type"];
  readonly at: number;
  readonly actor_id: string;
  readonly actor_name: string;
  readonly message_id: string | null;
  readonly message_text: string | null;
  readonly client_message_id: string | null;
  readonly payload: string | null;
}

/** EVENT_COLUMN_NAMES lists the EventColumns in the order the prepared statements use. */
export const EVENT_COLUMN_NAMES = [
  "kind",
  "at",
  "actor_id",
  "actor_name",
  "message_id",
  "message_text",
  "client_message_id",
  "payload",
] as const satisfies readonly (keyof EventColumns)[];

/**
 * encodeEvent maps an event to its columns. A message event must be
 * self-consistent (message.groupId/seq/sender/sentAt equal the event's
 * groupId/seq/actor/at), since those fields are stored once; otherwise it
 * throws ChatError Internal rather than store something that reads back
 * differently.
 */
export function encodeEvent(e: GroupEvent): EventColumns {
  const b = e.body;
  const common = { kind: b.type, at: e.at, actor_id: e.actor.id, actor_name: e.actor.username };
  if (b.type === "message") {
    const m = b.message;
    if (
      m.groupId !== e.groupId ||
      m.seq !== e.seq ||
      m.sentAt !== e.at ||
      m.sender.id !== e.actor.id ||
      m.sender.username !== e.actor.username
    ) {
      throw new ChatError("Internal", `message event ${e.groupId}/${e.seq} disagrees with its message`);
    }
    return { ...common, message_id: m.id, message_text: m.text, client_message_id: m.clientMessageId, payload: null };
  }
  return { ...common, message_id: null, message_text: null, client_message_id: null, payload: JSON.stringify(b) };
}

/**
 * decodeEvent rebuilds the event stored at (groupId, seq) from its columns.
 * Throws ChatError Internal if the row is not one encodeEvent could write
 * (unknown kind, missing message columns, malformed payload).
 */
export function decodeEvent(groupId: string, seq: number, c: EventColumns): GroupEvent {
  const actor: UserRef = { id: c.actor_id, username: c.actor_name };
  if (c.kind === "message") {
    if (c.message_id === null || c.message_text === null || c.client_message_id === null) {
      throw corrupt(groupId, seq, "message columns missing");
    }
    return {
      groupId,
      seq,
      at: c.at,
      actor,
      body: {
        type: "message",
        message: {
          id: c.message_id,
          groupId,
          seq,
          sender: actor,
          text: c.message_text,
          sentAt: c.at,
          clientMessageId: c.client_message_id,
        },
      },
    };
  }
  return { groupId, seq, at: c.at, actor, body: decodePayload(groupId, seq, c.kind, c.payload) };
}

function decodePayload(groupId: string, seq: number, kind: string, payload: string | null): EventBody {
  let v: unknown;
  try {
    v = JSON.parse(payload ?? "null");
  } catch (e) {
    throw corrupt(groupId, seq, "payload is not JSON", e);
  }
  if (!isRecord(v) || v.type !== kind) throw corrupt(groupId, seq, `payload type does not match kind ${kind}`);
  switch (kind) {
    case "member_added":
    case "member_role_changed": {
      const member = userRef(v.member);
      const role = v.role;
      if (!member || !isRole(role)) throw corrupt(groupId, seq, `bad ${kind} payload`);
      return { type: kind, member, role };
    }
    case "member_removed": {
      const member = userRef(v.member);
      if (!member) throw corrupt(groupId, seq, "bad member_removed payload");
      return { type: kind, member };
    }
    case "group_renamed": {
      if (typeof v.name !== "string") throw corrupt(groupId, seq, "bad group_renamed payload");
      return { type: kind, name: v.name };
    }
    default:
      throw corrupt(groupId, seq, `unknown event kind ${JSON.stringify(kind)}`);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isRole(v: unknown): v is Role {
  return v === "member" || v === "admin" || v === "owner";
}

function userRef(v: unknown): UserRef | undefined {
  return isRecord(v) && typeof v.id === "string" && typeof v.username === "string"
    ? { id: v.id, username: v.username }
    : undefined;
}

function corrupt(groupId: string, seq: number, what: string, cause?: unknown): ChatError {
  return new ChatError("Internal", `stored event ${groupId}/${seq} is corrupt: ${what}`, { cause });
}
