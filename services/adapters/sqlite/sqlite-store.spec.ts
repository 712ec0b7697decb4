import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import Database from "better-sqlite3";
import { newId } from "../../core/ids.js";
import { systemClock } from "../../core/ports.js";
import { FakeClock, storeContract } from "../../../test/contract/store.contract.js";
import { createSqliteStore } from "./sqlite-store.js";
import { MIGRATIONS, migrate } from "./schema.js";

const dir = mkdtempSync(join(tmpdir(), "sqlite-store-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** eventIndexes lists the indexes of the events table, by name. */
function eventIndexes(db: Database.Database): unknown[] {
  return db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY name").pluck().all();
}

let files = 0;
/** freshPath returns a new database file path inside the temp dir (in a not-yet-existing subdirectory). */
function freshPath(): string {
  files += 1;
  return join(dir, `run-${files}`, "chat.db");
}

storeContract("sqlite", async (opts) => createSqliteStore({ path: freshPath(), ...opts }));

describe("SqliteStore", () => {
  it("commits the appends of one turn together: each stands or fails alone, and a later group change applies after them", async () => {
    const store = createSqliteStore({ path: freshPath(), retentionMs: 60_000, clock: systemClock });
    try {
      const owner = { id: newId(), username: "olga" };
      const stranger = { id: newId(), username: "sam" };
      const groupId = newId();
      await store.createGroup({ id: groupId, name: "g", epoch: "e", createdAt: Date.now(), owner });
      await store.changeGroup(groupId, [stranger.id], owner, Date.now(), () => ({ type: "add", member: stranger, role: "member" }));
      const draft = (sender: typeof owner, c: string) => ({ id: newId(), groupId, sender, text: c, clientMessageId: c, sentAt: Date.now() });
      // One turn: three appends (one a retry of another), then stranger is removed, then stranger sends again.
      const calls = [store.appendMessage(draft(owner, "a")), store.appendMessage(draft(stranger, "b")), store.appendMessage(draft(owner, "a"))];
      const removal = store.changeGroup(groupId, [stranger.id], owner, Date.now(), () => ({ type: "remove", member: stranger }));
      const late = store.appendMessage(draft(stranger, "c"));
      const [a, b, retry] = await Promise.all(calls);
      assert.deepEqual([a?.event.seq, b?.event.seq, retry?.event.seq, retry?.duplicate], [3, 4, 3, true]);
      assert.equal((await removal).seq, 5, "the change applied after the appends called before it");
      await assert.rejects(late, /not found/i, "the append called after the removal is refused");
      assert.deepEqual((await store.readEvents(groupId, 0, 10)).map((e) => e.seq), [1, 2, 3, 4, 5]);
    } finally {
      await store.close();
    }
  });

  it("keeps data across close and reopen of the same file", async () => {
    const path = freshPath();
    const owner = { id: newId(), username: "alice" };
    const groupId = newId();
    const first = createSqliteStore({ path, retentionMs: 60_000, clock: systemClock });
    await first.createUser({ id: owner.id, username: "alice", passwordHash: "h", createdAt: Date.now() });
    await first.createGroup({ id: groupId, name: "g", epoch: "e", createdAt: Date.now(), owner });
    const sent = await first.appendMessage({
      id: newId(),
      groupId,
      sender: owner,
      text: "hi",
      clientMessageId: "c1",
      sentAt: Date.now(),
    });
    await first.close();

    const second = createSqliteStore({ path, retentionMs: 60_000, clock: systemClock });
    try {
      assert.equal((await second.findUserByName("alice"))?.id, owner.id);
      assert.equal((await second.getGroup(groupId))?.headSeq, 2);
      assert.deepEqual(await second.readEvents(groupId, 1, 10), [sent.event]);
      const retry = await second.appendMessage({
        id: newId(),
        groupId,
        sender: owner,
        text: "hi",
        clientMessageId: "c1",
        sentAt: Date.now(),
      });
      assert.equal(retry.duplicate, true);
      assert.equal(retry.event.seq, 2);
    } finally {
      await second.close();
    }
  });

  it("sets WAL, synchronous=FULL, foreign keys and busy timeout", async () => {
    const store = createSqliteStore({ path: freshPath(), retentionMs: 1000, clock: systemClock });
    try {
      // the handle is private; reading it here checks the durability settings the class doc promises
      const db = (store as unknown as { db: Database.Database }).db;
      assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
      assert.equal(db.pragma("synchronous", { simple: true }), 2, "FULL");
      assert.equal(db.pragma("foreign_keys", { simple: true }), 1);
      assert.equal(db.pragma("busy_timeout", { simple: true }), 5000);
    } finally {
      await store.close();
    }
  });

  it("migrates idempotently and records each version once", () => {
    const db = new Database(":memory:");
    try {
      assert.deepEqual(
        migrate(db),
        MIGRATIONS.map((m) => m.version),
      );
      assert.deepEqual(migrate(db), []);
      const versions = db.prepare("SELECT version FROM schema_migrations ORDER BY version").pluck().all();
      assert.deepEqual(
        versions,
        MIGRATIONS.map((m) => m.version),
      );
    } finally {
      db.close();
    }
  });

  it("reads every page of events and messages through an index range, never a scan", async () => {
    const store = createSqliteStore({ path: ":memory:", retentionMs: 60_000, clock: systemClock });
    try {
      // The store's own prepared statements, planned by SQLite as they would run.
      const stmts = (store as unknown as { stmts: Record<string, { source: string }> }).stmts;
      const db = (store as unknown as { db: Database.Database }).db;
      const plan = (name: string) => {
        const sql = stmts[name]?.source;
        assert.ok(sql, name);
        const params = Array.from(sql.matchAll(/\?/g), () => 1);
        return db
          .prepare<unknown[], { detail: string }>(`EXPLAIN QUERY PLAN ${sql}`)
          .all(...params)
          .map((r) => r.detail)
          .join("; ");
      };
      const primaryKey = /^SEARCH events USING INDEX sqlite_autoindex_events_1 \(group_id=\? AND seq[<>]\?/;
      const planned: [string, RegExp][] = [
        ["messagesNewest", primaryKey],
        ["messagesOldest", primaryKey],
        ["eventsAfter", primaryKey],
        ["messageByClientId", /^SEARCH events USING INDEX events_dedupe \(group_id=\? AND actor_id=\? AND client_message_id=\?\)$/],
        ["purge", /^SEARCH events USING (COVERING )?INDEX events_at \(at<\?\)$/],
      ];
      for (const [name, expected] of planned) {
        const p = plan(name);
        assert.match(p, expected, name);
        // No step of the plan reads the table whole or sorts rows the index did not order.
        assert.doesNotMatch(p, /SCAN|TEMP B-TREE/, name);
      }
      const indexes = eventIndexes(db);
      assert.deepEqual(indexes, ["events_at", "events_dedupe", "sqlite_autoindex_events_1"], "no index beyond these: each costs every append a page");
    } finally {
      await store.close();
    }
  });

  it("answers the per-stream session check with an index seek, not a read of every token of the family", async () => {
    const store = createSqliteStore({ path: ":memory:", retentionMs: 60_000, clock: systemClock });
    try {
      const stmts = (store as unknown as { stmts: Record<string, { source: string }> }).stmts;
      const db = (store as unknown as { db: Database.Database }).db;
      const sql = stmts.familyRevoked?.source ?? "";
      const plan = db
        .prepare<unknown[], { detail: string }>(`EXPLAIN QUERY PLAN ${sql}`)
        .all("f")
        .map((r) => r.detail)
        .join("; ");
      assert.match(plan, /^SEARCH refresh_tokens USING COVERING INDEX refresh_tokens_family_revoked \(family_id=\? AND revoked_at>\?\)$/);
    } finally {
      await store.close();
    }
  });

  it("upgrades a version 1 database to version 2 with its events intact", () => {
    const db = new Database(":memory:");
    try {
      assert.deepEqual(migrate(db, MIGRATIONS.slice(0, 1)), [1]);
      db.prepare("INSERT INTO groups (id, name, epoch, created_at, head_seq, member_count) VALUES ('g', 'n', 'e', 1, 2, 0)").run();
      const insert = db.prepare(
        "INSERT INTO events (group_id, seq, at, actor_id, actor_name, type, message_id, text, client_message_id) VALUES ('g', ?, 1, 'u', 'n', 'message', ?, ?, ?)",
      );
      insert.run(1, "m1", "one", "c1");
      insert.run(2, "m2", "two", "c2");
      assert.deepEqual(migrate(db), [2, 3]);
      const indexes = eventIndexes(db);
      assert.deepEqual(indexes, ["events_at", "events_dedupe", "sqlite_autoindex_events_1"]);
      const texts = db.prepare("SELECT text FROM events WHERE group_id = 'g' AND type = 'message' ORDER BY seq").pluck().all();
      assert.deepEqual(texts, ["one", "two"]);
      assert.equal(db.prepare("PRAGMA integrity_check").pluck().get(), "ok");
    } finally {
      db.close();
    }
  });

  it("purgeExpired returns exactly the number of expired events and then 0", async () => {
    const clock = new FakeClock(1_000_000);
    const store = createSqliteStore({ path: ":memory:", retentionMs: 1000, clock });
    try {
      const owner = { id: newId(), username: "o" };
      const groupId = newId();
      await store.createGroup({ id: groupId, name: "g", epoch: "e", createdAt: clock.now(), owner });
      const draft = (cmid: string) => ({
        id: newId(),
        groupId,
        sender: owner,
        text: "t",
        clientMessageId: cmid,
        sentAt: clock.now(),
      });
      await store.appendMessage(draft("a"));
      clock.advance(600);
      await store.appendMessage(draft("b"));
      clock.advance(500);
      assert.equal(await store.purgeExpired(), 2);
      assert.equal(await store.purgeExpired(), 0);
      assert.deepEqual(
        (await store.readEvents(groupId, 0, 10)).map((e) => e.seq),
        [3],
      );
    } finally {
      await store.close();
    }
  });

  it("maps a taken username to ChatError AlreadyExists with a readable message", async () => {
    const store = createSqliteStore({ path: ":memory:", retentionMs: 1000, clock: systemClock });
    try {
      const user = { id: newId(), username: "bob", passwordHash: "h", createdAt: 1 };
      await store.createUser(user);
      await assert.rejects(store.createUser({ ...user, id: newId() }), {
        name: "ChatError",
        kind: "AlreadyExists",
        message: "username bob is taken",
      });
    } finally {
      await store.close();
    }
  });
});
