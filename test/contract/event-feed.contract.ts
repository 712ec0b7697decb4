/**
 * Contract suite for the EventFeed port (services/core/ports.ts). Every
 * EventFeed adapter (SQLite for the embedded default, JetStream in
 * production) runs it with a Store whose appends it follows; it tests only
 * what the port's doc comment promises.
 *
 * The suite may run against a shared, long-lived backend: every test uses a
 * fresh follower name, fresh groups and users (newId()), and never assumes
 * it is alone on the store. "Not delivered" is asserted after a later
 * marker event has arrived (a feed hands events out in about append order),
 * plus a quiet period.
 */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, afterEach, before, describe, it } from "node:test";
import { isChatError } from "../../services/core/errors.js";
import { newId } from "../../services/core/ids.js";
import type { GroupEvent, UserRef } from "../../services/core/model.js";
import type { EventFeed, Store, Subscription } from "../../services/core/ports.js";

/** ClosableFeed is a feed a test can close, as a process stopping would. */
export type ClosableFeed = EventFeed & { close(): Promise<void> };

/** EventFeedHarness is one backend: a store to append with and a way to open feeds on it. */
export interface EventFeedHarness {
  /** The store whose appended events the feeds deliver (and which the suite reads them back from). */
  readonly store: Store;
  /**
   * openFeed opens a new feed on the backend, as a process starting would
   * (its own connection where the adapter has one). Its pause before an
   * event whose handler rejected comes again should be short (≤ 200 ms).
   */
  openFeed(): Promise<ClosableFeed>;
  /** dispose releases the backend after every feed the suite opened was closed. */
  dispose(): Promise<void>;
}

/** EventFeedContractOptions tunes eventFeedContract for one adapter. */
export interface EventFeedContractOptions {
  /** Skip the whole suite (e.g. when the adapter's servers are not configured). */
  readonly skip?: boolean | string;
  /** timeoutMs bounds every wait for a delivery; default 20000. */
  readonly timeoutMs?: number;
  /** quietMs is how long "not delivered" and "no more than" checks wait; default 300. */
  readonly quietMs?: number;
}

function userRef(): UserRef {
  const id = newId();
  return { id, username: `u-${id}` };
}

/** followerName is a fresh follower name (names are at most 32 characters). */
function followerName(): string {
  return `t-${newId().replaceAll("-", "").slice(0, 24)}`;
}

function key(e: { readonly groupId: string; readonly seq: number }): string {
  return `${e.groupId}/${e.seq}`;
}

function textOf(e: GroupEvent): string | undefined {
  return e.body.type === "message" ? e.body.message.text : undefined;
}

/** Recorder keeps every event a handler was called with, in call order. */
class Recorder {
  readonly events: GroupEvent[] = [];
  count(k: string): number {
    return this.events.filter((e) => key(e) === k).length;
  }
  keys(): Set<string> {
    return new Set(this.events.map(key));
  }
  has(k: string): boolean {
    return this.events.some((e) => key(e) === k);
  }
}

/**
 * eventFeedContract registers the EventFeed contract tests for one adapter.
 * `make` opens the backend once for the suite; the suite closes every feed
 * it opened, then calls `dispose`.
 */
