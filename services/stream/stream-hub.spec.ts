import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { MemoryEventBus } from "../adapters/memory/memory-bus.js";
import type { Principal } from "../auth/access-tokens.js";
import { newId } from "../core/ids.js";
import type { GroupEvent, UserRef } from "../core/model.js";
import { type Store, systemClock } from "../core/ports.js";
import { type HubFixture, RecordingSink, createHubFixture } from "./hub-fixture.js";
import { StreamHub } from "./stream-hub.js";

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
});
