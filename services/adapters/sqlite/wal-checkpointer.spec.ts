import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import Database from "better-sqlite3";
import { DEFAULT_AUTOCHECKPOINT_PAGES, WalCheckpointer } from "./wal-checkpointer.js";

const dir = mkdtempSync(join(tmpdir(), "wal-checkpointer-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function openWal(): { db: Database.Database; path: string } {
  files += 1;
  const path = join(dir, `db-${files}.sqlite`);
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)");
  return { db, path };
}

/** writeRows commits `n` rows of 1 KiB, one transaction each. */
function writeRows(db: Database.Database, n: number): void {
  const insert = db.prepare("INSERT INTO t (body) VALUES (?)");
  for (let i = 0; i < n; i++) insert.run("x".repeat(1024));
}

const autocheckpoint = (db: Database.Database) => db.pragma("wal_autocheckpoint", { simple: true });

async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("WalCheckpointer", () => {
  it("takes checkpointing off the main connection and copies committed pages into the database file from its worker", async () => {
    const { db, path } = openWal();
    const c = new WalCheckpointer(db, path, { intervalMs: 20, backstopPages: 100_000 });
    try {
      assert.equal(await c.ready, true);
      assert.equal(autocheckpoint(db), 100_000, "the main connection checkpoints only past the backstop");
      const before = statSync(path).size;
      writeRows(db, 2_000); // ~2 MiB of WAL: the main connection alone would leave it all there
      await until("the database file to receive the WAL's pages", () => statSync(path).size > before + 1_000_000);
      const reader = new Database(path, { readonly: true });
      assert.equal((reader.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n, 2_000, "every committed row is readable");
      reader.close();
    } finally {
      await c.stop();
      db.close();
    }
  });

  it("keeps the WAL bounded under back-to-back commits: past the backstop the main connection finishes the checkpoint and the WAL rewinds", async () => {
    const { db, path } = openWal();
    const c = new WalCheckpointer(db, path, { intervalMs: 5, backstopPages: 64 });
    try {
      assert.equal(await c.ready, true);
      const insert = db.prepare("INSERT INTO t (body) VALUES (?)");
      let largest = 0;
      for (let i = 0; i < 3_000; i++) {
        insert.run("x".repeat(1024)); // ~3,000 commits of a page or two: ~12-24 MB of WAL frames in all
        if (i % 50 === 0) largest = Math.max(largest, statSync(`${path}-wal`).size);
        if (i % 500 === 0) await new Promise((r) => setImmediate(r));
      }
      largest = Math.max(largest, statSync(`${path}-wal`).size);
      assert.ok(largest < 1_000_000, `the WAL grew to ${largest} bytes (backstop: 64 pages of 4 KiB)`);
      assert.equal((db.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n, 3_000);
    } finally {
      await c.stop();
      db.close();
    }
  });

  it("gives checkpointing back to the main connection when stopped, or when its worker dies (and reports that)", async () => {
    const first = openWal();
    const reported: Error[] = [];
    const stopped = new WalCheckpointer(first.db, first.path, { intervalMs: 20, onFailure: (e) => reported.push(e) });
    assert.equal(await stopped.ready, true);
    await stopped.stop();
    assert.equal(autocheckpoint(first.db), DEFAULT_AUTOCHECKPOINT_PAGES);
    assert.deepEqual(reported, [], "a stop is not a failure");
    first.db.close();

    const second = openWal();
    const failures: Error[] = [];
    // A restart far away: this part looks at the fallback alone.
    const killed = new WalCheckpointer(second.db, second.path, { intervalMs: 20, restartDelayMs: 60_000, onFailure: (e) => failures.push(e) });
    assert.equal(await killed.ready, true);
    assert.equal(autocheckpoint(second.db), 4_000, "the default backstop");
    await killed.worker.terminate();
    await until("the fallback", () => autocheckpoint(second.db) === DEFAULT_AUTOCHECKPOINT_PAGES);
    assert.match(String(failures[0]?.message), /checkpoint worker exited .*a new worker starts in 60000 ms/, "the failure is reported");
    await killed.stop();
    assert.equal(killed.started, 1, "stop cancels the pending restart");
    assert.equal(failures.length, 1);
    second.db.close();
  });

  it("starts a new worker after its worker dies, which takes checkpointing back and checkpoints", async () => {
    const { db, path } = openWal();
    const failures: Error[] = [];
    const c = new WalCheckpointer(db, path, { intervalMs: 20, restartDelayMs: 50, onFailure: (e) => failures.push(e) });
    assert.equal(await c.ready, true);
    await c.worker.terminate();
    await until("the new worker", () => c.started === 2 && autocheckpoint(db) === 4_000);
    assert.equal(failures.length, 1, "the death is reported once");
    // The new worker does the work: committed pages reach the database file with no checkpoint on this connection.
    const before = statSync(path).size;
    writeRows(db, 200);
    await until("pages checkpointed by the new worker", () => statSync(path).size >= before + 200 * 1024);
    await c.stop();
    assert.equal(autocheckpoint(db), DEFAULT_AUTOCHECKPOINT_PAGES);
    db.close();
  });

  it("leaves the main connection checkpointing itself when the worker cannot open the database", async () => {
    const { db } = openWal();
    const failures: Error[] = [];
    const c = new WalCheckpointer(db, join(dir, "missing", "nothing.sqlite"), { intervalMs: 20, onFailure: (e) => failures.push(e) });
    assert.equal(await c.ready, false);
    assert.equal(autocheckpoint(db), DEFAULT_AUTOCHECKPOINT_PAGES);
    await c.stop();
    assert.equal(failures.length, 1, "reported once (its error, not again for the exit that follows)");
    assert.match(String(failures[0]?.message), /WAL checkpoint worker failed: .*; checkpoints run on the main thread until a new worker starts in 1000 ms/);
    assert.equal(c.started, 1, "no restart after stop");
    db.close();
  });

  it("waits twice as long before each restart while its workers keep failing, up to the limit", async () => {
    const { db } = openWal();
    const failures: Error[] = [];
    const c = new WalCheckpointer(db, join(dir, "missing", "again.sqlite"), {
      intervalMs: 20,
      restartDelayMs: 20,
      maxRestartDelayMs: 80,
      onFailure: (e) => failures.push(e),
    });
    await until("four failed workers", () => failures.length >= 4);
    await c.stop();
    const delays = failures.slice(0, 4).map((e) => Number(/starts in (\d+) ms/.exec(e.message)?.[1]));
    assert.deepEqual(delays, [20, 40, 80, 80]);
    assert.equal(autocheckpoint(db), DEFAULT_AUTOCHECKPOINT_PAGES);
    db.close();
  });
});
