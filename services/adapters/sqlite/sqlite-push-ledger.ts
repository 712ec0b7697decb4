/**
 * SqlitePushLedger: the PushLedger part of the embedded store, on the
 * `push_ledger` table (schema version 5), whose primary key is the claimed
 * (device, group, newest seq).
 */
import type { Database as Db } from "better-sqlite3";
import type { Clock, PushLedger } from "../../core/ports.js";

/**
 * SqlitePushLedger implements PushLedger on one database with the store's
 * clock. A claim is one upsert: it inserts the key, or takes over a record
 * whose expires_at has passed, and does nothing to a live one; SQLite runs
 * it atomically against every connection to the file, so exactly one caller
 * gets true while the record lives. Expired records are deleted by
 * purgeExpired (or taken over by the next claim of their key).
 */
export class SqlitePushLedger implements PushLedger {
  private readonly q: ReturnType<typeof statements>;

  /** constructor prepares the statements; `clock` says when records expire. */
  constructor(
    db: Db,
    private readonly clock: Clock,
  ) {
    this.q = statements(db);
  }

  async claimPush(deviceId: string, groupId: string, newestSeq: number, ttlMs: number): Promise<boolean> {
    const now = this.clock.now();
    const expiresAt = now + (Number.isFinite(ttlMs) ? Math.max(0, Math.ceil(ttlMs)) : 0);
    return this.q.claim.run(deviceId, groupId, newestSeq, expiresAt, now).changes === 1;
  }

  /** purgeExpired deletes the records whose time has passed; returns how many. */
  purgeExpired(): number {
    return this.q.purge.run(this.clock.now()).changes;
  }
}

/** statements prepares the ledger statements once per store. */
function statements(db: Db) {
  return {
    claim: db.prepare<[string, string, number, number, number]>(
      `INSERT INTO push_ledger (device_id, group_id, newest_seq, expires_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (device_id, group_id, newest_seq) DO UPDATE SET expires_at = excluded.expires_at
       WHERE push_ledger.expires_at <= ?`,
    ),
    purge: db.prepare<[number]>("DELETE FROM push_ledger WHERE expires_at <= ?"),
  };
}
