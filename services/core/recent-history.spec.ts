/**
 * pageFromRecent against a reference: random timelines, cached with random
 * capacities and lost records, read with every anchor and several limits.
 * Whenever the cache answers, the page must equal what the store would
 * return (the reference below mirrors GroupStore.listMessages).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MemoryRecentMessages } from "../adapters/memory/memory-recent-messages.js";
import type { ChatMessage, GroupEvent } from "./model.js";
import type { MessagePage } from "./ports.js";
import { type HistoryAnchor, type StoreBounds, pageFromRecent, recentScanFor } from "./recent-history.js";

/** random is a small seeded PRNG (mulberry32), so a failure names a reproducible seed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const actor = { id: "u", username: "u" };

function makeTimeline(n: number, rnd: () => number): GroupEvent[] {
  return Array.from({ length: n }, (_, i): GroupEvent => {
    const seq = i + 1;
    if (seq > 1 && rnd() < 0.7) {
      const message: ChatMessage = { id: `m${seq}`, groupId: "g", seq, sender: actor, text: `t${seq}`, sentAt: seq, clientMessageId: `c${seq}` };
      return { groupId: "g", seq, at: seq, actor, body: { type: "message", message } };
    }
    return { groupId: "g", seq, at: seq, actor, body: { type: "group_renamed", name: `n${seq}` } };
  });
}

/** reference is GroupStore.listMessages over the events a store with these bounds holds. */
function reference(events: readonly GroupEvent[], bounds: StoreBounds, anchor: HistoryAnchor, limit: number): MessagePage {
  const retained = events.filter((e) => bounds.firstRetainedSeq > 0 && e.seq >= bounds.firstRetainedSeq && e.seq <= bounds.headSeq);
  const all = retained.flatMap((e) => (e.body.type === "message" ? [e.body.message] : []));
  const before = anchor.beforeSeq ?? Number.MAX_SAFE_INTEGER;
  if (anchor.afterSeq !== undefined) {
    const rows = all.filter((m) => m.seq > anchor.afterSeq! && m.seq < before);
    return { messages: rows.slice(0, limit), hasMore: rows.length > limit };
  }
  const rows = all.filter((m) => m.seq < before).reverse();
  return { messages: rows.slice(0, limit).reverse(), hasMore: rows.length > limit };
}

describe("pageFromRecent", () => {
  it("answers only pages equal to the store's, over random timelines, caches and anchors", async () => {
    let hits = 0;
    let reads = 0;
    for (let seed = 1; seed <= 150; seed++) {
      const rnd = random(seed);
      const events = makeTimeline(1 + Math.floor(rnd() * 30), rnd);
      const head = events.length;
      const recent = new MemoryRecentMessages({ perGroup: 1 + Math.floor(rnd() * 12), maxGroups: 10 });
      const lossRate = rnd() < 0.5 ? 0 : 0.15;
      for (const e of events) if (rnd() >= lossRate) await recent.record(e);
      const bounds: StoreBounds = {
        headSeq: rnd() < 0.2 ? Math.max(1, head - Math.floor(rnd() * 3)) : head, // the store read before the newest records
        firstRetainedSeq: rnd() < 0.3 ? Math.floor(rnd() * (head + 1)) : 1,
      };
      const anchors: HistoryAnchor[] = [{}];
      for (let s = 0; s <= head + 2; s++) anchors.push({ beforeSeq: s + 1 }, { afterSeq: s });
      anchors.push({ afterSeq: 2, beforeSeq: head - 1 });
      for (const anchor of anchors) {
        for (const limit of [1, 2, 3, 5, 50]) {
          reads++;
          const scan = await recent.scan("g", recentScanFor(anchor, limit));
          const page = pageFromRecent(anchor, limit, scan, bounds);
          if (!page) continue;
          hits++;
          const want = reference(events, bounds, anchor, limit);
          assert.deepEqual(page, want, `seed ${seed}, anchor ${JSON.stringify(anchor)}, limit ${limit}, bounds ${JSON.stringify(bounds)}`);
        }
      }
    }
    assert.ok(hits > reads / 4, `the cache answered ${hits} of ${reads} reads`);
  });

  it("answers the newest page of a fully cached group, and misses when the store is ahead of the cache", async () => {
    const rnd = random(7);
    const events = makeTimeline(20, rnd);
    const recent = new MemoryRecentMessages({ perGroup: 100, maxGroups: 10 });
    for (const e of events.slice(0, 19)) await recent.record(e);
    const scan = await recent.scan("g", recentScanFor({}, 5));
    assert.ok(pageFromRecent({}, 5, scan, { headSeq: 19, firstRetainedSeq: 1 }));
    assert.equal(pageFromRecent({}, 5, scan, { headSeq: 20, firstRetainedSeq: 1 }), undefined, "event 20 may be a message the cache lacks");
  });

  it("answers an empty page without the cache when the range holds nothing retained", () => {
    const none = { window: undefined, messages: [] };
    assert.deepEqual(pageFromRecent({ afterSeq: 9 }, 5, none, { headSeq: 9, firstRetainedSeq: 1 }), { messages: [], hasMore: false });
    assert.deepEqual(pageFromRecent({ beforeSeq: 4 }, 5, none, { headSeq: 9, firstRetainedSeq: 4 }), { messages: [], hasMore: false });
    assert.deepEqual(pageFromRecent({}, 5, none, { headSeq: 9, firstRetainedSeq: 0 }), { messages: [], hasMore: false });
    assert.equal(pageFromRecent({}, 5, none, { headSeq: 9, firstRetainedSeq: 1 }), undefined);
  });
});
