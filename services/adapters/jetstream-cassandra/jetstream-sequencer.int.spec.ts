/**
 * JetStreamSequencer against a real NATS server (JetStream). Gated on
 * NATS_URL; works under a prefix unique to the run and deletes its stream.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { isChatError } from "../../core/errors.js";
import { newId } from "../../core/ids.js";
import type { GroupEvent } from "../../core/model.js";
import { decodeEvent } from "./nats-codec.js";
import { createJetStreamSequencer } from "./jetstream-sequencer.js";
import type { JetStreamSequencer, SequencedEvent } from "./jetstream-sequencer.js";
import { ensureTimelineStream } from "./jetstream-streams.js";
import { NATS_SERVER_BIN, PrivateNatsServer } from "../../../test/support/private-nats-server.js";
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

  it("appends on an empty slot, then reports a taken slot and a duplicate", async () => {
    const g = newId();
    assert.equal(await a.last(g), undefined);
    assert.equal(await a.at(g, 1), undefined);
    const first = await a.append(added(g, 1), 0, "k1", { counts: { memberCount: 1, ownerCount: 1 } });
    assert.equal(first.status, "appended");
    assert.ok(first.status === "appended");
    const last = await b.last(g);
    assert.deepEqual(last, first.stored);
    assert.deepEqual(await b.at(g, 1), first.stored);
    assert.deepEqual(last?.change, { groupSeq: 1, streamSeq: first.stored.streamSeq });
    assert.deepEqual(last?.counts, { memberCount: 1, ownerCount: 1 });
    // Stored on the event's own slot, `<prefix>.group.<g>.1`.
    const jsm = await jetstreamManager(ncA);
    assert.equal((await jsm.streams.getMessage(names.timelineStream, { seq: first.stored.streamSeq }))?.subject, `${prefix}.group.${g}.1`);

    // Seq 1 is taken, whatever the proposal says of the event before it: the refusal names the slot's stored message.
    assert.deepEqual(await b.append(message(g, 1), 0, "k2"), { status: "conflict", lastStreamSeq: first.stored.streamSeq }, "the refusal names the slot's message");
    assert.deepEqual(await b.append(message(g, 1), first.stored.streamSeq, "k3"), { status: "conflict", lastStreamSeq: first.stored.streamSeq });
    assert.deepEqual(await a.at(g, 1), first.stored, "the slot keeps the first event");
    const dup = await b.append(message(g, 2), first.stored.streamSeq, "k1");
    assert.equal(dup.status, "duplicate");
    assert.ok(dup.status === "duplicate");
    assert.deepEqual(dup.original, first.stored);
    assert.equal(await a.at(g, 2), undefined, "a duplicate msgId takes no slot");

    const second = await b.append(message(g, 2), first.stored.streamSeq, "k2", { change: last?.change });
    assert.ok(second.status === "appended");
    assert.equal((await jsm.streams.getMessage(names.timelineStream, { seq: second.stored.streamSeq }))?.subject, `${prefix}.group.${g}.2`);
    const again = await a.last(g);
    assert.deepEqual(again, second.stored);
    assert.equal(again?.groupSeq, 2);
    assert.equal(again?.prevStreamSeq, first.stored.streamSeq);
    assert.deepEqual(again?.change, first.stored.change);
    assert.deepEqual(await a.at(g, 2), second.stored);
    assert.deepEqual(await a.at(g, 1), first.stored);
    assert.equal(await a.at(g, 3), undefined, "a slot not written yet");
    assert.equal(await a.at(newId(), 1), undefined, "another group's slot");
    assert.deepEqual(await a.get(g, first.stored.streamSeq), first.stored);
    assert.deepEqual(await a.get(g, second.stored.streamSeq), second.stored);
    assert.equal(await a.get(newId(), first.stored.streamSeq), undefined, "another group's subject");
    await assert.rejects(a.at(g, 0), (e) => isChatError(e, "InvalidArgument"), "seq 0 has no slot");
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
    const info = await (await jetstreamManager(ncA)).streams.info(names.timelineStream, { subjects_filter: names.group(g) });
    assert.deepEqual(info.state.subjects, Object.fromEntries(Array.from({ length: n }, (_, i) => [names.slot(g, i + 1), 1])), "each seq stored once, on its slot");
  });

  it("readNewest finds the last event from a floor by exact slots, readOldestFrom the first, also once the oldest slots are gone", { timeout: 60_000 }, async () => {
    const g = newId();
    const n = 37;
    for (let i = 0; i < n; i++) await a.sequence(g, async (last) => ({ event: message(g, (last?.groupSeq ?? 0) + 1), msgId: `newest:${g}:${i}` }));
    const seqOf = async (p: Promise<GroupEvent | undefined>) => (await p)?.seq;
    for (const floor of [0, 1, 2, 5, 20, 36, 37]) assert.equal(await seqOf(b.readNewest(g, floor)), n, `from floor ${floor}`);
    assert.deepEqual(await b.readNewest(g, 3), await b.readLog(g, "last"), "the same event as the wildcard read");
    assert.equal(await seqOf(b.readNewest(g, 3, 20)), 20, "capped");
    assert.equal(await seqOf(b.readNewest(g, 20, 20)), 20, "floor at the cap");
    assert.equal(await b.readNewest(g, 40), undefined, "a floor past the last event");
    assert.equal(await b.readNewest(g, 40, Number.MAX_SAFE_INTEGER, true), undefined, "nothing after a head past the last event");
    assert.equal(await b.readNewest(newId(), 0), undefined, "an unknown group");
    assert.equal(await seqOf(b.readOldestFrom(g, 1, n)), 1);
    assert.equal(await seqOf(b.readOldestFrom(g, 12, n)), 12);
    assert.equal(await b.readOldestFrom(g, 1, n + 1), undefined, "the top must be stored");
    // The oldest ten slots leave the stream (as max_age expires them).
    const jsm = await jetstreamManager(ncA);
    for (let seq = 1; seq <= 10; seq++) await jsm.streams.purge(names.timelineStream, { filter: names.slot(g, seq) });
    assert.equal(await b.readNewest(g, 5), undefined, "a floor that expired, not known to be the head");
    assert.equal(await b.readNewest(g, 5, Number.MAX_SAFE_INTEGER, true), undefined, "the slot after an expired head expired too");
    assert.equal(await seqOf(b.readNewest(g, 10, Number.MAX_SAFE_INTEGER, true)), n, "after an expired head: the stream's newer events");
    assert.equal(await seqOf(b.readNewest(g, 11)), n);
    assert.equal(await seqOf(b.readOldestFrom(g, 1, n)), 11, "the oldest slot still stored");
    assert.equal(await seqOf(b.readOldestFrom(g, 3, 30)), 11);
  });

  it("two sequencers racing on one group from the start store seqs 1..N densely, each event once; readLog reads them back", { timeout: 60_000 }, async () => {
    const g = newId();
    const n = 40;
    const c = await createJetStreamSequencer(ncA, prefix);
    const d = await createJetStreamSequencer(ncB, prefix);
    try {
      assert.equal(await c.readLog(g, "first"), undefined, "an empty group has no first event");
      assert.equal(await c.readLog(g, "last"), undefined);
      assert.equal(await c.readLog(g, 1), undefined);
      // The first proposal of each sequencer waits for the other's, so both propose seq 1 on an empty group:
      // one of them must lose (a conflict), which proves the two really raced.
      let arrived = 0;
      let open: () => void = () => {};
      const gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      const firstProposals = new Set<number>();
      const proposedSeqs: number[] = [];
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          (i % 2 ? d : c).sequence(g, async (last) => {
            const seq = (last?.groupSeq ?? 0) + 1;
            proposedSeqs.push(seq);
            if (i < 2 && !firstProposals.has(i)) {
              firstProposals.add(i);
              if (++arrived === 2) open();
              await gate;
            }
            return { event: message(g, seq), msgId: `race:${g}:${i}` };
          }),
        ),
      );
      const [sc, sd] = [c.stats(), d.stats()];
      assert.ok(sc.conflicts + sd.conflicts >= 1, `the two sequencers raced (conflicts: ${sc.conflicts} + ${sd.conflicts})`);
      assert.equal(sc.appended + sd.appended, n);
      assert.ok(proposedSeqs.filter((seq) => seq === 1).length >= 2, "both proposed seq 1");
      assert.ok(results.every((r) => !r.duplicate));
      assert.deepEqual(
        results.map((r) => r.stored.groupSeq).sort((x, y) => x - y),
        Array.from({ length: n }, (_, i) => i + 1),
        "dense seqs 1..N",
      );
      results.forEach((r, i) => assert.equal(r.stored.msgId, `race:${g}:${i}`, `call ${i} got its own event`));

      // Every event is stored exactly once, on its slot: no lost race left a second message anywhere.
      const jsm = await jetstreamManager(ncA);
      const info = await jsm.streams.info(names.timelineStream, { subjects_filter: names.group(g) });
      assert.deepEqual(info.state.subjects, Object.fromEntries(Array.from({ length: n }, (_, i) => [names.slot(g, i + 1), 1])));
      const bySeq = new Map(results.map((r) => [r.stored.groupSeq, r.stored]));
      for (let seq = 1; seq <= n; seq++) {
        const stored = bySeq.get(seq);
        assert.deepEqual(await d.at(g, seq), stored, `at(${seq})`);
        assert.deepEqual(await c.readLog(g, seq), stored?.event, `readLog(${seq})`);
      }
      assert.equal(await d.at(g, n + 1), undefined);
      // readLog reads from the leader: first, last and by seq.
      assert.deepEqual(await c.readLog(g, "first"), bySeq.get(1)?.event);
      assert.deepEqual(await d.readLog(g, "last"), bySeq.get(n)?.event);
      assert.equal((await d.readLog(g, "last"))?.seq, n);
      assert.equal((await c.readLog(g, "first"))?.seq, 1);
      assert.equal(await c.readLog(g, n + 1), undefined, "no event past the last");
      const other = newId();
      assert.equal(await c.readLog(other, "first"), undefined, "another group's log is empty");
      assert.equal(await c.readLog(other, "last"), undefined);
      assert.equal(await c.readLog(other, 1), undefined);
    } finally {
      c.close();
      d.close();
    }
  });

  it("the stream republishes each event whole, with its headers and stream sequence, on the event's tail subject", async () => {
    const g = newId();
    const seen: { subject: string; seq: string; type: string; streamSeq: string; event: GroupEvent | undefined }[] = [];
    const sub = ncB.subscribe(names.tail(g), {
      callback: (_err, m) => {
        seen.push({
          subject: m.subject,
          seq: m.headers?.get("Chat-Seq") ?? "",
          type: m.headers?.get("Chat-Type") ?? "",
          streamSeq: m.headers?.get("Nats-Sequence") ?? "",
          event: decodeEvent(m.data),
        });
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
      { subject: names.tailSlot(g, 1), seq: "1", type: "member_added", streamSeq: String(one.stored.streamSeq), event: one.stored.event },
      { subject: names.tailSlot(g, 2), seq: "2", type: "message", streamSeq: String(two.stored.streamSeq), event: two.stored.event },
    ]);
    assert.ok(seen.every((m) => names.groupIdOfTail(m.subject) === g));
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

describe("JetStreamSequencer across a NATS blip (private server)", { skip: NATS_URL && existsSync(NATS_SERVER_BIN) ? false : "NATS_URL not set or no nats-server" }, () => {
  let server: PrivateNatsServer | undefined;
  let nc: NatsConnection | undefined;
  let sequencer: JetStreamSequencer | undefined;

  after(async () => {
    sequencer?.close();
    await nc?.close().catch(() => {});
    // Always kill the private server (by its own PID) and remove its store, even when the test failed.
    server?.signal("SIGCONT");
    await server?.dispose();
  });

  it("fails requests cut off by a lost connection at once: sends resume as soon as NATS is back, not after the request timeout", { timeout: 60_000 }, async (t) => {
    server = await PrivateNatsServer.create();
    await server.start();
    nc = await connect({ servers: server.url, name: "blip", maxReconnectAttempts: -1, reconnectTimeWait: 200 });
    await ensureTimelineStream(await jetstreamManager(nc), names);
    // A request timeout far longer than the outage: a request left to time out keeps the sends waiting for 30 s.
    sequencer = await createJetStreamSequencer(nc, prefix, { requestTimeoutMs: 30_000, timeoutMs: 30_000 });
    const s = sequencer;
    const g = newId();
    const send = (text: string) =>
      s.sequence(g, (last) => {
        const e = message(g, (last?.groupSeq ?? 0) + 1);
        return { event: e.body.type === "message" ? { ...e, body: { type: "message", message: { ...e.body.message, text } } } : e, msgId: `blip:${text}` };
      });
    for (const text of ["a", "b", "c"]) await send(text);

    // Freeze the server with the connection open: the next publish is sent and never answered, and the send
    // after it waits in the group's queue. Then the connection drops (SIGKILL) and the server comes back.
    server.signal("SIGSTOP");
    const inFlight = send("in-flight");
    const queued = send("queued");
    await sleep(300);
    await server.kill("SIGKILL");
    await server.start();
    const back = Date.now();
    const [r1, r2] = await Promise.all([inFlight, queued]);
    const waited = Date.now() - back;
    t.diagnostic(`both sends stored ${waited} ms after the server was back`);
    assert.ok(waited < 15_000, `the cut-off request was failed and re-sent on reconnect, not left to its 30 s timeout (${waited} ms)`);
    assert.deepEqual([r1.stored.event.seq, r2.stored.event.seq], [4, 5], "dense after the blip");
    assert.ok(!r1.duplicate && !r2.duplicate);
    // Each send is stored once, at its seq: the resend of the cut-off publish was not stored twice.
    const last = await s.last(g);
    assert.equal(last?.groupSeq, 5);
    const texts: string[] = [];
    for (let e: SequencedEvent | undefined = last; e !== undefined && texts.length < 10; e = e.prevStreamSeq > 0 ? await s.get(g, e.prevStreamSeq) : undefined) {
      texts.unshift(e.event.body.type === "message" ? e.event.body.message.text : "");
    }
    assert.deepEqual(texts, ["a", "b", "c", "in-flight", "queued"]);
    const info = await (await jetstreamManager(nc)).streams.info(names.timelineStream, { subjects_filter: names.group(g) });
    assert.equal(info.state.messages, 5, "no event stored twice");
    assert.deepEqual(info.state.subjects, Object.fromEntries([1, 2, 3, 4, 5].map((seq) => [names.slot(g, seq), 1])), "each send on its own slot");
  });
});
