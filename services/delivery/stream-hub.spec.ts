import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { SubscribeResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { type HubFixture, RecordingSink, createHubFixture } from "../../test/support/hub-fixture.js";
import { MemoryEventBus } from "../adapters/memory/memory-bus.js";
import { newId } from "../core/ids.js";
import type { GroupEvent, UserRef } from "../core/model.js";
import { type Store, systemClock } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import type { OutboundItem } from "./outbound.js";
import { StreamHub } from "./stream-hub.js";

/** TimedSink is a RecordingSink that also notes the clock at each write. */
class TimedSink extends RecordingSink {
  readonly times: number[] = [];
  constructor(private readonly clock: { now(): number }) {
    super();
  }
  override write(item: OutboundItem): void {
    super.write(item);
    this.times.push(this.clock.now());
  }
}

function principal(user: UserRef): Principal {
  return { userId: user.id, username: user.username, sessionId: newId(), expiresAt: Date.now() + 3_600_000 };
}

async function until(pred: () => boolean): Promise<void> {
  for (let i = 0; i < 250 && !pred(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(pred(), "timed out");
}

describe("StreamHub", () => {
  let fixture: HubFixture;
  let store: Store;
  let bus: MemoryEventBus;
  let hub: StreamHub;
  before(() => {
    fixture = createHubFixture({ catchUpBatch: 2 });
    ({ store, bus, hub } = fixture);
  });
  after(() => fixture.close());

  async function groupWith(users: UserRef[]): Promise<string> {
    const [owner, ...rest] = users;
    assert.ok(owner);
    const { groupId } = await store.createGroup({ id: newId(), name: "g", epoch: newId(), createdAt: Date.now(), owner });
    for (const u of rest) await store.changeGroup(groupId, [u.id], owner, Date.now(), () => ({ type: "add", member: u, role: "member" }));
    return groupId;
  }

  async function append(groupId: string, sender: UserRef): Promise<GroupEvent> {
    const id = newId();
    const { event } = await store.appendMessage({ id, groupId, sender, text: "t", clientMessageId: id, sentAt: Date.now() });
    return event;
  }

  it("encodes a live event once and hands the same bytes to every local stream", async () => {
    const users = [1, 2, 3].map((i) => ({ id: newId(), username: `u${i}` }));
    const gid = await groupWith(users);
    const sinks = users.map(() => new RecordingSink());
    const sinkA = new RecordingSink();
    const a = users[0];
    assert.ok(a);
    await Promise.all(users.map((u, i) => hub.open(principal(u), new Map(), sinks[i] as RecordingSink)));
    await hub.open(principal(a), new Map(), sinkA); // a second device of the first user
    const event = await append(gid, a);
    await bus.publishEvent(event);
    const delivered = [...sinks, sinkA].map((s) => s.items.at(-1));
    assert.ok(delivered[0]?.message.payload.case === "event");
    for (const item of delivered) {
      assert.equal(item, delivered[0], "the same OutboundItem object");
      assert.equal(item?.grpcFrame, delivered[0]?.grpcFrame, "the same framed bytes");
    }
  });

  it("repairs a gap from the store when the bus loses events, and drops duplicates", async () => {
    const owner = { id: newId(), username: "owner" };
    const gid = await groupWith([owner]);
    const sink = new RecordingSink();
    await hub.open(principal(owner), new Map(), sink);
    const e2 = await append(gid, owner);
    const e3 = await append(gid, owner);
    const e4 = await append(gid, owner);
    const e5 = await append(gid, owner);
    await bus.publishEvent(e2);
    await bus.publishEvent(e2); // duplicate
    await bus.publishEvent(e5); // 3 and 4 lost on the bus
    await until(() => sink.eventSeqs(gid).length >= 4);
    await bus.publishEvent(e3); // late duplicates
    await bus.publishEvent(e4);
    const e6 = await append(gid, owner);
    await bus.publishEvent(e6);
    await until(() => sink.eventSeqs(gid).length >= 5);
    assert.deepEqual(sink.eventSeqs(gid), [2, 3, 4, 5, 6]);
  });

  it("repairs quiet groups when the bus says it may have missed events", async () => {
    const owner = { id: newId(), username: "resync" };
    const gid = await groupWith([owner]);
    let resync: (() => void) | undefined;
    const lossy = Object.assign(Object.create(bus) as MemoryEventBus, {
      onResync: (h: () => void) => {
        resync = h;
      },
    });
    const resyncing = new StreamHub({ store, bus: lossy, clock: systemClock, settings: { heartbeatMs: 60_000, bufferMaxBytes: 1 << 20, catchUpBatch: 10 } });
    try {
      const sink = new RecordingSink();
      await resyncing.open(principal(owner), new Map(), sink);
      await append(gid, owner); // stored, never published: "missed while disconnected"
      await append(gid, owner);
      assert.deepEqual(sink.eventSeqs(gid), []);
      resync?.();
      await until(() => sink.eventSeqs(gid).length >= 2);
      assert.deepEqual(sink.eventSeqs(gid), [2, 3]);
    } finally {
      resyncing.shutdown();
    }
  });

  it("takes a cursor beyond the head its channel heard of as current when the store has it (no reset, no repeat)", async () => {
    const owner = { id: newId(), username: "lagging" };
    const gid = await groupWith([owner]);
    for (let i = 0; i < 5; i++) await append(gid, owner); // seqs 2..6
    const first = new RecordingSink();
    await hub.open(principal(owner), new Map(), first); // the channel is set up at head 6
    const e7 = await append(gid, owner); // seqs 7, 8: acknowledged, not yet on the bus (a client saw them through ListMessages)
    const e8 = await append(gid, owner);
    const sink = new RecordingSink();
    await hub.open(principal(owner), new Map([[gid, { seq: 8, epoch: "" }]]), sink);
    assert.ok(!sink.items.some((i) => i.message.payload.case === "cursorReset"), "no CursorReset for a current cursor");
    const ready = sink.items.find((i) => i.message.payload.case === "ready");
    assert.ok(ready?.message.payload.case === "ready");
    assert.equal(ready.message.payload.value.groups.find((g) => g.groupId === gid)?.headSeq, 8n, "StreamReady names the current head");
    const e9 = await append(gid, owner); // seq 9, live
    await bus.publishEvent(e9);
    await until(() => sink.eventSeqs(gid).length >= 1 && first.eventSeqs(gid).length >= 3);
    const idOf = (e: GroupEvent): [number, string] => [e.seq, e.body.type === "message" ? e.body.message.id : ""];
    assert.deepEqual(sink.eventMessages(gid), [idOf(e9)], "resumed right after the cursor, with the stored event");
    assert.deepEqual(first.eventMessages(gid), [e7, e8, e9].map(idOf), "the first stream repaired 7 and 8 from the store: each stored event at its seq");
    // A cursor truly ahead of the timeline is still reset.
    const ahead = new RecordingSink();
    await hub.open(principal(owner), new Map([[gid, { seq: 99, epoch: "" }]]), ahead);
    assert.ok(ahead.items.some((i) => i.message.payload.case === "cursorReset"), "a cursor beyond the head is reset");
  });

  it("reads a group from the store once per process: later streams take its head from the channel", async () => {
    const users = [1, 2, 3].map((i) => ({ id: newId(), username: `once${i}` }));
    const gid = await groupWith(users);
    for (let i = 0; i < 3; i++) await append(gid, users[0] as UserRef).then((e) => bus.publishEvent(e)); // seqs 4..6
    const groupReads: string[] = [];
    const listings: string[] = [];
    const counted: Store = Object.assign(Object.create(store) as Store, {
      getGroup: (groupId: string) => {
        groupReads.push(groupId);
        return store.getGroup(groupId);
      },
      listGroupIdsOf: (userId: string, after: string, limit: number) => {
        listings.push(userId);
        return store.listGroupIdsOf(userId, after, limit);
      },
    });
    const once = new StreamHub({ store: counted, bus, clock: systemClock, settings: { heartbeatMs: 60_000, bufferMaxBytes: 1 << 20, catchUpBatch: 10 } });
    try {
      const sinks = users.map(() => new RecordingSink());
      for (const [i, u] of users.entries()) await once.open(principal(u), new Map(), sinks[i] as RecordingSink);
      assert.deepEqual(groupReads, [gid], "one group read, by the first stream");
      assert.equal(listings.length, 3, "one listing per stream");
      for (const sink of sinks) {
        const ready = sink.items[0];
        assert.ok(ready?.message.payload.case === "ready");
        assert.equal(ready.message.payload.value.groups[0]?.headSeq, 6n);
      }
      const e7 = await append(gid, users[1] as UserRef);
      await bus.publishEvent(e7);
      const late = new RecordingSink();
      await once.open(principal(users[2] as UserRef), new Map(), late);
      const ready = late.items[0];
      assert.ok(ready?.message.payload.case === "ready");
      assert.equal(ready.message.payload.value.groups[0]?.headSeq, 7n, "the head the channel heard live");
      assert.deepEqual(groupReads, [gid], "still one group read");
      await until(() => sinks.every((s) => s.eventSeqs(gid).length >= 1));
      const id7 = e7.body.type === "message" ? e7.body.message.id : "";
      for (const sink of sinks) assert.deepEqual(sink.eventMessages(gid), [[7, id7]], "the stored event at seq 7, once");
    } finally {
      once.shutdown();
    }
  });

  it("releases every channel of a stream whose setup failed, also one whose setup ends after the failure", async () => {
    const user = { id: newId(), username: "setupfails" };
    const ids = [await groupWith([user]), await groupWith([user]), await groupWith([user])];
    const [failing, slowGroup] = [ids[0] as string, ids[1] as string];
    let releaseSlow = () => {};
    const slow = new Promise<void>((r) => {
      releaseSlow = r;
    });
    const flaky: Store = Object.assign(Object.create(store) as Store, {
      getGroup: async (groupId: string) => {
        if (groupId === failing) throw new Error("store unavailable");
        if (groupId === slowGroup) await slow;
        return store.getGroup(groupId);
      },
    });
    const subscribed = new Map<string, number>();
    const counting = Object.assign(Object.create(bus) as MemoryEventBus, {
      subscribeGroup: async (groupId: string, handler: (event: GroupEvent) => void) => {
        const sub = await bus.subscribeGroup(groupId, handler);
        subscribed.set(groupId, (subscribed.get(groupId) ?? 0) + 1);
        let done = false;
        return {
          unsubscribe: () => {
            if (!done) subscribed.set(groupId, (subscribed.get(groupId) ?? 0) - 1);
            done = true;
            sub.unsubscribe();
          },
        };
      },
    });
    const failingHub = new StreamHub({ store: flaky, bus: counting, clock: systemClock, settings: { heartbeatMs: 60_000, bufferMaxBytes: 1 << 20, catchUpBatch: 10 } });
    try {
      const sink = new RecordingSink();
      await failingHub.open(principal(user), new Map(), sink);
      assert.equal(sink.ended?.error?.kind, "Unavailable", "the stream ended retryably");
      assert.ok(!sink.items.some((i) => i.message.payload.case === "ready"), "no StreamReady");
      releaseSlow();
      await until(() => ids.every((id) => subscribed.get(id) === 0));
      assert.deepEqual(
        ids.map((id) => subscribed.get(id)),
        [0, 0, 0],
        "every group's subscription ended",
      );
    } finally {
      failingHub.shutdown();
    }
  });

  it("replays from the cursor in batches and goes live with no duplicate at the seam", async () => {
    const owner = { id: newId(), username: "replay" };
    const gid = await groupWith([owner]);
    for (let i = 0; i < 7; i++) await append(gid, owner); // seqs 2..8, not published
    const sink = new RecordingSink();
    await hub.open(principal(owner), new Map([[gid, { seq: 1, epoch: "" }]]), sink);
    const live = await append(gid, owner); // published while the replay runs
    await bus.publishEvent(live);
    await until(() => sink.eventSeqs(gid).length >= 8);
    assert.deepEqual(sink.eventSeqs(gid), [2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(sink.items[0]?.message.payload.case, "ready");
  });

  it("ends a stream whose sink buffers more than the cap with RESOURCE_EXHAUSTED", async () => {
    const owner = { id: newId(), username: "slow" };
    const gid = await groupWith([owner]);
    const sink = new RecordingSink();
    await hub.open(principal(owner), new Map(), sink);
    const before = hub.size;
    sink.bufferedBytes = 2 << 20; // the client stopped reading
    await bus.publishEvent(await append(gid, owner));
    assert.equal(sink.ended?.error?.kind, "ResourceExhausted");
    assert.equal(hub.size, before - 1);
  });

  it("sends heartbeats only to streams that were idle for a whole interval", async () => {
    const beating = new StreamHub({ store, bus, clock: systemClock, settings: { heartbeatMs: 40, bufferMaxBytes: 1 << 20, catchUpBatch: 10 } });
    try {
      const idleUser = { id: newId(), username: "idle" };
      const busyUser = { id: newId(), username: "busy" };
      await groupWith([idleUser]);
      const busyGroup = await groupWith([busyUser]);
      const idle = new RecordingSink();
      const busy = new RecordingSink();
      await beating.open(principal(idleUser), new Map(), idle);
      await beating.open(principal(busyUser), new Map(), busy);
      const heartbeats = (s: RecordingSink) => s.items.filter((i) => i.message.payload.case === "heartbeat").length;
      for (let i = 0; i < 30; i++) {
        await bus.publishEvent(await append(busyGroup, busyUser)); // every ~10 ms
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(heartbeats(idle) >= 3, `idle stream got ${heartbeats(idle)} heartbeats`);
      // A busy stream gets (almost) none: at most a stray one if the event loop stalled for a whole interval.
      assert.ok(heartbeats(busy) * 2 < heartbeats(idle), `busy stream got ${heartbeats(busy)} heartbeats, idle ${heartbeats(idle)}`);
    } finally {
      beating.shutdown();
    }
  });

  it("bounds every stream's silence by the heartbeat interval, whenever its last item came, with one encoding per tick", async (t) => {
    t.mock.timers.enable({ apis: ["setInterval"] });
    let now = 1_000_000; // virtual ms, moved with the mocked timers
    const clock = { now: () => now };
    const interval = 1000;
    const beating = new StreamHub({ store, bus, clock, settings: { heartbeatMs: interval, bufferMaxBytes: 1 << 20, catchUpBatch: 10 } });
    try {
      const idleUser = { id: newId(), username: "idle2" };
      const busyUser = { id: newId(), username: "busy2" };
      await groupWith([idleUser]);
      const busyGroup = await groupWith([busyUser]);
      const idle = new TimedSink(clock);
      const busy = new TimedSink(clock);
      await beating.open(principal(idleUser), new Map(), idle);
      await beating.open(principal(busyUser), new Map(), busy);
      // Events land just after a heartbeat check, just before one, and in between.
      const eventsAt = new Set([1, 240, 251, 1001, 1999, 2010, 2600, 5003, 5200, 9999].map((ms) => 1_000_000 + ms));
      for (let i = 0; i < 14_000; i++) {
        now += 1;
        t.mock.timers.tick(1);
        if (eventsAt.has(now)) await bus.publishEvent(await append(busyGroup, busyUser));
      }
      for (const [name, sink] of [["idle", idle], ["busy", busy]] as const) {
        const gaps = sink.times.slice(1).map((at, i) => at - (sink.times[i] ?? 0));
        assert.ok(Math.max(...gaps) <= interval, `${name}: longest silence ${Math.max(...gaps)} ms, interval ${interval} ms`);
        // A heartbeat never comes much earlier than the interval: after more than 3/4 of it.
        sink.items.forEach((item, i) => {
          if (i > 0 && item.message.payload.case === "heartbeat") {
            const gap = (sink.times[i] ?? 0) - (sink.times[i - 1] ?? 0);
            assert.ok(gap > (interval * 3) / 4, `${name}: heartbeat after only ${gap} ms`);
          }
        });
      }
      assert.ok(idle.items.filter((i) => i.message.payload.case === "heartbeat").length >= 13);
      // One encoding per tick: streams beaten at the same instant got the same item.
      const idleBeats = new Map(idle.items.flatMap((item, i) => (item.message.payload.case === "heartbeat" ? [[idle.times[i], item] as const] : [])));
      let shared = 0;
      busy.items.forEach((item, i) => {
        const other = idleBeats.get(busy.times[i]);
        if (item.message.payload.case === "heartbeat" && other) {
          assert.equal(item, other, "one heartbeat item per tick");
          shared++;
        }
      });
      assert.ok(shared > 0, "the two streams were beaten together at least once");
    } finally {
      beating.shutdown();
    }
  });

  /** session makes a principal whose session (refresh family) the store knows. */
  async function session(user: UserRef): Promise<Principal> {
    const p = principal(user);
    const tokenHash = newId().replaceAll("-", "");
    await store.insertRefreshToken({ tokenHash, userId: user.id, familyId: p.sessionId, expiresAt: Date.now() + 3_600_000, usedAt: null, revokedAt: null });
    return p;
  }

  /** countingHub is a hub on the fixture's store that counts isSessionRevoked reads, and hands out the bus's resync hook. */
  function countingHub(settings: { heartbeatMs?: number; holdMemberships?: { userId: string; until: Promise<void> } } = {}) {
    const reads: string[] = [];
    let resync: (() => void) | undefined;
    const hold = settings.holdMemberships;
    const counted = Object.assign(Object.create(store) as Store, {
      isSessionRevoked: (sessionId: string) => {
        reads.push(sessionId);
        return store.isSessionRevoked(sessionId);
      },
      // A stream of `hold.userId` stays in its setup (past the session check) until `hold.until`.
      listGroupIdsOf: async (userId: string, after: string, limit: number) => {
        if (hold && userId === hold.userId) await hold.until;
        return store.listGroupIdsOf(userId, after, limit);
      },
    });
    const lossy = Object.assign(Object.create(bus) as MemoryEventBus, {
      onResync: (h: () => void) => {
        resync = h;
      },
    });
    const counting = new StreamHub({
      store: counted,
      bus: lossy,
      clock: systemClock,
      settings: { heartbeatMs: settings.heartbeatMs ?? 60_000, bufferMaxBytes: 1 << 20, catchUpBatch: 10 },
    });
    return { hub: counting, reads, resync: () => resync?.() };
  }

  it("refuses to open a stream for a revoked session (UNAUTHENTICATED, no StreamReady), asking the store each time it was alive", async () => {
    const user = { id: newId(), username: "revoked" };
    await groupWith([user]);
    const dead = await session(user);
    const alive = await session(user);
    const { hub: counting, reads } = countingHub();
    try {
      for (let i = 0; i < 2; i++) {
        const first = new RecordingSink();
        await counting.open(dead, new Map(), first);
        assert.equal(first.items[0]?.message.payload.case, "ready", "alive at first");
      }
      assert.deepEqual(reads, [dead.sessionId, dead.sessionId], "one store read per opening while alive: no answer is remembered");
      // Revoked in the store only (its notice lost, or published before this stream's subscription).
      await store.revokeRefreshFamily(dead.sessionId, Date.now());
      const before = counting.size;
      const refused = new RecordingSink();
      await counting.open(dead, new Map(), refused);
      assert.equal(refused.ended?.error?.kind, "Unauthenticated");
      assert.equal(refused.ended?.error?.message, "session was revoked; log in again");
      assert.deepEqual(refused.items, [], "nothing written, StreamReady least of all");
      assert.equal(reads.length, 3, "the revocation was read from the store");
      assert.equal(counting.size, before, "the refused stream is not held");
      const other = new RecordingSink();
      await counting.open(alive, new Map(), other);
      assert.equal(other.items[0]?.message.payload.case, "ready", "another session of the user opens");
      assert.equal(other.ended, undefined);
    } finally {
      counting.shutdown();
    }
  });

  it("remembers a revoked session: a client retrying with its token is refused without a store read", async () => {
    const user = { id: newId(), username: "memo" };
    await groupWith([user]);
    const dead = await session(user);
    const byNotice = await session(user);
    const { hub: counting, reads } = countingHub();
    try {
      await store.revokeRefreshFamily(dead.sessionId, Date.now());
      const first = new RecordingSink();
      await counting.open(dead, new Map(), first);
      assert.equal(first.ended?.error?.kind, "Unauthenticated");
      assert.equal(reads.length, 1, "the first refusal reads the store");
      for (let i = 0; i < 3; i++) {
        const again = new RecordingSink();
        await counting.open(dead, new Map(), again);
        assert.equal(again.ended?.error?.kind, "Unauthenticated");
        assert.deepEqual(again.items, []);
      }
      assert.equal(reads.length, 1, "later refusals of the remembered session read nothing");
      // A session_revoked notice is remembered too.
      const open = new RecordingSink();
      await counting.open(byNotice, new Map(), open);
      assert.equal(open.items[0]?.message.payload.case, "ready");
      assert.equal(reads.length, 2);
      await bus.publishUser(user.id, { type: "session_revoked", sessionId: byNotice.sessionId });
      assert.equal(open.ended?.error?.kind, "Unauthenticated");
      const noticed = new RecordingSink();
      await counting.open(byNotice, new Map(), noticed);
      assert.equal(noticed.ended?.error?.kind, "Unauthenticated");
      assert.equal(reads.length, 2, "refused from the remembered notice, no store read");
    } finally {
      counting.shutdown();
    }
  });

  it("on a bus resync, ends the open and opening streams of sessions revoked while their notice was lost, one store read per session", async () => {
    const user = { id: newId(), username: "lostnotice" };
    const other = { id: newId(), username: "lostother" };
    await groupWith([user, other]);
    const dead = await session(user);
    const alive = await session(user);
    const otherSession = await session(other);
    const slowUser = { id: newId(), username: "lostslow" };
    await groupWith([slowUser]);
    const opening = await session(slowUser);
    let release: (() => void) | undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const { hub: counting, reads, resync } = countingHub({ holdMemberships: { userId: slowUser.id, until: held } });
    try {
      const deadSinks = [new RecordingSink(), new RecordingSink()];
      for (const s of deadSinks) await counting.open(dead, new Map(), s); // two streams of one session
      const aliveSink = new RecordingSink();
      await counting.open(alive, new Map(), aliveSink);
      const otherSink = new RecordingSink();
      await counting.open(otherSession, new Map(), otherSink);
      for (const s of [...deadSinks, aliveSink, otherSink]) assert.equal(s.items[0]?.message.payload.case, "ready");
      const openingSink = new RecordingSink();
      const opened = counting.open(opening, new Map(), openingSink); // held in its setup, past its session check
      await until(() => reads.includes(opening.sessionId));
      // Revoked while this process was cut off from the bus: the store has it, the notice never comes.
      await store.revokeRefreshFamily(dead.sessionId, Date.now());
      await store.revokeRefreshFamily(opening.sessionId, Date.now());
      assert.equal(deadSinks[0]?.ended, undefined, "without a notice the stream lives on");
      reads.length = 0;
      resync();
      await until(() => deadSinks.every((s) => s.ended !== undefined));
      for (const s of deadSinks) {
        assert.equal(s.ended?.error?.kind, "Unauthenticated");
        assert.equal(s.ended?.error?.message, "session was revoked; log in again");
      }
      await until(() => openingSink.ended !== undefined);
      assert.equal(openingSink.ended?.error?.kind, "Unauthenticated", "a stream still being set up ends too");
      release?.();
      await opened;
      assert.deepEqual(openingSink.items, [], "no StreamReady for the stream that was being set up");
      assert.equal(aliveSink.ended, undefined, "another session of the user stays");
      assert.equal(otherSink.ended, undefined, "another user's session stays");
      assert.deepEqual(
        [...reads].sort(),
        [dead.sessionId, alive.sessionId, otherSession.sessionId, opening.sessionId].sort(),
        "one read per distinct session",
      );
      assert.equal(counting.size, 2);
      // Remembered: reopening costs no store read.
      const again = new RecordingSink();
      await counting.open(dead, new Map(), again);
      assert.equal(again.ended?.error?.kind, "Unauthenticated");
      assert.equal(reads.length, 4);
    } finally {
      release?.();
      counting.shutdown();
    }
  });

  it("ends a stream whose session is revoked while it is being set up, before StreamReady", async () => {
    const user = { id: newId(), username: "racing" };
    await groupWith([user]);
    const p = await session(user);
    let release: (() => void) | undefined;
    let asked: (() => void) | undefined;
    const reading = new Promise<void>((resolve) => {
      asked = resolve;
    });
    // The store read answers "alive" (it ran before the revocation was written), but only after the notice came.
    const slow = Object.assign(Object.create(store) as Store, {
      isSessionRevoked: async () => {
        asked?.();
        await new Promise<void>((r) => {
          release = r;
        });
        return false;
      },
    });
    const racing = new StreamHub({ store: slow, bus, clock: systemClock, settings: { heartbeatMs: 60_000, bufferMaxBytes: 1 << 20, catchUpBatch: 10 } });
    try {
      const sink = new RecordingSink();
      const opened = racing.open(p, new Map(), sink);
      await reading;
      await store.revokeRefreshFamily(p.sessionId, Date.now());
      await bus.publishUser(user.id, { type: "session_revoked", sessionId: p.sessionId });
      release?.();
      await opened;
      assert.equal(sink.ended?.error?.kind, "Unauthenticated");
      assert.deepEqual(sink.items, [], "no StreamReady");
      assert.equal(racing.size, 0);
    } finally {
      racing.shutdown();
    }
  });

  it("writes no heartbeat to a stream still being set up: StreamReady comes first however long the setup takes", async () => {
    const user = { id: newId(), username: "slowsetup" };
    await groupWith([user]);
    const p = await session(user);
    const slow = Object.assign(Object.create(store) as Store, {
      isSessionRevoked: async () => {
        await new Promise((r) => setTimeout(r, 200)); // five heartbeat intervals
        return false;
      },
    });
    const beating = new StreamHub({ store: slow, bus, clock: systemClock, settings: { heartbeatMs: 40, bufferMaxBytes: 1 << 20, catchUpBatch: 10 } });
    try {
      const sink = new RecordingSink();
      await beating.open(p, new Map(), sink);
      assert.equal(sink.items[0]?.message.payload.case, "ready");
      await until(() => sink.items.length >= 2);
      assert.equal(sink.items[1]?.message.payload.case, "heartbeat", "heartbeats start once the stream is ready");
    } finally {
      beating.shutdown();
    }
  });

  it("ends streams whose session is revoked, and only those", async () => {
    const user = { id: newId(), username: "sess" };
    await groupWith([user]);
    const p1 = principal(user);
    const p2 = principal(user);
    const s1 = new RecordingSink();
    const s2 = new RecordingSink();
    await hub.open(p1, new Map(), s1);
    await hub.open(p2, new Map(), s2);
    await bus.publishUser(user.id, { type: "session_revoked", sessionId: p1.sessionId });
    assert.equal(s1.ended?.error?.kind, "Unauthenticated");
    assert.equal(s2.ended, undefined);
  });

  it("turns a read notice into one ReadMarker item on every stream of the user, and on no other user's", async () => {
    const [a, b] = [{ id: newId(), username: "reader" }, { id: newId(), username: "other" }];
    const gid = await groupWith([a, b]);
    const phone = new RecordingSink();
    const laptop = new RecordingSink();
    const others = new RecordingSink();
    await hub.open(principal(a), new Map(), phone);
    await hub.open(principal(a), new Map(), laptop);
    await hub.open(principal(b), new Map(), others);
    await bus.publishUser(a.id, { type: "read", groupId: gid, seq: 2 });
    const item = phone.items.at(-1);
    assert.equal(laptop.items.at(-1), item, "the same OutboundItem object on each stream of the user");
    assert.deepEqual(item?.message, create(SubscribeResponseSchema, { payload: { case: "readMarker", value: { groupId: gid, seq: 2n } } }));
    assert.deepEqual(fromBinary(SubscribeResponseSchema, item.bytes), item.message, "its bytes are the message");
    assert.deepEqual(item.grpcFrame, Buffer.from(encodeEnvelope(0, item.bytes)), "framed as every framed path writes it");
    assert.deepEqual(markersOf(others), [], "not on another user's stream");
  });

  it("gives a stream still being set up the newest read marker per group, right after StreamReady", async () => {
    const user = { id: newId(), username: "slowread" };
    const g1 = await groupWith([user]);
    const g2 = await groupWith([user]);
    let entered = false;
    let release = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const slow = Object.assign(Object.create(store) as Store, {
      listGroupIdsOf: async (...args: Parameters<Store["listGroupIdsOf"]>) => {
        entered = true;
        await gate;
        return store.listGroupIdsOf(...args);
      },
    });
    const opening = new StreamHub({ store: slow, bus, clock: systemClock, settings: { heartbeatMs: 60_000, bufferMaxBytes: 1 << 20, catchUpBatch: 10 } });
    try {
      const sink = new RecordingSink();
      const opened = opening.open(principal(user), new Map(), sink);
      await until(() => entered);
      await bus.publishUser(user.id, { type: "read", groupId: g1, seq: 1 });
      await bus.publishUser(user.id, { type: "read", groupId: g2, seq: 1 });
      await bus.publishUser(user.id, { type: "read", groupId: g1, seq: 3 });
      await bus.publishUser(user.id, { type: "read", groupId: g1, seq: 2 }); // reordered: older than the one before
      assert.equal(sink.items.length, 0, "nothing before StreamReady");
      release();
      await opened;
      assert.equal(sink.items[0]?.message.payload.case, "ready");
      assert.deepEqual(markersOf(sink), [
        [g1, 3],
        [g2, 1],
      ]);
    } finally {
      opening.shutdown();
    }
  });
});

/** markersOf lists the ReadMarker items a sink received, as [group id, seq]. */
function markersOf(sink: RecordingSink): [string, number][] {
  return sink.items.flatMap((i) => (i.message.payload.case === "readMarker" ? [[i.message.payload.value.groupId, Number(i.message.payload.value.seq)] as [string, number]] : []));
}
