import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { MessageSchema } from "../../gen/chat/v1/message_pb.js";
import { SubscribeResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import type { EventBody, GroupEvent, Role, UserRef } from "../core/model.js";
import { encodeEventFrame, encodeMessage } from "./event-frame.js";
import { eventItem } from "./outbound.js";
import { eventToProto, messageToProto } from "./proto-convert.js";

/** generic is the reference: protobuf-es's toBinary of SubscribeResponse { event }, framed by connect-es. */
function generic(event: GroupEvent): Buffer {
  return Buffer.from(encodeEnvelope(0, toBinary(SubscribeResponseSchema, create(SubscribeResponseSchema, { payload: { case: "event", value: eventToProto(event) } }))));
}

const alice: UserRef = { id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", username: "alice" };
const bob: UserRef = { id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", username: "bób" };
const GROUP = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a60";

function event(body: EventBody, over: Partial<GroupEvent> = {}): GroupEvent {
  return { groupId: GROUP, seq: 42, at: 1_764_000_000_123, actor: alice, body, ...over };
}

function message(text: string, over: { seq?: number; sentAt?: number; id?: string; clientMessageId?: string; sender?: UserRef } = {}): EventBody {
  return {
    type: "message",
    message: {
      id: over.id ?? "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a61",
      groupId: GROUP,
      seq: over.seq ?? 42,
      sender: over.sender ?? alice,
      text,
      sentAt: over.sentAt ?? 1_764_000_000_120,
      clientMessageId: over.clientMessageId ?? "c-1",
    },
  };
}

const roles: Role[] = ["member", "admin", "owner"];
const texts = ["hi", "", "x".repeat(127), "x".repeat(128), "y".repeat(16_384), "z".repeat(100_000), "żółć 漢字 🎉", "lone \ud800 surrogate", "\u0000nul"];
const numbers = [0, 1, 127, 128, 16_383, 16_384, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 35 + 7, Number.MAX_SAFE_INTEGER];
const times = [0, 1, 999, 1000, 1001, 1_764_000_000_000, 1_764_000_000_999, 253_402_300_799_999];

function cases(): [string, GroupEvent][] {
  const out: [string, GroupEvent][] = [];
  for (const t of texts) out.push([`message text ${JSON.stringify(t.slice(0, 12))} (${t.length})`, event(message(t))]);
  for (const n of numbers) {
    out.push([`seq ${n}`, event(message("t", { seq: n }), { seq: n })]);
  }
  for (const ms of times) {
    out.push([`at ${ms}`, event(message("t", { sentAt: ms }), { at: ms })]);
  }
  out.push(["empty ids and names", event(message("t", { id: "", clientMessageId: "", sender: { id: "", username: "" } }), { groupId: "", actor: { id: "", username: "" } })]);
  out.push(["unicode username", event(message("t", { sender: bob }), { actor: bob })]);
  for (const role of roles) {
    out.push([`member_added ${role}`, event({ type: "member_added", member: bob, role })]);
    out.push([`member_role_changed ${role}`, event({ type: "member_role_changed", member: bob, role })]);
  }
  out.push(["member_removed", event({ type: "member_removed", member: bob })]);
  out.push(["member_removed, empty user", event({ type: "member_removed", member: { id: "", username: "" } })]);
  out.push(["group_renamed", event({ type: "group_renamed", name: "team 🎉" })]);
  out.push(["group_renamed to empty", event({ type: "group_renamed", name: "" })]);
  return out;
}

describe("encodeEventFrame", () => {
  for (const [name, e] of cases()) {
    it(`writes the same bytes as protobuf-es: ${name}`, () => {
      const frame = encodeEventFrame(e);
      assert.ok(frame);
      assert.deepEqual(frame, generic(e));
    });
  }

  it("declines numbers it does not handle, and eventItem falls back to the generic encoder", () => {
    for (const e of [event(message("t"), { at: -1 }), event(message("t"), { at: 1.5 }), event(message("t", { sentAt: -1000 }))]) {
      assert.equal(encodeEventFrame(e), undefined);
      assert.deepEqual(eventItem(e).grpcFrame, generic(e));
    }
    assert.equal(encodeEventFrame(event(message("t"), { seq: -3 })), undefined);
  });

  it("eventItem builds the message on demand, equal to the generic one, once", () => {
    const e = event(message("hello"));
    const item = eventItem(e);
    assert.deepEqual(Buffer.from(item.bytes), generic(e).subarray(5));
    const expected = create(SubscribeResponseSchema, { payload: { case: "event", value: eventToProto(e) } });
    assert.deepEqual(item.message, expected);
    assert.equal(item.message, item.message, "built once and shared");
    assert.deepEqual(Buffer.from(toBinary(SubscribeResponseSchema, item.message)), Buffer.from(item.bytes));
  });
});

describe("encodeMessage", () => {
  it("writes the same bytes as protobuf-es for every message case, and declines numbers it does not handle", () => {
    let n = 0;
    for (const [name, e] of cases()) {
      if (e.body.type !== "message") continue;
      n++;
      const got = encodeMessage(e.body.message);
      assert.ok(got, name);
      assert.deepEqual(got, Buffer.from(toBinary(MessageSchema, messageToProto(e.body.message))), name);
    }
    assert.ok(n > 10, `${n} message cases`);
    const m = message("t", { sentAt: -1000 });
    assert.ok(m.type === "message");
    assert.equal(encodeMessage(m.message), undefined);
  });
});
