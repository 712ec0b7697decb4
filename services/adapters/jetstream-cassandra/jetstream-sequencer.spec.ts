import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { headers } from "@nats-io/transport-node";
import { newId } from "../../core/ids.js";
import type { GroupEvent } from "../../core/model.js";
import type { EventBus } from "../../core/ports.js";
import { encodeEvent } from "./nats-codec.js";
import {
  CHANGE_HEADER,
  COUNTS_HEADER,
  PREV_HEADER,
  SEQ_HEADER,
  TYPE_HEADER,
  messageMsgId,
  parseSequenced,
  parseTail,
  sameChange,
  storePublishesEvents,
} from "./jetstream-sequencer.js";
import { NatsNames } from "./subjects.js";

const names = new NatsNames("t");
const actor = { id: newId(), username: "alice" };

function message(groupId: string, seq: number): GroupEvent {
  return {
    groupId,
    seq,
    at: 1_700_000_000_000,
    actor,
    body: { type: "message", message: { id: newId(), groupId, seq, sender: actor, text: "hi", sentAt: 1_700_000_000_000, clientMessageId: "c" } },
  };
}

function hdrs(values: Record<string, string>) {
  const h = headers();
  for (const [k, v] of Object.entries(values)) h.set(k, v);
  return h;
}

describe("parseSequenced", () => {
  it("reads a message event with its chain headers", () => {
    const g = newId();
    const e = message(g, 7);
    const s = parseSequenced(names, names.slot(g, 7), 40, hdrs({ [SEQ_HEADER]: "7", [PREV_HEADER]: "38", [CHANGE_HEADER]: "5:30", "Nats-Msg-Id": "m" }), encodeEvent(e));
    assert.deepEqual(s, {
      event: e,
      streamSeq: 40,
      groupSeq: 7,
      prevStreamSeq: 38,
      change: { groupSeq: 5, streamSeq: 30 },
      counts: undefined,
      msgId: "m",
      prevChange: undefined,
    });
  });

  it("makes a membership event its own latest change and reads its counts", () => {
    const g = newId();
    const e: GroupEvent = { groupId: g, seq: 3, at: 1, actor, body: { type: "member_added", member: actor, role: "member" } };
    const s = parseSequenced(names, names.slot(g, 3), 9, hdrs({ [SEQ_HEADER]: "3", [COUNTS_HEADER]: "4:1", [CHANGE_HEADER]: "1:2" }), encodeEvent(e));
    assert.deepEqual(s?.change, { groupSeq: 3, streamSeq: 9 });
    assert.deepEqual(s?.counts, { memberCount: 4, ownerCount: 1 });
    assert.deepEqual(s?.prevChange, { groupSeq: 1, streamSeq: 2 }, "a change's Chat-Change names the change before it");
    assert.equal(s?.prevStreamSeq, 0);
  });

  it("accepts an event without headers (published by the bus)", () => {
    const g = newId();
    const s = parseSequenced(names, names.slot(g, 1), 2, undefined, encodeEvent(message(g, 1)));
    assert.equal(s?.groupSeq, 1);
    assert.equal(s?.change, undefined);
  });

  it("ignores chain headers that cannot be right", () => {
    const g = newId();
    const s = parseSequenced(names, names.slot(g, 7), 10, hdrs({ [PREV_HEADER]: "10", [CHANGE_HEADER]: "7:3" }), encodeEvent(message(g, 7)));
    assert.equal(s?.prevStreamSeq, 0, "prev must be below the message's own stream seq");
    assert.equal(s?.change, undefined, "a change must be below the event's seq");
  });

  it("rejects a payload of another group, a Chat-Seq that disagrees, and garbage", () => {
    const g = newId();
    assert.ok(parseSequenced(names, names.slot(g, 1), 1, hdrs({ [SEQ_HEADER]: "1" }), encodeEvent(message(g, 1))), "the well-formed control");
    assert.equal(parseSequenced(names, names.slot(newId(), 1), 1, undefined, encodeEvent(message(g, 1))), undefined);
    assert.equal(parseSequenced(names, names.slot(g, 1), 1, hdrs({ [SEQ_HEADER]: "2" }), encodeEvent(message(g, 1))), undefined);
    assert.equal(parseSequenced(names, names.slot(g, 1), 1, undefined, new TextEncoder().encode("{")), undefined);
  });

  it("accepts an event only on its own slot: not another seq's, not the group's subject of old nor its filter", () => {
    const g = newId();
    const data = encodeEvent(message(g, 7));
    const h = hdrs({ [SEQ_HEADER]: "7" });
    assert.equal(parseSequenced(names, names.slot(g, 7), 40, h, data)?.groupSeq, 7, "the well-formed control");
    for (const subject of [
      names.slot(g, 6),
      names.slot(g, 8),
      names.slot(g, 70),
      `t.group.${g}`, // a group's one subject before slots
      names.group(g), // the filter, not a subject a message is stored on
      `t.group.${g}.07`,
      names.tailSlot(g, 7), // the republished subject
      new NatsNames("u").slot(g, 7),
    ]) {
      assert.equal(parseSequenced(names, subject, 40, h, data), undefined, subject);
      assert.equal(parseSequenced(names, subject, 40, undefined, data), undefined, `${subject} without headers`);
    }
  });
});

