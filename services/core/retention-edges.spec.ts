import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock } from "../../test/contract/store.contract.js";
import { createSqliteStore } from "../adapters/sqlite/sqlite-store.js";
import { newId } from "./ids.js";
import type { GroupStore } from "./ports.js";
import { RetentionEdges } from "./retention-edges.js";

const RETENTION = 1_000;

/** counted opens a real in-memory store and counts the edge reads that reach it. */
function counted(clock: FakeClock) {
  const store = createSqliteStore({ path: ":memory:", retentionMs: RETENTION, clock });
  const counts = { reads: 0 };
  const firstRetained: GroupStore["firstRetained"] = (groupId) => {
    counts.reads += 1;
    return store.firstRetained(groupId);
  };
  return {
    store,
    counts,
    edges: (maxGroups?: number, maxAgeMs?: number) => new RetentionEdges({ store: { firstRetained }, clock, maxGroups, maxAgeMs }),
  };
}

async function groupOf(store: ReturnType<typeof createSqliteStore>, clock: FakeClock) {
  const owner = { id: newId(), username: `u${newId().slice(-6)}` };
  const id = newId();
  await store.createGroup({ id, name: "g", epoch: "e", createdAt: clock.now(), owner });
  const send = () => store.appendMessage({ id: newId(), groupId: id, sender: owner, text: "hi", clientMessageId: newId(), sentAt: clock.now() });
  return { id, send };
}

describe("RetentionEdges", () => {
  it("reads a group's edge once and answers it until that event leaves retention, then reads the new edge", async () => {
    const clock = new FakeClock(Date.UTC(2030, 0, 1));
    const { store, counts, edges } = counted(clock);
    const e = edges();
    const g = await groupOf(store, clock); // seq 1 at t0
    clock.advance(600);
    await g.send(); // seq 2 at t0 + 600
    assert.equal(await e.firstRetainedSeq(g.id), 1);
    clock.advance(400); // t0 + 1000: seq 1 is retained for the last millisecond
    assert.equal(await e.firstRetainedSeq(g.id), 1);
    assert.equal(counts.reads, 1, "answered from memory while the edge event is retained");
    clock.advance(1); // t0 + 1001: seq 1 has left retention
    assert.equal(await e.firstRetainedSeq(g.id), 2);
    assert.equal(counts.reads, 2);
    assert.equal(await e.firstRetainedSeq(g.id), (await store.firstRetained(g.id))?.seq, "agrees with the store");
    await store.close();
  });

  it("reads the edge again after maxAgeMs even while the edge event is retained (a gap below it may have been filled)", async () => {
    const clock = new FakeClock(Date.UTC(2030, 0, 1));
    const { store, counts, edges } = counted(clock);
    const e = edges(undefined, 100);
    const g = await groupOf(store, clock);
    assert.equal(await e.firstRetainedSeq(g.id), 1);
    clock.advance(100);
    assert.equal(await e.firstRetainedSeq(g.id), 1);
    assert.equal(counts.reads, 1, "remembered for maxAgeMs");
    clock.advance(1);
    assert.equal(await e.firstRetainedSeq(g.id), 1);
    assert.equal(counts.reads, 2, "read again once maxAgeMs has passed, though seq 1 is still retained");
    await store.close();
  });

  it("does not remember a group with nothing retained: its next event becomes the edge", async () => {
    const clock = new FakeClock(Date.UTC(2030, 0, 1));
    const { store, counts, edges } = counted(clock);
    const e = edges();
    const g = await groupOf(store, clock);
    clock.advance(5_000); // everything expired
    assert.equal(await e.firstRetainedSeq(g.id), 0);
    await g.send(); // seq 2
    assert.equal(await e.firstRetainedSeq(g.id), 2);
    assert.equal(counts.reads, 2);
    await store.close();
  });

  it("keeps at most maxGroups edges, forgetting the oldest remembered", async () => {
    const clock = new FakeClock(Date.UTC(2030, 0, 1));
    const { store, counts, edges } = counted(clock);
    const e = edges(2);
    const [a, b, c] = [await groupOf(store, clock), await groupOf(store, clock), await groupOf(store, clock)];
    await e.firstRetainedSeq(a.id);
    await e.firstRetainedSeq(a.id);
    assert.equal(counts.reads, 1);
    await e.firstRetainedSeq(b.id);
    await e.firstRetainedSeq(c.id); // a, the oldest remembered, is forgotten
    assert.equal(counts.reads, 3);
    await e.firstRetainedSeq(c.id);
    assert.equal(counts.reads, 3);
    await e.firstRetainedSeq(a.id);
    assert.equal(counts.reads, 4);
    await store.close();
  });
});
