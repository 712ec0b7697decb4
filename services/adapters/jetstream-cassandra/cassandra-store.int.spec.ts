/**
 * CassandraStore against a real Cassandra and a real NATS JetStream. Gated on
 * CASSANDRA_URL (e.g. cassandra://127.0.0.1:9042/chat_test) and NATS_URL
 * (e.g. nats://127.0.0.1:4222). Every run works in a fresh keyspace
 * `<keyspace>_<random>` and under a NATS prefix of its own; both are dropped
 * at the end.
 *
 * Besides the Store contract (and the ReadStateStore, DeviceStore and
 * PushLedger contracts): two store instances (two "processes") on one
 * group, a crash between the JetStream publish and the Cassandra write
 * (repaired by the persister, by a later change, and by a retried send), and
 * live delivery to NatsEventBus subscribers.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { deviceStoreContract } from "../../../test/contract/device-store.contract.js";
import { pushLedgerContract } from "../../../test/contract/push-ledger.contract.js";
import { readStateStoreContract } from "../../../test/contract/read-state-store.contract.js";
import { storeContract } from "../../../test/contract/store.contract.js";
import { isChatError } from "../../core/errors.js";
import { newId } from "../../core/ids.js";
import type { GroupEvent, UserRef } from "../../core/model.js";
import type { Clock, MessageDraft, Store } from "../../core/ports.js";
import { JetStreamSequencer, messageMsgId, storePublishesEvents } from "./jetstream-sequencer.js";
import { createNatsEventBus } from "./nats-event-bus.js";
import { NatsNames } from "./subjects.js";
import { CassandraStore, createCassandraStore } from "./cassandra-store.js";
import { createCassandraTables } from "./cassandra-tables.js";
import { startPersister } from "./persister.js";
import type { Persister } from "./persister.js";
import type { EventTables } from "./event-tables.js";
import { openTestKeyspace } from "../../../test/support/test-keyspace.js";
import type { TestKeyspace } from "../../../test/support/test-keyspace.js";

const CASSANDRA_URL = process.env.CASSANDRA_URL;
const NATS_URL = process.env.NATS_URL;
const skip = CASSANDRA_URL && NATS_URL ? false : "CASSANDRA_URL and NATS_URL are not both set";
const DAY = 86_400_000;

/** One NATS prefix per run, so runs on the shared server never share a stream. */
const prefix = `tcs${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;

let keyspace: Promise<TestKeyspace> | undefined;

/** testKeyspace opens (once per run) the run's migrated keyspace. */
function testKeyspace(): Promise<TestKeyspace> {
  keyspace ??= openTestKeyspace(CASSANDRA_URL ?? "", { retentionMs: 30 * DAY });
  return keyspace;
}

/** open connects a new store (its own Cassandra client and NATS connection: like a separate process). */
async function open({ retentionMs, clock }: { retentionMs: number; clock: Clock }, natsPrefix = prefix): Promise<CassandraStore> {
  const ks = await testKeyspace();
  const url = `cassandra://${ks.url.contactPoints.join(",")}/${ks.keyspace}?dc=${ks.url.localDataCenter}`;
  // migrate: false: the keyspace is migrated with a 30-day TTL; short retentions only hide events by the clock.
  return createCassandraStore({ url, retentionMs, refreshTtlMs: 30 * DAY, clock, nats: { servers: NATS_URL ?? "" }, prefix: natsPrefix, migrate: false });
}

/** deleteStream removes the timeline stream of a NATS prefix (tests that use a prefix of their own). */
async function deleteStream(natsPrefix: string): Promise<void> {
  const nc = await connect({ servers: NATS_URL ?? "", name: "chat-test-cleanup" });
  try {
    await (await jetstreamManager(nc)).streams.delete(new NatsNames(natsPrefix).timelineStream).catch(() => false);
  } finally {
    await nc.close();
  }
}

