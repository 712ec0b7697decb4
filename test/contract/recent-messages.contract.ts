/**
 * Contract suite for the RecentMessages port (services/core/ports.ts). Every
 * adapter (memory, Redis) runs it; it tests only what the port promises: the
 * window holds every message of its range, extends on the next seq, restarts
 * on a gap, ignores old or repeated events, and scans return the asked
 * messages in order. Capacity is a constructor option every adapter has.
 *
 * The suite may run against a shared, long-lived server: every test uses
 * fresh group ids (newId()).
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { newId } from "../../services/core/ids.js";
import type { ChatMessage, GroupEvent } from "../../services/core/model.js";
import type { RecentMessages } from "../../services/core/ports.js";

/** RecentMessagesContractOptions tunes recentMessagesContract for one adapter. */
export interface RecentMessagesContractOptions {
  readonly skip?: boolean;
  /** cleanup runs once after the suite (delete the run's keys, close clients). */
  readonly cleanup?: () => Promise<void>;
}

const ALICE = { id: "u-alice", username: "alice" };
const ALL = Number.MAX_SAFE_INTEGER;

/** message is the event for a message at `seq`; its text is unicode, to prove it round-trips. */
function message(groupId: string, seq: number): GroupEvent & { body: { type: "message"; message: ChatMessage } } {
  const m: ChatMessage = {
    id: `m-${seq}-${newId()}`,
    groupId,
    seq,
    sender: ALICE,
    text: `héllo ${seq} "quoted" 🚀`,
    sentAt: 1_700_000_000_000 + seq,
    clientMessageId: `c-${seq}`,
  };
  return { groupId, seq, at: m.sentAt, actor: ALICE, body: { type: "message", message: m } };
}

/** renamed is a non-message event at `seq`. */
function renamed(groupId: string, seq: number): GroupEvent {
  return { groupId, seq, at: 1_700_000_000_000 + seq, actor: ALICE, body: { type: "group_renamed", name: `n${seq}` } };
}

/** timeline makes events 1..n: messages, except the seqs in `others`. */
function timeline(groupId: string, n: number, others: readonly number[] = []): GroupEvent[] {
  return Array.from({ length: n }, (_, i) => (others.includes(i + 1) ? renamed(groupId, i + 1) : message(groupId, i + 1)));
}

function seqs(messages: readonly ChatMessage[]): number[] {
  return messages.map((m) => m.seq);
}

/**
 * recentMessagesContract registers the contract tests for one adapter.
 * `make(perGroup)` returns an adapter holding at most `perGroup` messages per
 * group; it may be called several times.
 */
