/**
 * CassandraTables: the data-access layer the production Store is built on
 * (docs/production.md, "Storage"), one class per table family on one shared
 * session. It stores and reads rows; it does not decide anything and it does
 * not assign seqs: events arrive with their seq already assigned (by the
 * JetStream compare-and-set sequencer) and are written idempotently, so the
 * persister may replay them in any order.
 *
 * | family                        | tables                                                                  | module             |
 * |-------------------------------|-------------------------------------------------------------------------|--------------------|
 * | users and sessions            | users, users_by_name, refresh_tokens, refresh_tokens_by_family, revoked_sessions | user-tables.ts |
 * | groups and memberships        | groups, members_by_group, groups_by_user                                | group-tables.ts    |
 * | events                        | events_by_group, group_buckets (and groups.head_seq)                    | event-tables.ts    |
 * | read state                    | last_read_seq and notify of members_by_group and groups_by_user         | read-state-tables.ts |
 * | push devices                  | devices_by_user, device_by_token                                        | device-tables.ts   |
 * | push ledger                   | push_ledger                                                             | push-ledger-tables.ts |
 * | (how they all send requests)  |                                                                         | cassandra-session.ts |
 *
 * Rules every family keeps (each module states its own in detail):
 * - Prepared statements only; absent values are bound as `unset`, never
 *   null, so no write leaves a tombstone behind.
 * - LWT only for username uniqueness, refresh-token rotation and claiming a
 *   push (push_ledger).
 * - Every write to `groups`, `members_by_group` and `groups_by_user` carries
 *   `USING TIMESTAMP <seq>` of the event it comes from (1 for the group's
 *   creation), or a seq for read state (read-state-tables.ts), never a
 *   wall-clock timestamp.
 * - `group_buckets.first_seq` is written with timestamp MAX - seq and
 *   `last_seq` with timestamp seq, so the index is exact without a read.
 * - Retention: table TTLs delete expired rows; reads also hide every event
 *   with `at < clock.now() - retentionMs` (the injected clock).
 */
import type { Client } from "cassandra-driver";
import type { Clock } from "../../core/ports.js";
import { CassandraSession } from "./cassandra-session.js";
import { DeviceTables } from "./device-tables.js";
import { EventTables } from "./event-tables.js";
import { GroupTables } from "./group-tables.js";
import { PushLedgerTables } from "./push-ledger-tables.js";
import { ReadStateTables } from "./read-state-tables.js";
import { UserTables } from "./user-tables.js";

/** CassandraTablesOptions configures createCassandraTables. */
export interface CassandraTablesOptions {
  /** Keyspace holding the migrated tables (a lower-case plain identifier). */
  readonly keyspace: string;
  /** Events with `at < clock.now() - retentionMs` are invisible to reads. Should not exceed the tables' TTL. */
  readonly retentionMs: number;
  /** Source of "now" for retention and token TTLs. */
  readonly clock: Clock;
  /**
   * Lifetime of the refresh tokens the services issue (REFRESH_TOKEN_TTL): a
   * session's revocation mark lives at least this long (plus a day) after
   * the revocation, since a refresh racing it may insert a token the
   * revocation never saw.
   */
  readonly refreshTtlMs: number;
}

/**
 * CassandraTables are the table families of one keyspace, sharing one
 * session (so the requests of one turn of the event loop go out together,
 * whichever family made them). Methods throw ChatError for domain outcomes
 * (AlreadyExists on a taken username, Internal on a corrupt row) and
 * ChatError Unavailable for driver failures (timeouts, no host), with the
 * driver's error as cause.
 */
export interface CassandraTables {
  /** users, usernames, refresh tokens and revoked sessions. */
  readonly users: UserTables;
  /** groups and memberships; membership events and renames are written here. */
  readonly groups: GroupTables;
  /** events, their bucket index and message ids; messages are written here. */
  readonly events: EventTables;
  /** members' read markers and push settings (on the membership rows). */
  readonly readStates: ReadStateTables;
  /** users' push devices. */
  readonly devices: DeviceTables;
  /** claimed pushes. */
  readonly pushLedger: PushLedgerTables;
}

/**
 * createCassandraTables opens the table families on a connected client
 * (default encoding: numbers for bigint). Throws on a bad keyspace, a client
 * that reads bigint as BigInt, or a retention or refresh token lifetime that
 * is not positive.
 */
export function createCassandraTables(client: Client, opts: CassandraTablesOptions): CassandraTables {
  const session = new CassandraSession(client, opts.keyspace);
  const events = new EventTables(session, { retentionMs: opts.retentionMs, clock: opts.clock });
  const users = new UserTables(session, { clock: opts.clock, refreshTtlMs: opts.refreshTtlMs });
  return {
    users,
    groups: new GroupTables(session, events),
    events,
    readStates: new ReadStateTables(session),
    devices: new DeviceTables(session),
    pushLedger: new PushLedgerTables(session),
  };
}