describe("parseTail", () => {
  it("reads a message's tail from republished headers, with the latest change it names", () => {
    const h = hdrs({ [SEQ_HEADER]: "7", [TYPE_HEADER]: "message", [CHANGE_HEADER]: "5:30", "Nats-Sequence": "40" });
    assert.deepEqual(parseTail(h, 40), { streamSeq: 40, groupSeq: 7, change: { groupSeq: 5, streamSeq: 30 } });
    assert.deepEqual(parseTail(hdrs({ [SEQ_HEADER]: "7", [TYPE_HEADER]: "message" }), 40), { streamSeq: 40, groupSeq: 7, change: undefined });
  });

  it("makes a change its own latest change", () => {
    const h = hdrs({ [SEQ_HEADER]: "3", [TYPE_HEADER]: "member_removed", [CHANGE_HEADER]: "1:2" });
    assert.deepEqual(parseTail(h, 9), { streamSeq: 9, groupSeq: 3, change: { groupSeq: 3, streamSeq: 9 } });
  });

  it("says nothing without the seq or the type (an event from an older writer), or with a change that cannot be right", () => {
    assert.equal(parseTail(hdrs({ [TYPE_HEADER]: "message" }), 9), undefined);
    assert.equal(parseTail(hdrs({ [SEQ_HEADER]: "3" }), 9), undefined);
    assert.equal(parseTail(hdrs({ [SEQ_HEADER]: "3", [TYPE_HEADER]: "message", [CHANGE_HEADER]: "3:2" }), 9)?.change, undefined);
  });
});

describe("sameChange", () => {
  it("compares change references by value; two unknown ones are the same", () => {
    assert.equal(sameChange(undefined, undefined), true);
    assert.equal(sameChange({ groupSeq: 2, streamSeq: 9 }, { groupSeq: 2, streamSeq: 9 }), true);
    assert.equal(sameChange({ groupSeq: 2, streamSeq: 9 }, { groupSeq: 2, streamSeq: 10 }), false);
    assert.equal(sameChange({ groupSeq: 2, streamSeq: 9 }, undefined), false);
    assert.equal(sameChange(undefined, { groupSeq: 2, streamSeq: 9 }), false);
  });
});

describe("messageMsgId", () => {
  it("keeps a printable client message id and hashes anything else", () => {
    const g = newId();
    const u = newId();
    assert.equal(messageMsgId(g, u, "abc-1"), `msg:${g}:${u}:abc-1`);
    assert.match(messageMsgId(g, u, "has space"), new RegExp(`^msg:${g}:${u}:sha256-[0-9a-f]{64}$`));
    assert.notEqual(messageMsgId(g, u, "x\ny"), messageMsgId(g, u, "x\nz"));
    assert.match(messageMsgId(g, u, "x".repeat(65)), /sha256-/);
  });
});

describe("storePublishesEvents", () => {
  it("skips publishEvent and passes everything else through", async () => {
    const calls: string[] = [];
    const sub = { unsubscribe: () => {} };
    const bus: EventBus = {
      publishEvent: async () => void calls.push("publishEvent"),
      subscribeGroup: async () => (calls.push("subscribeGroup"), sub),
      publishUser: async () => void calls.push("publishUser"),
      subscribeUser: async () => (calls.push("subscribeUser"), sub),
      onResync: () => void calls.push("onResync"),
      close: async () => void calls.push("close"),
    };
    const wrapped = storePublishesEvents(bus);
    await wrapped.publishEvent(message(newId(), 1));
    assert.equal(await wrapped.subscribeGroup(newId(), () => {}), sub);
    await wrapped.publishUser(newId(), { type: "session_revoked", sessionId: "s" });
    assert.equal(await wrapped.subscribeUser(newId(), () => {}), sub);
    wrapped.onResync(() => {});
    await wrapped.close();
    assert.deepEqual(calls, ["subscribeGroup", "publishUser", "subscribeUser", "onResync", "close"]);
  });
});
