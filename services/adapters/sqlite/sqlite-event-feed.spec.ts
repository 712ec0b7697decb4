/**
 * SqliteEventFeed: the EventFeed contract on a database file (the feed's own
 * connection) and on an in-memory database (the store's connection shared),
 * plus what only the embedded feed does: the position it writes is the
 * acknowledged prefix, a restart resumes there, and a table emptied by the
 * purge is followed again from its first row.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import Database from "better-sqlite3";
import { eventFeedContract } from "../../../test/contract/event-feed.contract.js";
import { newId } from "../../core/ids.js";
import type { GroupEvent, UserRef } from "../../core/model.js";
import type { Clock, Subscription } from "../../core/ports.js";
import { systemClock } from "../../core/ports.js";
import { createSqliteEventFeed } from "./sqlite-event-feed.js";
import type { SqliteEventFeed } from "./sqlite-event-feed.js";
import { createSqliteStore } from "./sqlite-store.js";
import type { SqliteStore } from "./sqlite-store.js";

const DAY = 86_400_000;
const dirs: string[] = [];

function tempDb(): string {
  const dir = mkdtempSync(join(tmpdir(), "chat-feed-"));
  dirs.push(dir);
  return join(dir, "chat.db");
}

after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

eventFeedContract("sqlite file (own connection)", async () => {
  const path = tempDb();
  const store = createSqliteStore({ path, retentionMs: 30 * DAY, clock: systemClock });
  return {
    store,
    openFeed: async () => createSqliteEventFeed({ path, retryDelayMs: 100 }),
    dispose: () => store.close(),
  };
});

eventFeedContract("sqlite :memory: (the store's connection)", async () => {
  const store = createSqliteStore({ path: ":memory:", retentionMs: 30 * DAY, clock: systemClock });
  return {
    store,
    openFeed: async () => createSqliteEventFeed({ db: store.db, retryDelayMs: 100 }),
    dispose: () => store.close(),
  };
});

function userRef(): UserRef {
  const id = newId();
  return { id, username: `u-${id}` };
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Fixture is a store on a fresh file, with a clock the test may move. */
class Fixture {
  readonly path = tempDb();
  now = Date.now();
  readonly clock: Clock = { now: () => this.now };
  readonly store: SqliteStore;
  readonly owner = userRef();
  readonly groupId = newId();
  private readonly feeds: SqliteEventFeed[] = [];
  private readonly subs: Subscription[] = [];

  constructor(retentionMs = 30 * DAY) {
    this.store = createSqliteStore({ path: this.path, retentionMs, clock: this.clock });
  }

  async createGroup(groupId = this.groupId): Promise<void> {
    await this.store.createGroup({ id: groupId, name: "g", epoch: newId(), createdAt: this.now, owner: this.owner });
  }

  async send(text: string, groupId = this.groupId): Promise<GroupEvent> {
    const r = await this.store.appendMessage({ id: newId(), groupId, sender: this.owner, text, clientMessageId: newId(), sentAt: this.now });
    return r.event;
  }

  feed(): SqliteEventFeed {
    const f = createSqliteEventFeed({ path: this.path, retryDelayMs: 50 });
    this.feeds.push(f);
    return f;
  }

  async follow(feed: SqliteEventFeed, name: string, handler: (e: GroupEvent) => Promise<void>): Promise<Subscription> {
    const sub = await feed.follow(name, handler, { maxPending: 16, ackWaitMs: 30_000 });
    this.subs.push(sub);
    return sub;
  }

  /** savedPosition reads the name's row of feed_positions through a connection of its own. */
  savedPosition(name: string): number | undefined {
    const db = new Database(this.path, { readonly: true });
    try {
      return db.prepare<[string], number>("SELECT position FROM feed_positions WHERE name = ?").pluck().get(name);
    } finally {
      db.close();
    }
  }

  /** rowidOf is the events rowid of (group, seq). */
  rowidOf(e: GroupEvent): number {
    return this.store.db.prepare<[string, number], number>("SELECT rowid FROM events WHERE group_id = ? AND seq = ?").pluck().get(e.groupId, e.seq) ?? -1;
  }

  async close(): Promise<void> {
    for (const s of this.subs) s.unsubscribe();
    for (const f of this.feeds) await f.close();
    await this.store.close();
  }
}

