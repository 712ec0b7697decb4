/**
 * The Timeline contract (services/core/timeline.ts): one suite, run against
 * every deployment with no per-backend switch. A deployment opens "writers":
 * each with its own connections to the deployment's shared backends (another
 * SQLite connection to the same file; another NATS and Cassandra client), as
 * separate processes would have. Faults are injected at the append's steps
 * (StoreTimelineOptions.fault): a writer dying before its event is durable,
 * or after it is durable and before it answered; the real process kills are
 * in test/int/cluster.int.spec.ts.
 *
 * Every delivery check compares the events a subscriber got, seq by seq,
 * with what `read` returns (the stored event at each seq), not only their
 * seqs.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { isChatError } from "../../services/core/errors.js";
import { newId } from "../../services/core/ids.js";
import type { GroupEvent, UserRef } from "../../services/core/model.js";
import type { MessageDraft, Store } from "../../services/core/ports.js";
import type { AppendStep, Timeline } from "../../services/core/timeline.js";

/** Writer is one process's view of a deployment: its timeline and its store. */
export interface TimelineWriter {
  readonly timeline: Timeline;
  readonly store: Store;
  close(): Promise<void>;
}

/** TimelineDeployment opens writers on one deployment's shared backends. */
export interface TimelineDeployment {
  /** open connects a new writer; `fault` is called at each append step (throwing there kills the append). */
  open(fault?: (step: AppendStep, draft: MessageDraft) => void): Promise<TimelineWriter>;
  /** dispose releases what the deployment owns (after every writer closed). */
  dispose(): Promise<void>;
}

/** Died is what an injected fault throws: the writer "dies" at that step. */
class Died extends Error {}

