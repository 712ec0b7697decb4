/**
 * Versioned, idempotent schema migrations for the Cassandra/ScyllaDB store.
 *
 * - Every statement is `CREATE ... IF NOT EXISTS` (or otherwise idempotent),
 *   so re-running a step that was interrupted is harmless. A new column is
 *   an AddColumn step: added only if system_schema does not list it yet
 *   (Cassandra before 4.1 and ScyllaDB have no `ADD IF NOT EXISTS`).
 * - Each applied version is recorded in `<keyspace>.schema_migrations`
 *   (`INSERT ... IF NOT EXISTS`), and skipped on later runs.
 * - Concurrent runs (several processes starting with MIGRATE=true) take turns:
 *   a lease row in `<keyspace>.schema_lock`, taken with an LWT and a TTL (so a
 *   crashed migrator blocks others for at most LOCK_TTL_SECONDS), serialises
 *   them. Concurrent DDL on the same table is what makes a multi-node cluster
 *   disagree on a table's id; the lease avoids it, and IF NOT EXISTS keeps even
 *   a lease lost mid-run safe.
 * - Retention is configuration, not a schema version: the tables that expire
 *   (`events_by_group`, `message_ids`, `group_buckets`) get their
 *   `default_time_to_live` from `retentionMs` when created, and every run
 *   ALTERs it if the setting changed (affecting rows written afterwards only).
 *
 * Never edit a released migration; append a new version.
 */
import { randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import { isCqlIdentifier, replicationCql } from "./cassandra-url.js";
import type { Replication } from "./cassandra-url.js";

/** DAY_SECONDS is one bucket (and one TWCS window) in seconds. */
const DAY_SECONDS = 86_400;

/** MAX_TTL_SECONDS is Cassandra's largest TTL (20 years). */
export const MAX_TTL_SECONDS = 630_720_000;

/**
 * BUCKET_INDEX_EXTRA_TTL_SECONDS is how much longer a `group_buckets` row
 * lives than the events it indexes: its first_seq cell is written once per
 * bucket (the first write wins), so it must outlive events written up to a
 * day later into the same bucket.
 */
export const BUCKET_INDEX_EXTRA_TTL_SECONDS = 2 * DAY_SECONDS;

/** SchemaParams are the values a migration's statements are built from. */
export interface SchemaParams {
  /** Keyspace, already validated as a plain CQL identifier. */
  readonly keyspace: string;
  /** default_time_to_live of `events_by_group` and `message_ids`, seconds. */
  readonly retentionSeconds: number;
}

/** AddColumn adds a column to a table of the keyspace unless it has it already (idempotent). */
export interface AddColumn {
  readonly addColumn: { readonly table: string; readonly column: string; readonly type: string };
}

/** SchemaStatement is one idempotent step of a migration: a CQL statement or an AddColumn. */
export type SchemaStatement = string | AddColumn;

/** CassandraMigration is one schema step: `version` is unique and increasing. */
export interface CassandraMigration {
  readonly version: number;
  readonly description: string;
  /** The statements of the step, each idempotent on its own. */
  statements(p: SchemaParams): readonly SchemaStatement[];
}

const TWCS = "{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}";

/**
 * MIGRATIONS lists every schema step in version order.
 *
 * Layout (see docs/production.md "Storage"; ids are text, times are bigint ms):
 * - `users` (by id) and `users_by_name` (by lower-case username, with the
 *   password hash; claimed by `INSERT ... IF NOT EXISTS`, the only LWT besides
 *   refresh-token rotation).
 * - `refresh_tokens` (by hash) and `refresh_tokens_by_family` (to revoke a
 *   session), both with a per-row TTL a day past the token's expiry;
 *   `revoked_sessions` (by family, version 2), so a stream opening asks
 *   "is this session revoked?" in one read.
 * - `groups`, `members_by_group`, `groups_by_user`: every write to them uses
 *   `USING TIMESTAMP <seq of the event it comes from>`, so replays and
 *   out-of-order writers converge on the state after the highest seq.
 *   `member_count` / `owner_count` are stored cells (written with the event
 *   that changes them), not counted on read.
 * - `events_by_group`: partition (group_id, bucket = UTC day of `at`),
 *   clustered by seq DESC, TTL = retention, TWCS with 1-day windows.
 * - `group_buckets`: a group's buckets newest first with the smallest and
 *   largest seq in each, so reads find the buckets they need in one query.
 * - `message_ids`: (group, sender, client message id) -> seq, formerly for
 *   idempotent sends. No longer written or read (the timeline stream's
 *   `Nats-Msg-Id` duplicate window makes sends idempotent); kept for schema
 *   compatibility, since a deployed schema cannot be un-migrated. Rows
 *   written before expire with its TTL.
 * - Read state (version 3) lives on the membership rows in both directions:
 *   `last_read_seq` (written with the member_added event and by markRead,
 *   USING TIMESTAMP <seq> like every other membership cell) and `notify`
 *   (the push setting; see read-state-tables.ts), so a removal drops it.
 * - `devices_by_user` (by user, then device id) and `device_by_token`
 *   ((kind, push_token) -> user and device id), version 3 (`token` is a CQL
 *   keyword, so the device's token is `push_token`).
 * - `push_ledger` (version 3): one row per claimed (device, group, newest
 *   seq), claimed with `INSERT ... IF NOT EXISTS USING TTL`.
 */
export const MIGRATIONS: readonly CassandraMigration[] = [
  {
    version: 1,
    description: "users, refresh tokens, groups, memberships, bucketed events, message ids",
    statements: ({ keyspace: ks, retentionSeconds: ttl }) => [
      `CREATE TABLE IF NOT EXISTS ${ks}.users (
        user_id    text PRIMARY KEY,
        username   text,
        created_at bigint)`,
      `CREATE TABLE IF NOT EXISTS ${ks}.users_by_name (
        username      text PRIMARY KEY,
        user_id       text,
        password_hash text,
        created_at    bigint)`,
      `CREATE TABLE IF NOT EXISTS ${ks}.refresh_tokens (
        token_hash text PRIMARY KEY,
        user_id    text,
        family_id  text,
        expires_at bigint,
        used_at    bigint,
        revoked_at bigint)`,
      `CREATE TABLE IF NOT EXISTS ${ks}.refresh_tokens_by_family (
        family_id  text,
        token_hash text,
        expires_at bigint,
        PRIMARY KEY (family_id, token_hash))`,
      `CREATE TABLE IF NOT EXISTS ${ks}.groups (
        group_id     text PRIMARY KEY,
        name         text,
        epoch        text,
        created_at   bigint,
        head_seq     bigint,
        member_count int,
        owner_count  int)`,
      `CREATE TABLE IF NOT EXISTS ${ks}.members_by_group (
        group_id  text,
        user_id   text,
        username  text,
        role      text,
        joined_at bigint,
        acked_seq bigint,
        PRIMARY KEY (group_id, user_id))`,
      `CREATE TABLE IF NOT EXISTS ${ks}.groups_by_user (
        user_id   text,
        group_id  text,
        role      text,
        joined_at bigint,
        acked_seq bigint,
        PRIMARY KEY (user_id, group_id))`,
      `CREATE TABLE IF NOT EXISTS ${ks}.events_by_group (
        group_id          text,
        bucket            int,
        seq               bigint,
        kind              text,
        at                bigint,
        actor_id          text,
        actor_name        text,
        message_id        text,
        message_text      text,
        client_message_id text,
        payload           text,
        PRIMARY KEY ((group_id, bucket), seq))
      WITH CLUSTERING ORDER BY (seq DESC)
        AND default_time_to_live = ${ttl}
        AND compaction = ${TWCS}
        AND gc_grace_seconds = ${DAY_SECONDS}`,
      `CREATE TABLE IF NOT EXISTS ${ks}.group_buckets (
        group_id  text,
        bucket    int,
        first_seq bigint,
        last_seq  bigint,
        PRIMARY KEY (group_id, bucket))
      WITH CLUSTERING ORDER BY (bucket DESC)
        AND default_time_to_live = ${bucketIndexTtl(ttl)}`,
      // No longer written or read; kept for schema compatibility (see above).
      `CREATE TABLE IF NOT EXISTS ${ks}.message_ids (
        group_id          text,
        sender_id         text,
        client_message_id text,
        seq               bigint,
        bucket            int,
        at                bigint,
        PRIMARY KEY ((group_id, sender_id, client_message_id)))
      WITH default_time_to_live = ${ttl}
        AND gc_grace_seconds = ${DAY_SECONDS}`,
    ],
  },
  {
    version: 2,
    description: "revoked sessions, so opening a stream checks its session in one read",
    statements: ({ keyspace: ks }) => [
      // One row per revoked refresh family, with a per-row TTL a day past the
      // later of the family's last token expiry and the revocation + the
      // refresh TTL (as long as a token of it can exist). Rows only expire
      // (never deleted), so their tombstones may go after a day.
      `CREATE TABLE IF NOT EXISTS ${ks}.revoked_sessions (
        family_id  text PRIMARY KEY,
        revoked_at bigint)
        WITH gc_grace_seconds = ${DAY_SECONDS}`,
    ],
  },
  {
    version: 3,
    description: "read markers and push settings on memberships, push devices, the push ledger (issue 14)",
    statements: ({ keyspace: ks }) => [
      { addColumn: { table: "members_by_group", column: "last_read_seq", type: "bigint" } },
      { addColumn: { table: "members_by_group", column: "notify", type: "text" } },
      { addColumn: { table: "groups_by_user", column: "last_read_seq", type: "bigint" } },
      { addColumn: { table: "groups_by_user", column: "notify", type: "text" } },
      `CREATE TABLE IF NOT EXISTS ${ks}.devices_by_user (
        user_id    text,
        device_id  text,
        kind       text,
        push_token text,
        p256dh     text,
        auth       text,
        topic      text,
        created_at bigint,
        PRIMARY KEY (user_id, device_id))`,
      `CREATE TABLE IF NOT EXISTS ${ks}.device_by_token (
        kind       text,
        push_token text,
        user_id    text,
        device_id  text,
        PRIMARY KEY ((kind, push_token)))`,
      // Rows only expire (never deleted), so their tombstones may go after a day.
      `CREATE TABLE IF NOT EXISTS ${ks}.push_ledger (
        device_id  text,
        group_id   text,
        newest_seq bigint,
        claim      text,
        PRIMARY KEY ((device_id, group_id, newest_seq)))
        WITH gc_grace_seconds = ${DAY_SECONDS}`,
    ],
  },
];

/** MigrateOptions configures migrate. */
export interface MigrateOptions {
  /** Retention of events in ms; the tables' TTL is this rounded up to whole seconds (1 s .. 20 years). */
  readonly retentionMs: number;
  /** Steps to apply (default MIGRATIONS). */
  readonly migrations?: readonly CassandraMigration[];
  /** How long to wait for another process's migration lease (default 5 min). */
  readonly lockWaitMs?: number;
}

/** MigrateResult says what one migrate call changed. */
export interface MigrateResult {
  /** Versions this call applied and recorded, ascending ([] if all were applied before). */
  readonly applied: readonly number[];
  /** Tables whose default_time_to_live this call changed to match retentionMs. */
  readonly retentionUpdated: readonly string[];
}

/** LOCK_TTL_SECONDS is the migration lease; it is renewed before every statement. */
export const LOCK_TTL_SECONDS = 60;

const LOCK_NAME = "migrate";

/**
 * createKeyspace creates `keyspace` with `replication` if it does not exist
 * (an existing keyspace keeps its replication). Throws on an invalid name.
 */
export async function createKeyspace(client: Client, keyspace: string, replication: Replication): Promise<void> {
  assertKeyspace(keyspace);
  await client.execute(
    `CREATE KEYSPACE IF NOT EXISTS ${keyspace} WITH replication = ${replicationCql(replication)} AND durable_writes = true`,
  );
}

/**
 * migrate applies every migration not yet recorded in
 * `<keyspace>.schema_migrations`, in version order, then aligns the TTL of the
 * expiring tables with `retentionMs`. The keyspace must exist. Idempotent and
 * safe to run from several processes at once (see the module comment); a call
 * that finds nothing to do takes no lease. Throws if the lease cannot be
 * taken within `lockWaitMs`, or on any CQL error (a failed step is not
 * recorded and is retried by the next run).
 */
export async function migrate(client: Client, keyspace: string, opts: MigrateOptions): Promise<MigrateResult> {
  assertKeyspace(keyspace);
  const params: SchemaParams = { keyspace, retentionSeconds: retentionSeconds(opts.retentionMs) };
  const migrations = [...(opts.migrations ?? MIGRATIONS)].sort((a, b) => a.version - b.version);
  await client.execute(`CREATE TABLE IF NOT EXISTS ${keyspace}.schema_migrations (
    version     int PRIMARY KEY,
    description text,
    applied_at  timestamp,
    applied_by  text)`);
  await client.execute(`CREATE TABLE IF NOT EXISTS ${keyspace}.schema_lock (
    name        text PRIMARY KEY,
    owner       text,
    acquired_at timestamp)`);

  const pending = async () => {
    const done = await appliedVersions(client, keyspace);
    return migrations.filter((m) => !done.has(m.version));
  };
  if ((await pending()).length === 0 && (await ttlMismatches(client, params)).length === 0) {
    return { applied: [], retentionUpdated: [] };
  }

  const lease = await Lease.acquire(client, keyspace, opts.lockWaitMs ?? 5 * 60_000);
  try {
    const applied: number[] = [];
    for (const m of await pending()) {
      for (const step of m.statements(params)) {
        await lease.renew();
        await applyStatement(client, keyspace, step);
      }
      const r = await client.execute(
        `INSERT INTO ${keyspace}.schema_migrations (version, description, applied_at, applied_by)
         VALUES (?, ?, ?, ?) IF NOT EXISTS`,
        [m.version, m.description, new Date(), lease.owner],
        { prepare: true },
      );
      if (r.wasApplied()) applied.push(m.version);
    }
    const retentionUpdated: string[] = [];
    for (const { table, ttl } of await ttlMismatches(client, params)) {
      await lease.renew();
      await client.execute(`ALTER TABLE ${keyspace}.${table} WITH default_time_to_live = ${ttl}`);
      retentionUpdated.push(table);
    }
    return { applied, retentionUpdated };
  } finally {
    await lease.release();
  }
}

/** retentionSeconds is the table TTL for a retention in ms: rounded up, at least 1 s; throws past 20 years. */
export function retentionSeconds(retentionMs: number): number {
  if (!Number.isFinite(retentionMs) || retentionMs <= 0) throw new Error(`invalid retention ${retentionMs} ms`);
  const s = Math.ceil(retentionMs / 1000);
  if (s + BUCKET_INDEX_EXTRA_TTL_SECONDS > MAX_TTL_SECONDS) throw new Error(`retention ${retentionMs} ms exceeds 20 years`);
  return s;
}

function bucketIndexTtl(ttl: number): number {
  return ttl + BUCKET_INDEX_EXTRA_TTL_SECONDS;
}

/** EXPIRING_TABLES maps each table with a default TTL to its TTL for a given retention in seconds. */
const EXPIRING_TABLES: readonly { table: string; ttl: (retentionSeconds: number) => number }[] = [
  { table: "events_by_group", ttl: (s) => s },
  { table: "message_ids", ttl: (s) => s }, // no longer written or read; kept for schema compatibility
  { table: "group_buckets", ttl: bucketIndexTtl },
];

async function ttlMismatches(client: Client, p: SchemaParams): Promise<{ table: string; ttl: number }[]> {
  const rs = await client.execute(
    "SELECT table_name, default_time_to_live FROM system_schema.tables WHERE keyspace_name = ?",
    [p.keyspace],
    { prepare: true },
  );
  const current = new Map<string, number>();
  for (const row of rs.rows) current.set(String(row.get("table_name")), Number(row.get("default_time_to_live")));
  const out: { table: string; ttl: number }[] = [];
  for (const t of EXPIRING_TABLES) {
    const have = current.get(t.table);
    const want = t.ttl(p.retentionSeconds);
    // A missing table is created (with the right TTL) by its migration.
    if (have !== undefined && have !== want) out.push({ table: t.table, ttl: want });
  }
  return out;
}

/** applyStatement runs one step of a migration: a CQL statement, or an AddColumn if the column is missing. */
async function applyStatement(client: Client, keyspace: string, step: SchemaStatement): Promise<void> {
  if (typeof step === "string") {
    await client.execute(step);
    return;
  }
  const { table, column, type } = step.addColumn;
  if (!isCqlIdentifier(table) || !isCqlIdentifier(column) || !/^[a-z]+$/.test(type)) {
    throw new Error(`invalid column ${table}.${column} ${type}`);
  }
  const existing = await client.execute(
    "SELECT type FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?",
    [keyspace, table, column],
    { prepare: true },
  );
  const have = existing.first()?.get("type") as unknown;
  if (have === undefined) {
    await client.execute(`ALTER TABLE ${keyspace}.${table} ADD ${column} ${type}`);
  } else if (have !== type) {
    throw new Error(`${keyspace}.${table}.${column} is ${String(have)}, not ${type}`);
  }
}

async function appliedVersions(client: Client, keyspace: string): Promise<Set<number>> {
  const rs = await client.execute(`SELECT version FROM ${keyspace}.schema_migrations`, [], { prepare: true });
  return new Set(rs.rows.map((r) => Number(r.get("version"))));
}

function assertKeyspace(keyspace: string): void {
  if (!isCqlIdentifier(keyspace) || keyspace !== keyspace.toLowerCase()) {
    throw new Error(`invalid keyspace ${JSON.stringify(keyspace)}: use a lower-case plain CQL identifier`);
  }
}

/** Lease is the migration lock: one LWT-guarded row with a TTL. */
class Lease {
  private constructor(
    private readonly client: Client,
    private readonly keyspace: string,
    readonly owner: string,
  ) {}

  /** acquire takes the lease, polling while another owner holds it; throws after waitMs. */
  static async acquire(client: Client, keyspace: string, waitMs: number): Promise<Lease> {
    const owner = `${process.pid}-${randomUUID()}`;
    const deadline = Date.now() + waitMs;
    for (let delay = 100; ; delay = Math.min(delay * 2, 1000)) {
      const r = await client.execute(
        `INSERT INTO ${keyspace}.schema_lock (name, owner, acquired_at) VALUES (?, ?, ?) IF NOT EXISTS USING TTL ${LOCK_TTL_SECONDS}`,
        [LOCK_NAME, owner, new Date()],
        { prepare: true },
      );
      if (r.wasApplied()) return new Lease(client, keyspace, owner);
      if (Date.now() + delay > deadline) {
        throw new Error(`migration lock of ${keyspace} is held by ${String(r.first()?.get("owner"))}; gave up after ${waitMs} ms`);
      }
      await new Promise((res) => setTimeout(res, delay));
    }
  }

  /** renew extends the lease; throws if another process took it over (ours expired). */
  async renew(): Promise<void> {
    const r = await this.client.execute(
      `UPDATE ${this.keyspace}.schema_lock USING TTL ${LOCK_TTL_SECONDS} SET owner = ?, acquired_at = ? WHERE name = ? IF owner = ?`,
      [this.owner, new Date(), LOCK_NAME, this.owner],
      { prepare: true },
    );
    if (!r.wasApplied()) throw new Error(`lost the migration lock of ${this.keyspace}`);
  }

  /** release drops the lease if we still hold it. Never throws: an unreleased lease expires by its TTL. */
  async release(): Promise<void> {
    try {
      await this.client.execute(
        `DELETE FROM ${this.keyspace}.schema_lock WHERE name = ? IF owner = ?`,
        [LOCK_NAME, this.owner],
        { prepare: true },
      );
    } catch {
      // The lease expires after LOCK_TTL_SECONDS; the caller's own error matters more.
    }
  }
}