describe("SqliteEventFeed", () => {
  it("writes the highest position below which every event is acknowledged, and a reopened feed resumes there", async () => {
    const fx = new Fixture();
    try {
      await fx.createGroup();
      const feed = fx.feed();
      const holds = new Map<string, () => void>();
      const handled = new Set<string>();
      await fx.follow(feed, "prefix", async (e) => {
        if (textOf(e) === "two") await new Promise<void>((resolve) => holds.set("two", resolve));
        handled.add(textOf(e) ?? "");
      });
      assert.equal(fx.savedPosition("prefix"), fx.rowidOf({ groupId: fx.groupId, seq: 1 } as GroupEvent), "a new name starts at the newest row, written at once");
      const sent = [await fx.send("one"), await fx.send("two"), await fx.send("three"), await fx.send("four")];
      await waitFor("one, three and four handled; two held", () => handled.size === 3 && holds.has("two"));
      await waitFor("the position after one", () => fx.savedPosition("prefix") === fx.rowidOf(sent[0] as GroupEvent));
      await sleep(200);
      assert.equal(fx.savedPosition("prefix"), fx.rowidOf(sent[0] as GroupEvent), "the position stays below the held event");
      holds.get("two")?.();
      await waitFor("the position after four", () => fx.savedPosition("prefix") === fx.rowidOf(sent[3] as GroupEvent));

      await feed.close();
      const later = await fx.send("five");
      const again: string[] = [];
      await fx.follow(fx.feed(), "prefix", async (e) => {
        again.push(textOf(e) ?? "");
      });
      await waitFor("five on the reopened feed", () => again.includes("five"));
      await sleep(200);
      assert.deepEqual(again, ["five"], "nothing at or below the written position comes again");
      assert.equal(later.seq, 6);
    } finally {
      await fx.close();
    }
  });

  it("after a restart hands out again every event above the written position (acknowledged ones above a held one too)", async () => {
    const fx = new Fixture();
    try {
      await fx.createGroup();
      const feed = fx.feed();
      const handled: string[] = [];
      await fx.follow(feed, "restart", async (e) => {
        if (textOf(e) === "held") return new Promise<void>(() => {});
        handled.push(textOf(e) ?? "");
      });
      for (const t of ["before", "held", "after 1", "after 2"]) await fx.send(t);
      await waitFor("the acknowledged events", () => handled.length === 3);
      await feed.close();

      const again: string[] = [];
      await fx.follow(fx.feed(), "restart", async (e) => {
        again.push(textOf(e) ?? "");
      });
      await waitFor("the held event and those after it", () => again.length >= 3);
      await sleep(200);
      assert.deepEqual(again, ["held", "after 1", "after 2"], "from the first unacknowledged event on, in order; not 'before'");
    } finally {
      await fx.close();
    }
  });

  it("follows the table from its first row again once the purge emptied it and rowids start over", async () => {
    const fx = new Fixture(60_000);
    const errors: unknown[] = [];
    try {
      await fx.createGroup();
      const feed = createSqliteEventFeed({ path: fx.path, retryDelayMs: 50, onError: (e) => errors.push(e) });
      const seen: string[] = [];
      await fx.follow(feed, "purged", async (e) => {
        seen.push(`${e.groupId === fx.groupId ? "old" : "new"}:${e.seq}`);
      });
      for (const t of ["a", "b", "c", "d"]) await fx.send(t);
      await waitFor("the first events", () => seen.length === 4);
      fx.now += 120_000;
      assert.equal(await fx.store.purgeExpired(), 5, "every event expired and was purged");
      const g2 = newId();
      await fx.createGroup(g2);
      await fx.send("e", g2);
      assert.equal(fx.rowidOf({ groupId: g2, seq: 2 } as GroupEvent), 2, "rowids started over");
      await waitFor("the events after the purge", () => seen.includes("new:1") && seen.includes("new:2"));
      assert.deepEqual(seen, ["old:2", "old:3", "old:4", "old:5", "new:1", "new:2"]);
      assert.ok(errors.some((e) => e instanceof Error && e.message.includes("shrank")), "the restart is reported");
      await feed.close();
    } finally {
      await fx.close();
    }
  });
});

function textOf(e: GroupEvent): string | undefined {
  return e.body.type === "message" ? e.body.message.text : undefined;
}