export function timelineContract(name: string, make: () => Promise<TimelineDeployment>, opts: { skip?: string | false } = {}): void {
  describe(`Timeline contract: ${name}`, { skip: opts.skip ?? false, timeout: 120_000 }, () => {
    let deployment: TimelineDeployment;
    let a: TimelineWriter;
    let b: TimelineWriter;
    const extra: TimelineWriter[] = [];

    before(async () => {
      deployment = await make();
      a = await deployment.open();
      b = await deployment.open();
    });

    after(async () => {
      for (const w of [a, b, ...extra]) await w?.close();
      await deployment?.dispose();
    });

    function user(): UserRef {
      const id = newId();
      return { id, username: `u${id.slice(-12)}` };
    }

    async function group(store: Store = a.store, members: UserRef[] = []) {
      const owner = user();
      const g = { id: newId(), name: "t", epoch: newId(), createdAt: Date.now(), owner };
      await store.createGroup(g);
      for (const m of members) await store.changeGroup(g.id, [m.id], owner, Date.now(), () => ({ type: "add", member: m, role: "member" }));
      return { owner, groupId: g.id };
    }

    function draft(groupId: string, sender: UserRef, clientMessageId = newId()): MessageDraft {
      return { id: newId(), groupId, sender, text: `text of ${clientMessageId}`, clientMessageId, sentAt: Date.now() };
    }

    function range(from: number, to: number): number[] {
      return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
    }

    async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
      const deadline = Date.now() + ms;
      while (!(await cond())) {
        if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }

    /** collect subscribes and records what arrives, failing on anything out of order. */
    async function collect(w: TimelineWriter, groupId: string, afterSeq: number) {
      const got: GroupEvent[] = [];
      const sub = await w.timeline.subscribe(groupId, afterSeq, (e) => got.push(e));
      return { got, sub };
    }

    /** sameAsStored asserts that `got` is exactly the stored events with seq > afterSeq, in order, each the stored one. */
    async function sameAsStored(w: TimelineWriter, groupId: string, afterSeq: number, got: readonly GroupEvent[], head: number): Promise<void> {
      const stored = await w.timeline.read(groupId, { after: afterSeq }, 10_000);
      assert.deepEqual(
        stored.map((e) => e.seq),
        range(afterSeq + 1, head),
        "the store holds every seq once",
      );
      assert.deepEqual(got, stored, "each seq delivered once, in order, and it is the stored event");
    }

    it("append gives the next dense seq; read returns the stored events in both directions", async () => {
      const { owner, groupId } = await group();
      const sent: GroupEvent[] = [];
      for (let i = 0; i < 5; i++) sent.push((await a.timeline.append(draft(groupId, owner))).event);
      assert.deepEqual(
        sent.map((e) => e.seq),
        [2, 3, 4, 5, 6],
      );
      assert.deepEqual(await b.timeline.read(groupId, { after: 1 }, 10), sent, "read through another writer sees every acked event");
      assert.deepEqual(await b.timeline.read(groupId, { after: 3 }, 2), sent.slice(2, 4));
      assert.deepEqual(await b.timeline.read(groupId, { before: 7 }, 2), sent.slice(3, 5));
      assert.deepEqual(await b.timeline.read(groupId, { before: 4 }, 10), [(await b.timeline.read(groupId, { after: 0 }, 1))[0], ...sent.slice(0, 2)]);
      assert.deepEqual(await b.timeline.read(groupId, { before: 1 }, 10), []);
      assert.deepEqual(await b.timeline.read(groupId, { after: 6 }, 10), []);
    });

    it("append is idempotent on the client message id, also when retried through another writer", async () => {
      const { owner, groupId } = await group();
      const d = draft(groupId, owner);
      const first = await a.timeline.append(d);
      const again = await a.timeline.append({ ...d, id: newId(), text: "changed" });
      const elsewhere = await b.timeline.append({ ...d, id: newId(), text: "changed again" });
      assert.equal(first.duplicate, false);
      assert.equal(again.duplicate, true);
      assert.equal(elsewhere.duplicate, true);
      assert.deepEqual(again.event, first.event);
      assert.deepEqual(elsewhere.event, first.event);
      assert.deepEqual(
        (await a.timeline.read(groupId, { after: 0 }, 10)).map((e) => e.seq),
        [1, 2],
        "stored once",
      );
    });

    it("refuses a sender who is not a member (NotFound), and a group that does not exist", async () => {
      const { groupId } = await group();
      await assert.rejects(a.timeline.append(draft(groupId, user())), (e) => isChatError(e, "NotFound"));
      await assert.rejects(a.timeline.append(draft(newId(), user())), (e) => isChatError(e, "NotFound"));
      assert.deepEqual(
        (await a.timeline.read(groupId, { after: 0 }, 10)).map((e) => e.seq),
        [1],
      );
    });

    it("two writers racing on one group: dense unique seqs; a subscriber on each gets every stored event once, in order", async () => {
      const bob = user();
      const { owner, groupId } = await group(a.store, [bob]);
      const subA = await collect(a, groupId, 0);
      const subB = await collect(b, groupId, 0);
      const n = 60;
      const acks = await Promise.all(range(1, n).map((i) => (i % 2 ? a : b).timeline.append(draft(groupId, i % 3 ? owner : bob))));
      const head = n + 2;
      assert.deepEqual(
        acks.map((r) => r.event.seq).sort((x, y) => x - y),
        range(3, head),
        "every append got its own seq",
      );
      await waitFor("both subscribers to reach the head", () => subA.got.length >= head && subB.got.length >= head);
      await sameAsStored(a, groupId, 0, subA.got, head);
      await sameAsStored(b, groupId, 0, subB.got, head);
      for (const r of acks) assert.deepEqual(subA.got[r.event.seq - 1], r.event, "the acked event is the one delivered at its seq");
      subA.sub.unsubscribe();
      subB.sub.unsubscribe();
    });

    it("subscribe from a seq replays what is stored, then live, with no gap or repeat at the seam", async () => {
      const { owner, groupId } = await group();
      for (let i = 0; i < 10; i++) await a.timeline.append(draft(groupId, owner));
      // Appends keep going while the subscriber opens at seq 4.
      const writing = (async () => {
        for (let i = 0; i < 20; i++) await b.timeline.append(draft(groupId, owner));
      })();
      await new Promise((r) => setTimeout(r, 5));
      const sub = await collect(a, groupId, 4);
      await writing;
      const head = 31;
      await waitFor("the subscriber to reach the head", () => (sub.got.at(-1)?.seq ?? 0) >= head);
      await sameAsStored(a, groupId, 4, sub.got, head);
      sub.sub.unsubscribe();
      const after = await collect(b, groupId, head);
      const last = await a.timeline.append(draft(groupId, owner));
      await waitFor("the live event", () => after.got.length === 1);
      assert.deepEqual(after.got, [last.event]);
      after.sub.unsubscribe();
    });

    for (const step of ["before-durable", "after-durable"] as const) {
      it(`a writer dying at "${step}": the client's retry through another writer stores the message once and every subscriber gets it once`, async () => {
        const { owner, groupId } = await group();
        const victim = await deployment.open((s, d) => {
          if (s === step && d.text.startsWith("doomed")) throw new Died(`died at ${s}`);
        });
        extra.push(victim);
        const sub = await collect(b, groupId, 0);
        await a.timeline.append(draft(groupId, owner));
        const doomed = { ...draft(groupId, owner), text: `doomed ${newId()}` };
        await assert.rejects(victim.timeline.append(doomed), (e) => e instanceof Died);
        const retry = await b.timeline.append({ ...doomed, id: newId() });
        assert.equal(retry.duplicate, step === "after-durable", "the retry finds the original only if it was stored");
        assert.equal(retry.event.body.type === "message" && retry.event.body.message.clientMessageId, doomed.clientMessageId);
        const later = await a.timeline.append(draft(groupId, owner));
        assert.equal(later.event.seq, 4, "nothing else took a seq");
        await waitFor("the subscriber to reach the head", () => (sub.got.at(-1)?.seq ?? 0) >= 4);
        await sameAsStored(b, groupId, 0, sub.got, 4);
        assert.deepEqual(sub.got[2], retry.event);
        sub.sub.unsubscribe();
      });
    }
  });
}
