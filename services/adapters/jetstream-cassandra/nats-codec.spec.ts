import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newId } from "../../core/ids.js";
import type { ChatMessage, EventBody, GroupEvent, UserRef } from "../../core/model.js";
import type { UserNotice } from "../../core/ports.js";
import { decodeEvent, decodeNotice, encodeEvent, encodeNotice } from "./nats-codec.js";

const actor: UserRef = { id: newId(), username: "alice" };
const member: UserRef = { id: newId(), username: "bob" };
const groupId = newId();

const MESSAGE: ChatMessage = { id: newId(), groupId, seq: 1, sender: actor, text: "hi ✓ \"q\" \n", sentAt: 1_700_000_000_001, clientMessageId: "c1" };

/** One body of every EventBody variant; the Record type makes a new variant a compile error here too. */
const BODIES: Record<EventBody["type"], EventBody> = {
  message: { type: "message", message: MESSAGE },
  member_added: { type: "member_added", member, role: "admin" },
  member_removed: { type: "member_removed", member },
  member_role_changed: { type: "member_role_changed", member, role: "owner" },
  group_renamed: { type: "group_renamed", name: "Ünïcödé 🚀" },
};

function event(body: EventBody, seq = 1): GroupEvent {
  return { groupId, seq, at: 1_700_000_000_000, actor, body };
}

function bytes(v: unknown): Uint8Array {
  return new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));
}

describe("event codec", () => {
  it("round-trips every event body variant", () => {
    for (const body of Object.values(BODIES)) {
      const e = event(body);
      assert.deepEqual(decodeEvent(encodeEvent(e)), e, body.type);
    }
  });

  it("round-trips every notice variant", () => {
    const notices: UserNotice[] = [
      { type: "joined", groupId, seq: 7 },
      { type: "session_revoked", sessionId: newId() },
      { type: "read", groupId, seq: 12 },
    ];
    for (const n of notices) assert.deepEqual(decodeNotice(encodeNotice(n)), n);
  });

  it("ignores unknown fields (a newer writer may add some)", () => {
    const e = event(BODIES.group_renamed);
    assert.deepEqual(decodeEvent(bytes({ ...e, extra: 1, body: { ...e.body, more: true } })), e);
  });

  it("rejects malformed events", () => {
    const good = event(BODIES.message) as unknown as Record<string, unknown>;
    const bad: unknown[] = [
      "not json",
      "null",
      "[]",
      new Uint8Array([0xff, 0xfe]),
      { ...good, seq: 0 },
      { ...good, seq: 1.5 },
      { ...good, seq: "1" },
      { ...good, groupId: 1 },
      { ...good, at: "now" },
      { ...good, actor: { id: "x" } },
      { ...good, body: { type: "unknown" } },
      { ...good, body: { type: "toString" } },
      { ...good, body: { type: "member_added", member, role: "god" } },
      { ...good, body: { type: "message", message: { ...MESSAGE, text: 3 } } },
      { ...good, body: { type: "message", message: { ...MESSAGE, seq: 0 } } },
      { ...good, body: { type: "message", message: { ...MESSAGE, sender: null } } },
      { ...good, body: { type: "group_renamed" } },
    ];
    for (const b of bad) {
      const input = b instanceof Uint8Array ? b : bytes(b);
      assert.equal(decodeEvent(input), undefined, JSON.stringify(b));
    }
  });

  it("rejects malformed notices", () => {
    const bad = [
      "x",
      { type: "joined", groupId },
      { type: "joined", groupId, seq: -1 },
      { type: "session_revoked" },
      { type: "other" },
      { type: "read", groupId },
      { type: "read", groupId, seq: 0 },
      { type: "read", groupId, seq: 2.5 },
      { type: "read", groupId, seq: "3" },
      { type: "read", seq: 3 },
    ];
    for (const b of bad) {
      assert.equal(decodeNotice(bytes(b)), undefined, JSON.stringify(b));
    }
  });
});