after(async () => {
  if (keyspace) await (await keyspace).drop();
  if (NATS_URL) {
    const nc = await connect({ servers: NATS_URL, name: "chat-test-cleanup" });
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(new NatsNames(prefix).timelineStream).catch(() => false);
    } finally {
      await nc.close();
    }
  }
});

storeContract("cassandra+jetstream", open, { skip: skip !== false });
readStateStoreContract("cassandra+jetstream", open, { skip: skip !== false });
deviceStoreContract("cassandra+jetstream", () => open({ retentionMs: 30 * DAY, clock: { now: () => Date.now() } }), { skip: skip !== false });
// Two instances (own Cassandra client and NATS connection each) on the run's keyspace. Records expire by their TTL.
pushLedgerContract(
  "cassandra+jetstream",
  async (clock) => [await open({ retentionMs: 30 * DAY, clock }), await open({ retentionMs: 30 * DAY, clock })],
  { skip: skip !== false },
);

function userRef(): UserRef {
  const id = newId();
  return { id, username: `u-${id}` };
}

function draft(groupId: string, sender: UserRef, clientMessageId = newId()): MessageDraft {
  return { id: newId(), groupId, sender, text: `hello ${clientMessageId}`, clientMessageId, sentAt: Date.now() };
}

function seqs(events: readonly { seq: number }[]): number[] {
  return events.map((e) => e.seq);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

async function waitUntil(what: string, condition: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

describe("CassandraStore (integration)", { skip }, () => {
  const clock: Clock = { now: () => Date.now() };
  let a: CassandraStore;
  let b: CassandraStore;

  before(async () => {
    a = await open({ retentionMs: 30 * DAY, clock });
    b = await open({ retentionMs: 30 * DAY, clock });
  });

  after(async () => {
    await a?.close();
    await b?.close();
  });

  async function newGroup(store: Store = a) {
    const owner = userRef();
    const group = { id: newId(), name: "g", epoch: newId(), createdAt: Date.now(), owner };
    await store.createGroup(group);
    return { owner, groupId: group.id };
  }

  /** appendToJetStreamOnly sequences an event but never writes it to Cassandra: a crash between steps 2 and 3. */
  async function appendToJetStreamOnly(store: CassandraStore, build: (seq: number) => GroupEvent, msgId: string, counts?: { memberCount: number; ownerCount: number }) {
    const r = await store.sequencer.sequence(build(0).groupId, (last) => ({ event: build((last?.groupSeq ?? 0) + 1), msgId, counts }));
    assert.equal(r.duplicate, false);
    return r.stored.event;
  }

  function messageAt(groupId: string, sender: UserRef, seq: number, clientMessageId = newId()): GroupEvent {
    const at = Date.now();
    return {
      groupId,
      seq,
      at,
      actor: sender,
      body: { type: "message", message: { id: newId(), groupId, seq, sender, text: `m${seq}`, sentAt: at, clientMessageId } },
    };
  }

  it("gives concurrent appends from two instances dense, unique seqs", async () => {
    const { owner, groupId } = await newGroup();
    const n = 100;
    const results = await Promise.all(range(1, n).map((i) => (i % 2 === 0 ? a : b).appendMessage(draft(groupId, owner))));
    assert.ok(results.every((r) => !r.duplicate));
    assert.deepEqual(
      results.map((r) => r.event.seq).sort((x, y) => x - y),
      range(2, n + 1),
    );
    assert.deepEqual(seqs(await a.readEvents(groupId, 0, 1000)), range(1, n + 1));
    assert.equal((await b.getGroup(groupId))?.headSeq, n + 1);
  });

  it("serializes concurrent membership changes from two instances (no lost update)", async () => {
    const { owner, groupId } = await newGroup();
    const users = range(1, 20).map(() => userRef());
    const events = await Promise.all(
      users.map((u, i) =>
        (i % 2 === 0 ? a : b).changeGroup(groupId, [u.id], owner, Date.now(), (snap) => {
          if (snap.members.has(u.id)) throw new Error("already a member");
          return { type: "add", member: u, role: "member" };
        }),
      ),
    );
    assert.deepEqual(
      seqs(events).sort((x, y) => x - y),
      range(2, 21),
    );
    const g = await a.getGroup(groupId);
    assert.deepEqual(await a.tables.groups.countMembers(groupId), { memberCount: 21, ownerCount: 1 }, "every member row is there");
    assert.equal(g?.memberCount, 21);
    assert.equal(g?.headSeq, 21);
    assert.equal((await a.tables.groups.getGroupState(groupId))?.ownerCount, 1);
    assert.deepEqual(seqs(await b.readEvents(groupId, 0, 100)), range(1, 21));
    assert.equal((await a.listMembers(groupId, "", 100)).length, 21);
  });

  it("interleaves messages and changes from two instances on one dense timeline", async () => {
    const { owner, groupId } = await newGroup();
    const users = range(1, 6).map(() => userRef());
    const work: Promise<unknown>[] = [];
    for (const [i, u] of users.entries()) {
      work.push((i % 2 ? a : b).changeGroup(groupId, [u.id], owner, Date.now(), () => ({ type: "add", member: u, role: "member" })));
      for (let j = 0; j < 5; j++) work.push((j % 2 ? a : b).appendMessage(draft(groupId, owner)));
    }
    await Promise.all(work);
    assert.deepEqual(seqs(await a.readEvents(groupId, 0, 100)), range(1, 37));
    const g = await b.getGroup(groupId);
    assert.equal(g?.headSeq, 37);
    assert.equal(g?.memberCount, 7);
  });

  it("returns the original when the same send is retried through the other instance", async () => {
    const { owner, groupId } = await newGroup();
    const d = draft(groupId, owner);
    const first = await a.appendMessage(d);
    const retry = await b.appendMessage({ ...d, id: newId(), text: "changed", sentAt: d.sentAt + 5 });
    assert.equal(first.duplicate, false);
    assert.equal(retry.duplicate, true);
    assert.deepEqual(retry.event, first.event);
    assert.equal((await a.getGroup(groupId))?.headSeq, 2);
  });

  it("firstRetained finds the stream's oldest retained event by exact slots when Cassandra holds none retained", async () => {
    let now = Date.now();
    const s = await open({ retentionMs: 60_000, clock: { now: () => now } });
    try {
      const owner = userRef();
      const group = { id: newId(), name: "g", epoch: newId(), createdAt: now, owner };
      await s.createGroup(group); // seq 1, in Cassandra (the creation writes it), soon past retention
      now += 120_000;
      const sent = [];
      for (let i = 0; i < 5; i++) sent.push(await s.appendMessage({ ...draft(group.id, owner), sentAt: now + i })); // seqs 2..6, JetStream only
      assert.deepEqual(await s.tables.events.firstRetained(group.id), undefined, "Cassandra holds no retained event");
      assert.deepEqual(await s.firstRetained(group.id), { seq: 2, retainedUntil: now + 60_000 }, "the stream's oldest retained one");
      assert.deepEqual(seqs(sent.map((r) => r.event)), [2, 3, 4, 5, 6]);
      const other = { id: newId(), name: "g", epoch: newId(), createdAt: now, owner };
      await s.createGroup(other);
      assert.deepEqual(await s.firstRetained(other.id), { seq: 1, retainedUntil: now + 60_000 }, "Cassandra's edge when it holds one");
    } finally {
      await s.close();
    }
  });

  it("dedupes a retry after a crash between the publish and the write (JetStream's duplicate window)", async () => {
    const { owner, groupId } = await newGroup();
    const cmid = newId();
    const lost = await appendToJetStreamOnly(a, (seq) => messageAt(groupId, owner, seq, cmid), messageMsgId(groupId, owner.id, cmid));
    assert.deepEqual(await a.tables.events.readEvents(groupId, 1, 10), [], "no persister runs: Cassandra lacks the event");
    const retry = await b.appendMessage({ ...draft(groupId, owner, cmid), text: "again" });
    assert.equal(retry.duplicate, true);
    assert.deepEqual(retry.event, lost);
    assert.deepEqual(await a.readEvents(groupId, 1, 10), [lost], "reads merge the timeline stream's not-yet-persisted tail");
    assert.equal((await a.getGroup(groupId))?.headSeq, 2);
  });

  it("a change first writes the events Cassandra lacks (after the head, and a membership event below it)", async () => {
    const { owner, groupId } = await newGroup();
    const bob = userRef();
    // seq 2: bob added, in JetStream only (its writer died); seq 3: a message, written normally (head = 3).
    const added = await appendToJetStreamOnly(
      a,
      (seq) => ({ groupId, seq, at: Date.now(), actor: owner, body: { type: "member_added", member: bob, role: "admin" } }),
      `test:${newId()}`,
      { memberCount: 2, ownerCount: 1 },
    );
    await b.appendMessage(draft(groupId, owner));
    assert.equal((await a.getGroup(groupId))?.headSeq, 3);
    assert.equal(await a.getMember(groupId, bob.id), undefined);
    // seqs 4 and 5: messages in JetStream only (head stays 3).
    await appendToJetStreamOnly(b, (seq) => messageAt(groupId, owner, seq), `test:${newId()}`);
    await appendToJetStreamOnly(b, (seq) => messageAt(groupId, owner, seq), `test:${newId()}`);
    await assert.rejects(
      a.changeGroup(groupId, [bob.id], owner, Date.now(), () => ({ type: "add", member: bob, role: "member" })),
      (e) => isChatError(e, "AlreadyExists"),
      "the change saw bob's add",
    );
    assert.deepEqual(seqs(await a.readEvents(groupId, 0, 10)), [1, 2, 3, 4, 5]);
    assert.deepEqual((await a.readEvents(groupId, 1, 1))[0], added);
    assert.equal((await a.getMember(groupId, bob.id))?.role, "admin");
    const g = await a.getGroup(groupId);
    assert.equal(g?.memberCount, 2);
    const removed = await b.changeGroup(groupId, [bob.id], owner, Date.now(), () => ({ type: "remove", member: bob }));
    assert.equal(removed.seq, 6);
    assert.equal((await a.getGroup(groupId))?.memberCount, 1);
  });

  it("a change whose publish was stored but unanswered succeeds once, and a send likewise", async () => {
    // A sequencer that loses the answer of the next successful publish (a timeout or reconnect at the worst moment).
    class LosesOneAnswer extends JetStreamSequencer {
      lose = false;
      override async append(...args: Parameters<JetStreamSequencer["append"]>) {
        const outcome = await super.append(...args);
        if (this.lose && outcome.status === "appended") {
          this.lose = false;
          return { status: "unknown" as const, cause: new Error("answer lost") };
        }
        return outcome;
      }
    }
    const ks = await testKeyspace();
    const nc = await connect({ servers: NATS_URL ?? "", name: "chat-test-lossy" });
    try {
      const jsm = await jetstreamManager(nc);
      const sequencer = new LosesOneAnswer({ nc, names: new NatsNames(prefix), jsm });
      const tables = createCassandraTables(ks.client, { keyspace: ks.keyspace, retentionMs: 30 * DAY, refreshTtlMs: 30 * DAY, clock });
      const lossy = new CassandraStore({ tables, sequencer, nc, client: ks.client, clock, retentionMs: 30 * DAY, release: async () => {} });
      const { owner, groupId } = await newGroup(lossy);
      const bob = userRef();
      sequencer.lose = true;
      const added = await lossy.changeGroup(groupId, [bob.id], owner, Date.now(), () => ({ type: "add", member: bob, role: "member" }));
      assert.equal(added.seq, 2, "the change is reported as done, not as AlreadyExists");
      sequencer.lose = true;
      const sent = await lossy.appendMessage(draft(groupId, bob));
      assert.equal(sent.duplicate, false);
      assert.equal(sent.event.seq, 3);
      assert.deepEqual(seqs(await lossy.readEvents(groupId, 0, 10)), [1, 2, 3], "each stored once");
    } finally {
      await nc.close();
    }
  });

  it("the persister writes events that only reached JetStream", async () => {
    const { owner, groupId } = await newGroup();
    const carol = userRef();
    const added = await appendToJetStreamOnly(
      a,
      (seq) => ({ groupId, seq, at: Date.now(), actor: owner, body: { type: "member_added", member: carol, role: "member" } }),
      `test:${newId()}`,
      { memberCount: 2, ownerCount: 1 },
    );
    const message = await appendToJetStreamOnly(a, (seq) => messageAt(groupId, carol, seq), `test:${newId()}`);
    assert.deepEqual(seqs(await b.tables.events.readEvents(groupId, 0, 10)), [1], "Cassandra lacks them");
    assert.deepEqual(seqs(await b.readEvents(groupId, 0, 10)), [1, 2, 3], "reads merge them from the stream");
    const written: number[] = [];
    const persister = await startPersister({
      nc: b.nc,
      names: b.names,
      tables: b.tables,
      afterWrite: (e) => {
        if (e.groupId === groupId) written.push(e.seq);
      },
    });
    try {
      await waitUntil("the persister to write seqs 2 and 3", async () => seqs(await b.tables.events.readEvents(groupId, 0, 10)).length === 3);
      await waitUntil("afterWrite to see the change", async () => written.includes(2));
      assert.ok(!written.includes(3), "afterWrite is for changes, not messages");
      assert.deepEqual(await b.readEvents(groupId, 1, 10), [added, message]);
      assert.equal((await b.getMember(groupId, carol.id))?.role, "member");
      const g = await b.getGroup(groupId);
      assert.equal(g?.headSeq, 3);
      assert.equal(g?.memberCount, 2);
      // A pull's events are acked together once all of them are written (this pull also holds earlier tests' events).
      await waitUntil("the persister to ack them", async () => persister.stats().persisted >= 2);
      assert.equal(persister.stats().undecodable, 0);
    } finally {
      await persister.stop();
    }
  });

  it("two message processes sending to the same groups keep them dense and unique; their persisters write each event once, batched", async () => {
    // A stream (and persister consumer) of its own, so the persisters see only this test's events.
    const own = `${prefix}mp`;
    const x = await open({ retentionMs: 30 * DAY, clock }, own);
    const y = await open({ retentionMs: 30 * DAY, clock }, own);
    const changesSeen: string[] = [];
    const persisters = await Promise.all(
      [x, y].map((s) =>
        startPersister({
          nc: s.nc,
          names: s.names,
          tables: s.tables,
          afterWrite: (e) => void changesSeen.push(`${e.groupId}/${e.seq}`),
        }),
      ),
    );
    try {
      const groups = await Promise.all(range(1, 3).map(() => newGroup(x)));
      const rounds = 40;
      const sent: number[][] = groups.map(() => []);
      for (let r = 0; r < rounds; r++) {
        // Each round, both processes send to every group at once: true races on each group's compare-and-set.
        await Promise.all(
          groups.flatMap(({ owner, groupId }, g) =>
            [x, y].map(async (store) => {
              const res = await store.appendMessage(draft(groupId, owner));
              assert.equal(res.duplicate, false);
              sent[g]?.push(res.event.seq);
            }),
          ),
        );
      }
      for (const [g, { groupId }] of groups.entries()) {
        assert.deepEqual(
          [...(sent[g] ?? [])].sort((p, q) => p - q),
          range(2, 2 * rounds + 1),
          "every send got its own seq, with no gap",
        );
        assert.deepEqual(seqs(await y.readEvents(groupId, 0, 1000)), range(1, 2 * rounds + 1));
        assert.equal((await x.getGroup(groupId))?.headSeq, 2 * rounds + 1);
      }
      const total = groups.length * (2 * rounds + 1);
      await waitUntil("the persisters to settle every event", async () =>
        persisters.reduce((n, p) => n + p.stats().persisted, 0) >= total,
      );
      const stats = persisters.map((p) => p.stats());
      assert.equal(stats.reduce((n, st) => n + st.persisted, 0), total, "each event written and acked once (no redelivery)");
      assert.equal(stats.reduce((n, st) => n + st.failures, 0), 0);
      for (const { groupId } of groups) {
        assert.deepEqual(seqs(await x.tables.events.readEvents(groupId, 0, 1000)), range(1, 2 * rounds + 1), "Cassandra holds every event");
      }
      assert.deepEqual(
        [...new Set(changesSeen)].sort(),
        groups.map((g) => `${g.groupId}/1`).sort(),
        "afterWrite saw each group's creation (a change), and no message",
      );
    } finally {
      await Promise.all(persisters.map((p) => p.stop()));
      await x.close();
      await y.close();
      await deleteStream(own);
    }
  });

  it("a persister that dies holding pulled events (write hung, connection lost, no ack) leaves them to another, which writes each once", async () => {
    // A stream and persister consumer of their own (ack_wait 1 s, set by the first persister), so this sees only its events.
    const own = `${prefix}pd`;
    const x = await open({ retentionMs: 30 * DAY, clock }, own);
    const y = await open({ retentionMs: 30 * DAY, clock }, own);
    let pulled = 0;
    // The dying persister's message writes never finish: it holds what it pulled until its connection goes.
    const hung: EventTables = Object.create(x.tables.events, {
      writeMessages: {
        value: (_groupId: string, events: readonly GroupEvent[]) => {
          pulled += events.length;
          return new Promise<void>(() => {});
        },
      },
    });
    let dying: Persister | undefined;
    let survivor: Persister | undefined;
    try {
      const { owner, groupId } = await newGroup(y);
      const sent: number[] = [];
      for (let i = 0; i < 20; i++) sent.push((await y.appendMessage(draft(groupId, owner))).event.seq);
      // Its first pull takes them all (one group: the creation is written, then the messages' write hangs).
      dying = await startPersister({ nc: x.nc, names: x.names, tables: { ...x.tables, events: hung }, ackWaitMs: 1_000, lingerMs: 20 });
      await waitUntil("the dying persister to pull every message", async () => pulled >= sent.length);
      await x.nc.close(); // dies: no ack, no nak, no "working" any more
      survivor = await startPersister({ nc: y.nc, names: y.names, tables: y.tables, lingerMs: 20 });
      await waitUntil("the other persister to write every message", async () => seqs(await y.tables.events.readEvents(groupId, 0, 100)).length === 21);
      assert.deepEqual(seqs(await y.tables.events.readEvents(groupId, 0, 100)), range(1, 21));
      // The group's creation (seq 1) may have been written and acked by either; every message by the survivor only.
      const acked = () => (dying?.stats().persisted ?? 0) + (survivor?.stats().persisted ?? 0);
      await waitUntil("the survivor to ack them", async () => acked() >= 21);
      await sleep(1_500); // past ack_wait: nothing acked comes back
      assert.ok(dying.stats().persisted <= 1, `the dead one acked no message (${dying.stats().persisted} acks)`);
      assert.equal(acked(), 21, "each event written and acked once (no redelivery after an ack)");
    } finally {
      await survivor?.stop();
      void dying?.stop(); // never settles: stop() waits for the hung write, as it waits for any write in flight
      await x.close().catch(() => {});
      await y.close();
      await deleteStream(own);
    }
  });

  it("a sender removed through another process cannot send again, though this one checked them before", async () => {
    const { owner, groupId } = await newGroup(a);
    const bob = userRef();
    await a.changeGroup(groupId, [bob.id], owner, Date.now(), () => ({ type: "add", member: bob, role: "member" }));
    await a.appendMessage(draft(groupId, bob));
    await a.appendMessage(draft(groupId, bob));
    await b.changeGroup(groupId, [bob.id], owner, Date.now(), () => ({ type: "remove", member: bob }));
    await assert.rejects(a.appendMessage(draft(groupId, bob)), (e) => isChatError(e, "NotFound"));
    const other = await a.appendMessage(draft(groupId, owner));
    assert.equal(other.event.seq, 6);
    await b.changeGroup(groupId, [bob.id], owner, Date.now(), () => ({ type: "add", member: bob, role: "member" }));
    const back = await a.appendMessage(draft(groupId, bob));
    assert.equal(back.event.seq, 8, "re-added: sends again, right after the add");
    assert.deepEqual(seqs(await a.readEvents(groupId, 0, 100)), range(1, 8));
  });

  it("a read right after an ack sees the message before the persister wrote it (merged from the timeline stream)", async () => {
    const { owner, groupId } = await newGroup();
    const sent = await a.appendMessage(draft(groupId, owner));
    const added = await a.changeGroup(groupId, [newId()], owner, Date.now(), (snap) => ({ type: "rename", name: `${snap.group.name}!` }));
    const later = await a.appendMessage(draft(groupId, owner));
    // No persister runs in this suite's stream: Cassandra holds the creation and the change (written by its writer) only.
    assert.deepEqual(seqs(await b.tables.events.readEvents(groupId, 0, 10)), [1, 3]);
    assert.deepEqual(await b.readEvents(groupId, 0, 10), [(await b.readEvents(groupId, 0, 1))[0], sent.event, added, later.event]);
    assert.deepEqual(seqs(await b.readEvents(groupId, 1, 2)), [2, 3]);
    assert.equal((await b.getGroup(groupId))?.headSeq, 4);
    const newest = await b.listMessages(groupId, {}, 10);
    assert.deepEqual(newest.messages, [sent.event.body.message, later.event.body.message]);
    assert.equal(newest.hasMore, false);
    assert.deepEqual((await b.listMessages(groupId, { beforeSeq: 4 }, 10)).messages, [sent.event.body.message]);
    assert.deepEqual((await b.listMessages(groupId, { afterSeq: 2 }, 10)).messages, [later.event.body.message]);
    assert.deepEqual((await b.listMessages(groupId, {}, 1)).messages, [later.event.body.message]);
    assert.equal((await b.listMessages(groupId, {}, 1)).hasMore, true);
  });

  it("a session revoked through one instance is revoked for the other at once (stream openings on any process refuse it)", async () => {
    const family = newId();
    const record = { tokenHash: newId().replaceAll("-", ""), userId: newId(), familyId: family, expiresAt: Date.now() + DAY, usedAt: null, revokedAt: null };
    await a.insertRefreshToken(record);
    assert.equal(await b.isSessionRevoked(family), false);
    await a.revokeRefreshFamily(family, Date.now());
    assert.equal(await b.isSessionRevoked(family), true);
    assert.equal(await a.isSessionRevoked(family), true);
  });

  it("reaches NatsEventBus subscribers live; the services' own publish is skipped", async () => {
    const bus = await createNatsEventBus({ servers: NATS_URL ?? "", prefix, name: "store-int-bus" });
    try {
      const { owner, groupId } = await newGroup();
      const seen: GroupEvent[] = [];
      const sub = await bus.subscribeGroup(groupId, (e) => seen.push(e));
      const r = await a.appendMessage(draft(groupId, owner));
      await waitUntil("the subscriber to see the message", async () => seen.length === 1);
      assert.deepEqual(seen, [r.event]);
      const before = (await a.sequencer.last(groupId))?.streamSeq;
      await storePublishesEvents(bus).publishEvent(r.event);
      assert.equal((await a.sequencer.last(groupId))?.streamSeq, before, "nothing was published again");
      sub.unsubscribe();
    } finally {
      await bus.close();
    }
  });
});