export function eventFeedContract(name: string, make: () => Promise<EventFeedHarness>, opts: EventFeedContractOptions = {}): void {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const quietMs = opts.quietMs ?? 300;

  describe(`EventFeed contract: ${name}`, { skip: opts.skip ?? false }, () => {
    let h: EventFeedHarness;
    const feeds = new Set<ClosableFeed>();
    let subs: Subscription[] = [];

    async function openFeed(): Promise<ClosableFeed> {
      const feed = await h.openFeed();
      feeds.add(feed);
      return feed;
    }

    async function closeFeed(feed: ClosableFeed): Promise<void> {
      feeds.delete(feed);
      await feed.close();
    }

    async function follow(
      feed: EventFeed,
      nameOf: string,
      handler: (e: GroupEvent) => Promise<void>,
      o: { maxPending: number; ackWaitMs: number } = { maxPending: 16, ackWaitMs: 30_000 },
    ): Promise<Subscription> {
      const sub = await feed.follow(nameOf, handler, o);
      subs.push(sub);
      return sub;
    }

    async function waitFor(what: string, condition: () => boolean): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!condition()) {
        if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await sleep(10);
      }
    }

    /** group creates a group owned by a fresh user (its member_added is seq 1) and returns its id and owner. */
    async function group(): Promise<{ id: string; owner: UserRef }> {
      const owner = userRef();
      const id = newId();
      await h.store.createGroup({ id, name: `g-${id.slice(0, 8)}`, epoch: newId(), createdAt: Date.now(), owner });
      return { id, owner };
    }

    async function send(groupId: string, sender: UserRef, text: string): Promise<GroupEvent> {
      const r = await h.store.appendMessage({ id: newId(), groupId, sender, text, clientMessageId: newId(), sentAt: Date.now() });
      return r.event;
    }

    /** stored reads every retained event of the group back from the store, by key. */
    async function stored(groupId: string): Promise<Map<string, GroupEvent>> {
      return new Map((await h.store.readEvents(groupId, 0, 1000)).map((e) => [key(e), e]));
    }

    before(async () => {
      h = await make();
    });

    afterEach(() => {
      for (const s of subs) s.unsubscribe();
      subs = [];
    });

    after(async () => {
      for (const s of subs) s.unsubscribe();
      for (const f of feeds) await f.close();
      await h?.dispose();
    });

    it("delivers every event appended after follow resolves (messages and changes, several groups), each as stored", async () => {
      const feed = await openFeed();
      const rec = new Recorder();
      await follow(feed, followerName(), async (e) => {
        rec.events.push(e);
      });
      const groupIds: string[] = [];
      for (let i = 0; i < 3; i++) {
        const g = await group();
        groupIds.push(g.id);
        const member = userRef();
        const at = Date.now();
        await h.store.changeGroup(g.id, [member.id], g.owner, at, () => ({ type: "add", member, role: "member" }));
        await Promise.all([send(g.id, g.owner, `a${i}`), send(g.id, member, `b${i}`), send(g.id, g.owner, `c${i}`)]);
        await h.store.changeGroup(g.id, [member.id], g.owner, at, () => ({ type: "set_role", member, role: "admin" }));
        await h.store.changeGroup(g.id, [], g.owner, at, () => ({ type: "rename", name: `renamed ${i} ✓` }));
        await h.store.changeGroup(g.id, [member.id], g.owner, at, () => ({ type: "remove", member }));
      }
      const expected = new Map<string, GroupEvent>();
      for (const g of groupIds) for (const [k, e] of await stored(g)) expected.set(k, e);
      assert.equal(expected.size, 3 * 8, "the store holds 8 events per group");
      await waitFor("every appended event", () => [...expected.keys()].every((k) => rec.has(k)));
      await sleep(quietMs);
      for (const e of rec.events) {
        const want = expected.get(key(e));
        assert.ok(want, `delivered ${key(e)}, which this test did not append`);
        assert.deepEqual(e, want, `event ${key(e)} as delivered equals the stored one`);
      }
      const types = new Set(rec.events.map((e) => e.body.type));
      assert.deepEqual([...types].sort(), ["group_renamed", "member_added", "member_removed", "member_role_changed", "message"]);
    });

    it("starts a new name at the events appended after its first follow", async () => {
      const g = await group();
      for (const t of ["old 1", "old 2", "old 3"]) await send(g.id, g.owner, t);
      const feed = await openFeed();
      const rec = new Recorder();
      await follow(feed, followerName(), async (e) => {
        rec.events.push(e);
      });
      const fresh = [await send(g.id, g.owner, "new 1"), await send(g.id, g.owner, "new 2")];
      await waitFor("the new events", () => fresh.every((e) => rec.has(key(e))));
      const marker = await send(g.id, g.owner, "marker");
      await waitFor("the marker", () => rec.has(key(marker)));
      await sleep(quietMs);
      assert.deepEqual(
        rec.events.map((e) => e.seq).sort((a, b) => a - b),
        [5, 6, 7],
        "only the events appended after follow (seqs 1-4 came before it)",
      );
    });

    it("hands an event whose handler rejected out again", async () => {
      const feed = await openFeed();
      const attempts = new Map<string, GroupEvent[]>();
      const done = new Set<string>();
      await follow(feed, followerName(), async (e) => {
        const list = attempts.get(key(e)) ?? [];
        list.push(e);
        attempts.set(key(e), list);
        if (list.length === 1) throw new Error("first attempt fails");
        done.add(key(e));
      });
      const g = await group();
      const events = [await send(g.id, g.owner, "one"), await send(g.id, g.owner, "two")];
      await waitFor("a second, successful attempt of each event", () => events.every((e) => done.has(key(e))));
      for (const e of events) {
        const list = attempts.get(key(e)) ?? [];
        assert.ok(list.length >= 2, `${key(e)} came again after its rejection`);
        for (const again of list) assert.deepEqual(again, e, `${key(e)} comes again unchanged`);
      }
    });

    it("hands an event whose handler did not finish within ackWaitMs out again", async () => {
      const feed = await openFeed();
      const attempts = new Map<string, number>();
      const done = new Set<string>();
      await follow(
        feed,
        followerName(),
        async (e) => {
          const n = (attempts.get(key(e)) ?? 0) + 1;
          attempts.set(key(e), n);
          if (n === 1) return new Promise<void>(() => {}); // never settles
          done.add(key(e));
        },
        { maxPending: 8, ackWaitMs: 1000 },
      );
      const g = await group();
      const events = [await send(g.id, g.owner, "slow 1"), await send(g.id, g.owner, "slow 2")];
      await waitFor("a second attempt of each event", () => events.every((e) => done.has(key(e))));
      for (const e of events) assert.ok((attempts.get(key(e)) ?? 0) >= 2, `${key(e)} came again`);
    });

    it("gives a stopped follower's unacknowledged events to the next follower of its name, and not its acknowledged ones", async () => {
      const feed = await openFeed();
      const nameOf = followerName();
      const first = new Recorder();
      const acked = new Set<string>();
      const g = await group();
      const sub = await follow(feed, nameOf, async (e) => {
        first.events.push(e);
        if (textOf(e)?.startsWith("hold")) return new Promise<void>(() => {}); // never settles
        acked.add(key(e));
      });
      const sent: GroupEvent[] = [];
      for (const t of ["ack 1", "ack 2", "hold 1", "hold 2", "ack 3"]) sent.push(await send(g.id, g.owner, t));
      await waitFor("every event at the first follower", () => sent.every((e) => first.has(key(e))));
      await waitFor("the acknowledgements", () => acked.size === 3);
      sub.unsubscribe();

      const second = new Recorder();
      await follow(feed, nameOf, async (e) => {
        second.events.push(e);
      });
      const marker = await send(g.id, g.owner, "marker");
      const want = [sent[2], sent[3], marker].map((e) => key(e as GroupEvent));
      await waitFor("the unacknowledged events and the marker at the second follower", () => want.every((k) => second.has(k)));
      await sleep(quietMs);
      assert.deepEqual(
        second.events.map((e) => textOf(e)).sort(),
        ["hold 1", "hold 2", "marker"],
        "the second follower gets the held events once each, and none of the acknowledged ones",
      );
    });

    it("resumes a name on a reopened feed after what it acknowledged, with what was appended meanwhile", async () => {
      const nameOf = followerName();
      const g = await group();
      const feed1 = await openFeed();
      const before = new Recorder();
      const sub = await follow(feed1, nameOf, async (e) => {
        before.events.push(e);
      });
      const early = [await send(g.id, g.owner, "early 1"), await send(g.id, g.owner, "early 2"), await send(g.id, g.owner, "early 3")];
      await waitFor("the early events", () => early.every((e) => before.has(key(e))));
      sub.unsubscribe();
      await closeFeed(feed1);
      const meanwhile = [await send(g.id, g.owner, "meanwhile 1"), await send(g.id, g.owner, "meanwhile 2")];

      const feed2 = await openFeed();
      const afterwards = new Recorder();
      await follow(feed2, nameOf, async (e) => {
        afterwards.events.push(e);
      });
      const marker = await send(g.id, g.owner, "marker");
      await waitFor("the events appended meanwhile and the marker", () => [...meanwhile, marker].every((e) => afterwards.has(key(e))));
      await sleep(quietMs);
      assert.deepEqual(
        afterwards.events.map((e) => textOf(e)).sort(),
        ["marker", "meanwhile 1", "meanwhile 2"],
        "each once, and none of the acknowledged early events",
      );
    });

    it("gives each event to exactly one of two instances following one name", async () => {
      const feed = await openFeed();
      const nameOf = followerName();
      const recs = [new Recorder(), new Recorder()];
      for (const rec of recs) {
        await follow(
          feed,
          nameOf,
          async (e) => {
            rec.events.push(e);
            await sleep(1);
          },
          { maxPending: 4, ackWaitMs: 30_000 },
        );
      }
      const expected = new Set<string>();
      const groups = [await group(), await group(), await group()];
      await Promise.all(
        groups.map(async (g) => {
          for (let i = 0; i < 10; i++) await send(g.id, g.owner, `m${i}`);
        }),
      );
      for (const g of groups) for (const k of (await stored(g.id)).keys()) expected.add(k);
      assert.equal(expected.size, 33);
      const all = () => [...(recs[0] as Recorder).events, ...(recs[1] as Recorder).events];
      await waitFor("every event at one of the instances", () => [...expected].every((k) => all().some((e) => key(e) === k)));
      const marker = await send((groups[0] as { id: string }).id, (groups[0] as { owner: UserRef }).owner, "marker");
      expected.add(key(marker));
      await waitFor("the marker", () => all().some((e) => key(e) === key(marker)));
      await sleep(quietMs);
      const counts = new Map<string, number>();
      for (const e of all()) counts.set(key(e), (counts.get(key(e)) ?? 0) + 1);
      assert.deepEqual([...counts.keys()].sort(), [...expected].sort(), "the instances got exactly the appended events");
      for (const [k, n] of counts) assert.equal(n, 1, `${k} was handled once`);
    });

    it("never has more than maxPending events unacknowledged at one instance", async () => {
      const g = await group();
      const feed = await openFeed();
      const nameOf = followerName();
      const limits = [2, 3];
      const active = [0, 0];
      const highest = [0, 0];
      const held: (() => void)[] = [];
      let holding = true;
      const rec = new Recorder();
      for (const [i, maxPending] of limits.entries()) {
        await follow(
          feed,
          nameOf,
          async (e) => {
            rec.events.push(e);
            active[i] = (active[i] ?? 0) + 1;
            highest[i] = Math.max(highest[i] ?? 0, active[i] ?? 0);
            if (holding) await new Promise<void>((resolve) => held.push(resolve));
            else await sleep(1);
            active[i] = (active[i] ?? 0) - 1;
          },
          { maxPending, ackWaitMs: 60_000 },
        );
      }
      const sent: GroupEvent[] = [];
      for (let i = 0; i < 11; i++) sent.push(await send(g.id, g.owner, `m${i}`));
      await waitFor("both instances full", () => held.length === 5);
      await sleep(quietMs);
      assert.deepEqual(active, [2, 3], "each instance holds exactly its maxPending");
      assert.equal(held.length, 5, "no event beyond the instances' maxPending was handed out");
      holding = false;
      for (const release of held.splice(0)) release();
      await waitFor("every event", () => sent.every((e) => rec.has(key(e))));
      await sleep(quietMs);
      assert.deepEqual(highest, [2, 3], "no instance ever had more than its maxPending unacknowledged");
      assert.deepEqual(rec.events.map(key).sort(), sent.map(key).sort(), "each event once");
    });

    it("rejects a malformed name or bounds with InvalidArgument", async () => {
      const feed = await openFeed();
      const handler = async () => {};
      for (const bad of ["", "a.b", "a b", "Upper", "x".repeat(33), "a>", "a*"]) {
        await assert.rejects(feed.follow(bad, handler, { maxPending: 1, ackWaitMs: 1000 }), (e) => isChatError(e, "InvalidArgument"), `name ${JSON.stringify(bad)}`);
      }
      await assert.rejects(feed.follow(followerName(), handler, { maxPending: 0, ackWaitMs: 1000 }), (e) => isChatError(e, "InvalidArgument"));
      await assert.rejects(feed.follow(followerName(), handler, { maxPending: 1, ackWaitMs: 0 }), (e) => isChatError(e, "InvalidArgument"));
    });
  });
}
