import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { once } from "node:events";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { after, describe, it } from "node:test";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { newId } from "../../core/ids.js";
import { DEFAULT_NOTIFY } from "../../core/model.js";
import { systemClock } from "../../core/ports.js";
import { deviceStoreContract } from "../../../test/contract/device-store.contract.js";
import { pushLedgerContract } from "../../../test/contract/push-ledger.contract.js";
import { readStateStoreContract } from "../../../test/contract/read-state-store.contract.js";
import { FakeClock, storeContract } from "../../../test/contract/store.contract.js";
import { createSqliteStore } from "./sqlite-store.js";
import { MIGRATIONS, migrate } from "./schema.js";

const dir = mkdtempSync(join(tmpdir(), "sqlite-store-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** eventIndexes lists the indexes of the events table, by name. */
function eventIndexes(db: Database.Database): unknown[] {
  return db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY name").pluck().all();
}

/** holdWriteLock has a worker thread take the database's write lock on its own connection, and keep it `ms` once it has it. */
async function holdWriteLock(path: string, ms: number): Promise<Worker> {
  const worker = new Worker(
    `const { parentPort, workerData } = require("node:worker_threads");
     const Database = require(workerData.module);
     const db = new Database(workerData.path);
     db.exec("BEGIN IMMEDIATE");
     parentPort.postMessage("locked");
     Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.ms);
     db.exec("COMMIT");
     db.close();`,
    { eval: true, workerData: { path, ms, module: createRequire(import.meta.url).resolve("better-sqlite3") } },
  );
  await once(worker, "message");
  return worker;
}

let files = 0;
/** freshPath returns a new database file path inside the temp dir (in a not-yet-existing subdirectory). */
function freshPath(): string {
  files += 1;
  return join(dir, `run-${files}`, "chat.db");
}

storeContract("sqlite", async (opts) => createSqliteStore({ path: freshPath(), ...opts }));
readStateStoreContract("sqlite", async (opts) => createSqliteStore({ path: freshPath(), ...opts }));
deviceStoreContract("sqlite", async () => createSqliteStore({ path: freshPath(), retentionMs: 60_000, clock: systemClock }));
pushLedgerContract("sqlite", async (clock) => {
  const path = freshPath();
  return [createSqliteStore({ path, retentionMs: 60_000, clock }), createSqliteStore({ path, retentionMs: 60_000, clock })];
});

/** planOf returns SQLite's query plan of one of a store's prepared statements (`holder` is the store or one of its parts). */
function planOf(db: Database.Database, holder: object, field: string, name: string): string {
  const stmts = (holder as Record<string, Record<string, { source: string }>>)[field];
  const sql = stmts?.[name]?.source;
  assert.ok(sql, name);
  const params = Array.from(sql.matchAll(/\?/g), () => 1);
  return db
    .prepare<unknown[], { detail: string }>(`EXPLAIN QUERY PLAN ${sql}`)
    .all(...params)
    .map((r) => r.detail)
    .join("; ");
}

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

  it("after a slow commit, commits the appends of a window as long as that commit together; the first append commits in its own turn", async () => {
    const commits: number[] = [];
    const path = freshPath();
    // A cap far above this test's turns, so that the window is the slow commit's length.
    const store = createSqliteStore({ path, retentionMs: 60_000, clock: systemClock, commitWindowMs: 60_000, onCommit: (s) => commits.push(s) });
    try {
      const owner = { id: newId(), username: "olga" };
      const groupId = newId();
      await store.createGroup({ id: groupId, name: "g", epoch: "e", createdAt: Date.now(), owner });
      const draft = (c: string) => ({ id: newId(), groupId, sender: owner, text: c, clientMessageId: c, sentAt: Date.now() });
      // No append committed yet: the first one commits at the end of its turn. Another connection holds the write
      // lock meanwhile, so that commit waits for it (busy_timeout) and takes long.
      const holder = await holdWriteLock(path, 500);
      const first = await store.appendMessage(draft("a"));
      await once(holder, "exit");
      assert.deepEqual([first.event.seq, commits.length], [2, 1]);
      assert.ok((commits[0] ?? 0) > 0.05, `the first commit waited for the lock (${commits[0]} s)`);
      // Within a window as long as that commit: appends of later turns wait for the window's commit, and share it.
      let settled = 0;
      const b = store.appendMessage(draft("b")).finally(() => settled++);
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      const c = store.appendMessage(draft("c")).finally(() => settled++);
      const retry = store.appendMessage(draft("b"));
      await new Promise((r) => setImmediate(r));
      assert.deepEqual([settled, commits.length], [0, 1], "nothing commits before the window ends (or a group change)");
      // A group change applies the waiting appends first, in one commit, and keeps the call order.
      const change = await store.changeGroup(groupId, [owner.id], owner, Date.now(), () => ({ type: "rename", name: "h" }));
      const [rb, rc, rr] = await Promise.all([b, c, retry]);
      assert.deepEqual([rb.event.seq, rc.event.seq, rr.event.seq, rr.duplicate, change.seq], [3, 4, 3, true, 5]);
      assert.equal(commits.length, 2, "b, c and the retry of b committed together");
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
      assert.deepEqual(migrate(db), [2, 3, 4, 5, 6]);
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
  it("gives member rows from before version 4 marker 0 and the default push setting, and new members their join seq", async () => {
    const path = freshPath();
    mkdirSync(dirname(path), { recursive: true });
    const old = new Database(path);
    try {
      assert.deepEqual(migrate(old, MIGRATIONS.filter((m) => m.version <= 3)), [1, 2, 3]);
      old.prepare("INSERT INTO groups (id, name, epoch, created_at, head_seq, member_count) VALUES ('g', 'n', 'e', 1, 3, 1)").run();
      old.prepare("INSERT INTO members (group_id, user_id, username, role, joined_at, acked_seq) VALUES ('g', 'u', 'un', 'owner', 1, 2)").run();
    } finally {
      old.close();
    }
    const store = createSqliteStore({ path, retentionMs: 60_000, clock: systemClock });
    try {
      assert.deepEqual(await store.readStates("g", ["u"]), new Map([["u", { lastReadSeq: 0, notify: DEFAULT_NOTIFY }]]));
      assert.equal(await store.markRead("g", "u", 3), 3);
      const bob = { id: newId(), username: "bob" };
      await store.changeGroup("g", [bob.id], { id: "u", username: "un" }, Date.now(), () => ({ type: "add", member: bob, role: "member" }));
      assert.deepEqual((await store.readStates("g", [bob.id])).get(bob.id), { lastReadSeq: 4, notify: DEFAULT_NOTIFY });
      assert.deepEqual((await store.getMember("g", "u"))?.ackedSeq, 2, "acks are untouched");
    } finally {
      await store.close();
    }
  });

  it("reads read states, unread counts, devices and ledger keys through an index, never a scan or a sort", async () => {
    const store = createSqliteStore({ path: ":memory:", retentionMs: 60_000, clock: systemClock });
    try {
      const db = (store as unknown as { db: Database.Database }).db;
      const parts = store as unknown as { readStateTable: object; devices: object; ledger: object };
      const planned: [object, string, RegExp][] = [
        [parts.readStateTable, "countUnread", /SEARCH events USING INDEX sqlite_autoindex_events_1 \(group_id=\? AND seq>\?\)/],
        [parts.readStateTable, "markRead", /^SEARCH members USING INDEX sqlite_autoindex_members_1 \(group_id=\? AND user_id=\?\)$/],
        [parts.readStateTable, "statesInGroup", /SEARCH members USING INDEX sqlite_autoindex_members_1 \(group_id=\? AND user_id=\?\)/],
        [parts.readStateTable, "statesOfUser", /SEARCH members USING INDEX members_by_user \(user_id=\? AND group_id=\?\)/],
        [parts.readStateTable, "setNotify", /^SEARCH members USING INDEX sqlite_autoindex_members_1 \(group_id=\? AND user_id=\?\)$/],
        [parts.devices, "byToken", /^SEARCH devices USING INDEX sqlite_autoindex_devices_2 \(kind=\? AND token=\?\)$/],
        [parts.devices, "ofUser", /^SEARCH devices USING INDEX devices_by_user \(user_id=\?\)$/],
        [parts.devices, "countOfUser", /SEARCH devices USING COVERING INDEX devices_by_user \(user_id=\?\)/],
        [parts.ledger, "purge", /^SEARCH push_ledger USING COVERING INDEX push_ledger_expiry \(expires_at<\?\)$/],
      ];
      for (const [holder, name, expected] of planned) {
        const p = planOf(db, holder, "q", name);
        assert.match(p, expected, name);
        assert.doesNotMatch(p, /SCAN (events|members|devices|push_ledger)\b|TEMP B-TREE/, name);
      }
      assert.deepEqual(
        db.prepare("SELECT name FROM pragma_table_info('feed_positions') ORDER BY cid").pluck().all(),
        ["name", "position"],
        "the event feed's table exists",
      );
    } finally {
      await store.close();
    }
  });

  it("purgeExpired deletes the push ledger's expired records, which can then be claimed again", async () => {
    const clock = new FakeClock(1_000_000);
    const store = createSqliteStore({ path: ":memory:", retentionMs: 60_000, clock });
    try {
      const db = (store as unknown as { db: Database.Database }).db;
      const rows = () => db.prepare("SELECT device_id, newest_seq FROM push_ledger ORDER BY device_id, newest_seq").raw().all();
      assert.equal(await store.claimPush("d1", "g", 1, 1000), true);
      assert.equal(await store.claimPush("d1", "g", 2, 5000), true);
      clock.advance(999);
      await store.purgeExpired();
      assert.deepEqual(rows(), [["d1", 1], ["d1", 2]], "nothing expired yet");
      assert.equal(await store.claimPush("d1", "g", 1, 1000), false);
      clock.advance(1);
      await store.purgeExpired();
      assert.deepEqual(rows(), [["d1", 2]]);
      assert.equal(await store.claimPush("d1", "g", 1, 1000), true);
      assert.equal(await store.claimPush("d1", "g", 2, 1000), false);
    } finally {
      await store.close();
    }
  });
});
