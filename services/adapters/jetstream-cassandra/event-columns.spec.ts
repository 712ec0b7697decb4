import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isChatError } from "../../core/errors.js";
import type { GroupEvent } from "../../core/model.js";
import { decodeEvent, encodeEvent } from "./event-columns.js";
import type { EventColumns } from "./event-columns.js";

const alice = { id: "0190a1b2-0000-7000-8000-000000000001", username: "alice" };
const bob = { id: "0190a1b2-0000-7000-8000-000000000002", username: "bob" };
const g = "0190a1b2-0000-7000-8000-0000000000aa";
const at = Date.UTC(2024, 4, 1, 12, 0, 0, 123);

const EVENTS: readonly GroupEvent[] = [
  {
    groupId: g,
    seq: 7,
    at,
    actor: alice,
    body: {
      type: "message",
      message: { id: "m-1", groupId: g, seq: 7, sender: alice, text: "héllo 👋\n", sentAt: at, clientMessageId: "c-1" },
    },
  },
  { groupId: g, seq: 1, at, actor: alice, body: { type: "member_added", member: alice, role: "owner" } },
  { groupId: g, seq: 2, at, actor: alice, body: { type: "member_added", member: bob, role: "member" } },
  { groupId: g, seq: 3, at, actor: alice, body: { type: "member_role_changed", member: bob, role: "admin" } },
  { groupId: g, seq: 4, at, actor: bob, body: { type: "group_renamed", name: "new \"name\"" } },
  { groupId: g, seq: 5, at, actor: alice, body: { type: "member_removed", member: bob } },
];

describe("event codec", () => {
  for (const e of EVENTS) {
    it(`round-trips ${e.body.type} (seq ${e.seq})`, () => {
      const cols = encodeEvent(e);
      assert.equal(cols.kind, e.body.type);
      assert.deepEqual(decodeEvent(e.groupId, e.seq, cols), e);
    });
  }

  it("keeps message fields in columns and other bodies in payload", () => {
    const [message, added] = EVENTS;
    assert.ok(message && added);
    assert.deepEqual(encodeEvent(message), {
      kind: "message",
      at,
      actor_id: alice.id,
      actor_name: "alice",
      message_id: "m-1",
      message_text: "héllo 👋\n",
      client_message_id: "c-1",
      payload: null,
    });
    const cols = encodeEvent(added);
    assert.equal(cols.message_id, null);
    assert.deepEqual(JSON.parse(cols.payload ?? ""), added.body);
  });

  it("refuses a message event that disagrees with its message", () => {
    const [message] = EVENTS;
    assert.ok(message && message.body.type === "message");
    const bad: GroupEvent = { ...message, body: { type: "message", message: { ...message.body.message, seq: 8 } } };
    assert.throws(() => encodeEvent(bad), (e) => isChatError(e, "Internal"));
  });

  it("rejects corrupt rows with ChatError Internal", () => {
    const base: EventColumns = {
      kind: "member_added",
      at,
      actor_id: alice.id,
      actor_name: "alice",
      message_id: null,
      message_text: null,
      client_message_id: null,
      payload: JSON.stringify({ type: "member_added", member: bob, role: "member" }),
    };
    const bad: EventColumns[] = [
      { ...base, payload: "{" },
      { ...base, payload: null },
      { ...base, payload: JSON.stringify({ type: "member_removed", member: bob }) },
      { ...base, payload: JSON.stringify({ type: "member_added", member: bob, role: "king" }) },
      { ...base, payload: JSON.stringify({ type: "member_added", member: { id: 1 }, role: "member" }) },
      { ...base, kind: "message" },
      { ...base, kind: "unknown" as EventColumns["kind"], payload: JSON.stringify({ type: "unknown" }) },
    ];
    for (const cols of bad) assert.throws(() => decodeEvent(g, 1, cols), (e) => isChatError(e, "Internal"));
  });
});
