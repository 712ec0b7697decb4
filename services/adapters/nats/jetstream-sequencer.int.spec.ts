/**
 * JetStreamSequencer against a real NATS server (JetStream). Gated on
 * NATS_URL; works under a prefix unique to the run and deletes its stream.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { newId } from "../../core/ids.js";
import type { GroupEvent } from "../../core/model.js";
import { createJetStreamSequencer } from "./jetstream-sequencer.js";
import type { JetStreamSequencer } from "./jetstream-sequencer.js";
import { ensureTimelineStream } from "./nats-event-bus.js";
import { NatsNames } from "./subjects.js";

const NATS_URL = process.env.NATS_URL;
const prefix = `tsq${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const names = new NatsNames(prefix);
const actor = { id: newId(), username: "alice" };

function message(groupId: string, seq: number): GroupEvent {
  return {
    groupId,
    seq,
    at: Date.now(),
    actor,
    body: { type: "message", message: { id: newId(), groupId, seq, sender: actor, text: `m${seq}`, sentAt: Date.now(), clientMessageId: newId() } },
  };
}

function added(groupId: string, seq: number): GroupEvent {
  return { groupId, seq, at: Date.now(), actor, body: { type: "member_added", member: { id: newId(), username: "bob" }, role: "member" } };
}

describe("JetStreamSequencer (integration)", { skip: NATS_URL ? false : "NATS_URL not set" }, () => {
  let ncA: NatsConnection;
  let ncB: NatsConnection;
  let a: JetStreamSequencer;
  let b: JetStreamSequencer;

  before(async () => {
    ncA = await connect({ servers: NATS_URL ?? "" });
    ncB = await connect({ servers: NATS_URL ?? "" });
    await ensureTimelineStream(await jetstreamManager(ncA), names);
    a = await createJetStreamSequencer(ncA, prefix);
    b = await createJetStreamSequencer(ncB, prefix);
  });

  after(async () => {
    await (await jetstreamManager(ncA)).streams.delete(names.timelineStream).catch(() => false);
    await ncA.close();
    await ncB.close();
  });

  it("appends on an empty subject expecting 0, then reports a lost race and a duplicate", async () => {
    const g = newId();
    assert.equal(await a.last(g), undefined);
    const first = await a.append(added(g, 1), 0, "k1", { counts: { memberCount: 1, ownerCount: 1 } });
    assert.equal(first.status, "appended");
    assert.ok(first.status === "appended");
    const last = await b.last(g);
    assert.deepEqual(last, first.stored);
    assert.deepEqual(last?.change, { groupSeq: 1, streamSeq: first.stored.streamSeq });
    assert.deepEqual(last?.counts, { memberCount: 1, ownerCount: 1 });

    assert.deepEqual(await b.append(message(g, 1), 0, "k2"), { status: "conflict" });
    const dup = await b.append(message(g, 2), first.stored.streamSeq, "k1");
    assert.equal(dup.status, "duplicate");
    assert.ok(dup.status === "duplicate");
    assert.deepEqual(dup.original, first.stored);

    const second = await b.append(message(g, 2), first.stored.streamSeq, "k2", { change: last?.change });
    assert.ok(second.status === "appended");
    const again = await a.last(g);
    assert.equal(again?.groupSeq, 2);
    assert.equal(again?.prevStreamSeq, first.stored.streamSeq);
    assert.deepEqual(again?.change, first.stored.change);
    assert.deepEqual(await a.get(g, first.stored.streamSeq), first.stored);
    assert.equal(await a.get(newId(), first.stored.streamSeq), undefined, "another group's subject");
  });

  it("sequences concurrent writers from two connections densely", async () => {
    const g = newId();
    const n = 60;
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        (i % 2 ? a : b).sequence(g, (last) => ({ event: message(g, (last?.groupSeq ?? 0) + 1), msgId: `w${i}` })),
      ),
    );
    assert.ok(results.every((r) => !r.duplicate));
    assert.deepEqual(
      results.map((r) => r.stored.groupSeq).sort((x, y) => x - y),
      Array.from({ length: n }, (_, i) => i + 1),
    );
    // The Chat-Prev chain links every event to the one before it.
    let e = await a.last(g);
    for (let seq = n; seq >= 1; seq--) {
      assert.equal(e?.groupSeq, seq);
      e = e && e.prevStreamSeq > 0 ? await a.get(g, e.prevStreamSeq) : undefined;
    }
    assert.equal(e, undefined);
  });

  it("returns the original for a retried msgId and passes proposal errors through", async () => {
    const g = newId();
    const one = await a.sequence(g, (last) => ({ event: message(g, (last?.groupSeq ?? 0) + 1), msgId: "same" }));
    const two = await b.sequence(g, (last) => ({ event: message(g, (last?.groupSeq ?? 0) + 1), msgId: "same" }));
    assert.equal(two.duplicate, true);
    assert.deepEqual(two.stored, one.stored);
    const boom = new Error("no");
    await assert.rejects(
      a.sequence(g, () => {
        throw boom;
      }),
      (e) => e === boom,
    );
    assert.equal((await a.last(g))?.groupSeq, 1);
  });
});