export function recentMessagesContract(
  name: string,
  make: (perGroup: number) => Promise<RecentMessages>,
  opts: RecentMessagesContractOptions = {},
): void {
  describe(`RecentMessages contract: ${name}`, { skip: opts.skip ?? false }, () => {
    after(async () => {
      await opts.cleanup?.();
    });

    async function recorded(perGroup: number, events: readonly GroupEvent[]): Promise<RecentMessages> {
      const recent = await make(perGroup);
      for (const e of events) await recent.record(e);
      return recent;
    }

    it("knows nothing of a group it never saw", async () => {
      const recent = await make(10);
      assert.deepEqual(await recent.scan(newId(), { order: "desc", from: 1, to: ALL, take: 5 }), { window: undefined, messages: [] });
    });

    it("holds every message of its window and scans it in both orders, with take and range limits", async () => {
      const g = newId();
      const events = timeline(g, 10, [1, 5]);
      const recent = await recorded(100, events);
      const desc = await recent.scan(g, { order: "desc", from: 1, to: ALL, take: 3 });
      assert.deepEqual(desc.window, { lo: 1, hi: 10 });
      assert.deepEqual(seqs(desc.messages), [10, 9, 8]);
      const byseq = new Map(events.map((e) => [e.seq, e]));
      for (const m of desc.messages) {
        const e = byseq.get(m.seq);
        assert.ok(e?.body.type === "message");
        assert.deepEqual(m, e.body.message, "a held message comes back exactly as recorded");
      }
      assert.deepEqual(seqs((await recent.scan(g, { order: "asc", from: 3, to: ALL, take: 3 })).messages), [3, 4, 6]);
      assert.deepEqual(seqs((await recent.scan(g, { order: "asc", from: 1, to: 6, take: 100 })).messages), [2, 3, 4, 6]);
      assert.deepEqual(seqs((await recent.scan(g, { order: "desc", from: 2, to: 6, take: 2 })).messages), [6, 4]);
      assert.deepEqual(seqs((await recent.scan(g, { order: "desc", from: 11, to: ALL, take: 2 })).messages), []);
    });

    it("ignores an event it already saw or one older than its window", async () => {
      const g = newId();
      const events = timeline(g, 6);
      const recent = await recorded(100, events);
      await recent.record(events[3]!);
      await recent.record({ ...message(g, 2), body: { type: "message", message: { ...message(g, 2).body.message, text: "other" } } });
      const all = await recent.scan(g, { order: "asc", from: 1, to: ALL, take: 100 });
      assert.deepEqual(all.window, { lo: 1, hi: 6 });
      assert.deepEqual(seqs(all.messages), [1, 2, 3, 4, 5, 6]);
      assert.notEqual(all.messages[1]!.text, "other");
    });

    it("starts a new window at a gap, and does not backfill it from a late event", async () => {
      const g = newId();
      const recent = await recorded(100, timeline(g, 5));
      await recent.record(message(g, 8));
      let all = await recent.scan(g, { order: "asc", from: 1, to: ALL, take: 100 });
      assert.deepEqual(all.window, { lo: 8, hi: 8 });
      assert.deepEqual(seqs(all.messages), [8], "nothing from before the gap is claimed");
      await recent.record(message(g, 6));
      await recent.record(renamed(g, 9));
      await recent.record(message(g, 10));
      all = await recent.scan(g, { order: "asc", from: 1, to: ALL, take: 100 });
      assert.deepEqual(all.window, { lo: 8, hi: 10 });
      assert.deepEqual(seqs(all.messages), [8, 10]);
    });

    it("a gap at a non-message event restarts the window empty", async () => {
      const g = newId();
      const recent = await recorded(100, timeline(g, 3));
      await recent.record(renamed(g, 7));
      const all = await recent.scan(g, { order: "desc", from: 1, to: ALL, take: 100 });
      assert.deepEqual(all.window, { lo: 7, hi: 7 });
      assert.deepEqual(all.messages, []);
    });

    it("keeps the newest perGroup messages and raises lo past the dropped ones", async () => {
      const g = newId();
      // Messages at 2, 4, 6, 8; other events at 1, 3, 5, 7, 9.
      const recent = await recorded(2, timeline(g, 9, [1, 3, 5, 7, 9]));
      const all = await recent.scan(g, { order: "asc", from: 1, to: ALL, take: 100 });
      assert.deepEqual(seqs(all.messages), [6, 8]);
      assert.deepEqual(all.window, { lo: 5, hi: 9 }, "lo is just past the newest dropped message");
    });

    it("keeps groups apart", async () => {
      const [g1, g2] = [newId(), newId()];
      const recent = await make(100);
      for (const e of timeline(g1, 3)) await recent.record(e);
      for (const e of timeline(g2, 5, [2])) await recent.record(e);
      const a = await recent.scan(g1, { order: "asc", from: 1, to: ALL, take: 100 });
      const b = await recent.scan(g2, { order: "asc", from: 1, to: ALL, take: 100 });
      assert.deepEqual([a.window, seqs(a.messages)], [{ lo: 1, hi: 3 }, [1, 2, 3]]);
      assert.deepEqual([b.window, seqs(b.messages)], [{ lo: 1, hi: 5 }, [1, 3, 4, 5]]);
      assert.ok(b.messages.every((m) => m.groupId === g2));
    });
  });
}
