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

    assert.deepEqual(await b.append(message(g, 1), 0, "k2"), { status: "conflict", lastStreamSeq: first.stored.streamSeq }, "the refusal names the real last sequence");
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

  it("the stream republishes each event's headers, with its stream sequence, on the group's tail subject", async () => {
    const g = newId();
    const seen: { seq: string; type: string; streamSeq: string }[] = [];
    const sub = ncB.subscribe(names.tail(g), {
      callback: (_err, m) => {
        seen.push({ seq: m.headers?.get("Chat-Seq") ?? "", type: m.headers?.get("Chat-Type") ?? "", streamSeq: m.headers?.get("Nats-Sequence") ?? "" });
      },
    });
    await ncB.flush();
    const one = await a.append(added(g, 1), 0, newId(), { counts: { memberCount: 1, ownerCount: 1 } });
    assert.ok(one.status === "appended");
    const two = await a.append(message(g, 2), one.stored.streamSeq, newId(), { change: one.stored.change });
    assert.ok(two.status === "appended");
    for (let i = 0; i < 100 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    sub.unsubscribe();
    assert.deepEqual(seen, [
      { seq: "1", type: "member_added", streamSeq: String(one.stored.streamSeq) },
      { seq: "2", type: "message", streamSeq: String(two.stored.streamSeq) },
    ]);
  });

  it("writers taking turns on a group follow each other's tails after the first conflict, instead of conflicting", async () => {
    const g = newId();
    const c = await createJetStreamSequencer(ncA, prefix);
    const d = await createJetStreamSequencer(ncB, prefix);
    try {
      const turns = 30;
      for (let i = 0; i < turns; i++) {
        const w = i % 2 ? c : d;
        const r = await w.sequence(g, (last) => ({ event: message(g, (last?.groupSeq ?? 0) + 1), msgId: newId() }));
        assert.equal(r.stored.groupSeq, i + 1);
        // The other writer's tail arrives within moments (a core NATS message): give it those.
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const [sc, sd] = [c.stats(), d.stats()];
      assert.equal(sc.appended + sd.appended, turns);
      assert.ok(sc.conflicts + sd.conflicts <= 4, `conflicts: ${sc.conflicts} + ${sd.conflicts}`);
      assert.ok(sc.tailUpdates + sd.tailUpdates >= turns - 6, `tails taken: ${sc.tailUpdates} + ${sd.tailUpdates}`);
      assert.ok(sc.lastReads + sd.lastReads <= 6, `reads of the last event: ${sc.lastReads} + ${sd.lastReads}`);
    } finally {
      c.close();
      d.close();
    }
    await assert.rejects(
      c.sequence(g, (last) => ({ event: message(g, (last?.groupSeq ?? 0) + 1), msgId: newId() })),
      (e) => e instanceof Error,
      "a closed sequencer appends nothing",
    );
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
