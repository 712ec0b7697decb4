/**
 * PushLedgerTables: the push ledger (schema version 3), one row per claimed
 * (device, group, newest seq) in `push_ledger`, expiring by its TTL.
 *
 * A claim is an LWT (`INSERT ... IF NOT EXISTS USING TTL`): deciding who
 * sends a push is a uniqueness decision, and it is off the message path
 * (the notifier claims just before it sends).
 */
import { randomUUID } from "node:crypto";
import { CL_LOCAL_SERIAL, optStr } from "./cassandra-session.js";
import type { CassandraSession } from "./cassandra-session.js";
import { MAX_TTL_SECONDS } from "./migrations.js";

/**
 * PushLedgerTables claims pushes. Methods throw ChatError Unavailable for
 * driver failures (a claim whose outcome stays unknown: the caller retries
 * it, and learns false if it had in fact been applied).
 */
export class PushLedgerTables {
  private readonly q: ReturnType<typeof statements>;

  /** constructor takes the shared session. */
  constructor(private readonly db: CassandraSession) {
    this.q = statements(db.keyspace);
  }

  /**
   * claimPush inserts the key's row if it has none, with a TTL of ttlMs
   * rounded up to whole seconds plus one (Cassandra expires cells on whole
   * seconds, so the row lives at least ttlMs), and returns whether this call
   * inserted it: of all callers, on any client, exactly one gets true while
   * the row lives. A claim that times out is settled by a SERIAL read
   * (which completes any Paxos round in flight): true if the row is this
   * call's own (its random claim id), false if another's, else the error.
   */
  async claimPush(deviceId: string, groupId: string, newestSeq: number, ttlMs: number): Promise<boolean> {
    const claim = randomUUID();
    const ttl = ledgerTtlSeconds(ttlMs);
    try {
      const r = await this.db.run(this.q.claim, [deviceId, groupId, newestSeq, claim, ttl], false);
      return r.wasApplied();
    } catch (e) {
      const row = (await this.db.run(this.q.claimOf, [deviceId, groupId, newestSeq], true, CL_LOCAL_SERIAL)).rows[0];
      const owner = optStr(row, "claim");
      if (owner === null) throw e;
      return owner === claim;
    }
  }
}

/** ledgerTtlSeconds is a record's TTL for ttlMs: rounded up to seconds, plus one, between 2 s and Cassandra's maximum. */
export function ledgerTtlSeconds(ttlMs: number): number {
  const s = Number.isFinite(ttlMs) ? Math.ceil(Math.max(0, ttlMs) / 1000) : MAX_TTL_SECONDS;
  return Math.min(Math.max(s, 1) + 1, MAX_TTL_SECONDS);
}

/** statements builds the family's CQL strings once per keyspace; the driver prepares each on first use. */
function statements(ks: string) {
  return {
    claim: `INSERT INTO ${ks}.push_ledger (device_id, group_id, newest_seq, claim) VALUES (?, ?, ?, ?) IF NOT EXISTS USING TTL ?`,
    claimOf: `SELECT claim FROM ${ks}.push_ledger WHERE device_id = ? AND group_id = ? AND newest_seq = ?`,
  };
}
