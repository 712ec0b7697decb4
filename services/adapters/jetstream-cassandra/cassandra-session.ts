/**
 * CassandraSession: how the table families (user-tables.ts, group-tables.ts,
 * event-tables.ts; opened together by cassandra-tables.ts) send their
 * statements, and the row readers they share.
 *
 * Rules every request keeps:
 * - Prepared statements only (`{ prepare: true }`), at LOCAL_QUORUM; an LWT's
 *   Paxos phase at LOCAL_SERIAL. Absent values are bound as `unset` by the
 *   callers, never null, so no write leaves a tombstone behind.
 * - Requests made during one turn of the event loop go out together (see
 *   {@link CassandraSession.run}): one session per client, shared by every
 *   family, so that they are coalesced across families too.
 * - A driver failure (no host, timeouts, overload) rejects with ChatError
 *   Unavailable, the driver's error as cause; a ChatError passes through.
 */
import cassandra from "cassandra-driver";
import type { Client, types } from "cassandra-driver";
import { ChatError } from "../../core/errors.js";
import type { Role } from "../../core/model.js";
import { isCqlIdentifier } from "./cassandra-url.js";

/** Params are the bound values of one prepared statement, in the order of its markers. */
export type Params = unknown[];

/** Statement is one prepared statement with its bound values (one entry of a batch). */
export type Statement = [string, Params];

/** MAX_CHUNK is the largest number of rows one query asks for. */
export const MAX_CHUNK = 1000;

/** LOOKUP_CONCURRENCY is the concurrency of per-row lookups (memberships' groups, a family's tokens). */
export const LOOKUP_CONCURRENCY = 32;

/** CL_LOCAL_QUORUM is the consistency of every read and write. */
const CL_LOCAL_QUORUM = cassandra.types.consistencies.localQuorum;

/** CL_LOCAL_SERIAL is the serial consistency of LWTs, and of a read that must complete a Paxos round in flight. */
export const CL_LOCAL_SERIAL = cassandra.types.consistencies.localSerial;

/**
 * CassandraSession sends prepared statements on one connected client, for
 * one keyspace. Every method rejects with ChatError Unavailable for driver
 * failures (see the module comment).
 */
export class CassandraSession {
  /** keyspace holds the migrated tables (a lower-case plain identifier). */
  readonly keyspace: string;

  /**
   * constructor takes a connected client (default encoding: numbers for
   * bigint) and the keyspace. Throws on a bad keyspace or on a client that
   * reads bigint as BigInt.
   */
  constructor(
    private readonly client: Client,
    keyspace: string,
  ) {
    if (!isCqlIdentifier(keyspace) || keyspace !== keyspace.toLowerCase()) {
      throw new Error(`invalid keyspace ${JSON.stringify(keyspace)}`);
    }
    const driverOptions = (client as unknown as { options?: { encoding?: { useBigIntAsLong?: boolean } } }).options;
    if (driverOptions?.encoding?.useBigIntAsLong) {
      throw new Error("CassandraTables needs the driver's default encoding (encoding.useBigIntAsLong off)");
    }
    this.keyspace = keyspace;
  }

  /**
   * Requests made during one turn of the event loop are sent together, in
   * the check phase (setImmediate), so the driver writes them to the socket
   * with one syscall: it coalesces only what is queued before its own
   * nextTick, which under load is one request per HTTP request callback. On
   * this machine a socket write to Cassandra costs about as much CPU as the
   * driver's own work for the request (issue 4).
   */
  private readonly deferred: (() => void)[] = [];
  private deferScheduled = false;
  private readonly flushDeferred = (): void => {
    this.deferScheduled = false;
    for (const send of this.deferred.splice(0)) send();
  };

  /** soon runs `call` in this turn's check phase, with every other request of the turn. */
  private soon<T>(call: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.deferred.push(() => void call().then(resolve, reject));
      if (!this.deferScheduled) {
        this.deferScheduled = true;
        setImmediate(this.flushDeferred);
      }
    });
  }

  /**
   * run executes one prepared statement at LOCAL_QUORUM (LWTs: LOCAL_SERIAL
   * for their Paxos phase), sent with the other requests of this turn of the
   * event loop.
   */
  run(cql: string, params: Params, idempotent: boolean, consistency = CL_LOCAL_QUORUM): Promise<types.ResultSet> {
    return this.soon(() => this.execute(cql, params, idempotent, consistency));
  }

  private execute(cql: string, params: Params, idempotent: boolean, consistency: number): Promise<types.ResultSet> {
    return this.client
      .execute(cql, params, {
        prepare: true,
        isIdempotent: idempotent,
        consistency,
        serialConsistency: CL_LOCAL_SERIAL,
      })
      .catch(unavailable);
  }

  /**
   * batch executes prepared statements as one batch at LOCAL_QUORUM (logged
   * unless told otherwise), sent with the other requests of this turn of the
   * event loop.
   */
  batch(queries: Statement[], idempotent: boolean, logged = true): Promise<types.ResultSet> {
    return this.soon(() => this.sendBatch(queries, idempotent, logged));
  }

  private sendBatch(queries: Statement[], idempotent: boolean, logged: boolean): Promise<types.ResultSet> {
    return this.client
      .batch(
        queries.map(([query, params]) => ({ query, params })),
        { prepare: true, logged, isIdempotent: idempotent, consistency: CL_LOCAL_QUORUM },
      )
      .catch(unavailable);
  }

  /**
   * fetch returns up to `max` rows of a query, following pages (filtered
   * queries may return short pages). Sent at once, not deferred.
   */
  async fetch(cql: string, params: Params, max: number): Promise<types.Row[]> {
    const out: types.Row[] = [];
    let pageState: string | undefined;
    do {
      const rs: types.ResultSet = await this.client
        .execute(cql, params, {
          prepare: true,
          isIdempotent: true,
          consistency: CL_LOCAL_QUORUM,
          fetchSize: Math.min(Math.max(max - out.length, 1), 5000),
          ...(pageState === undefined ? {} : { pageState }),
        })
        .catch(unavailable);
      out.push(...rs.rows);
      pageState = rs.pageState ?? undefined;
    } while (pageState !== undefined && out.length < max);
    return out.length > max ? out.slice(0, max) : out;
  }

  /**
   * pageLive pages a clustering range (`key > after`) of one partition and
   * maps each row, skipping rows `map` rejects (partial rows left by a write
   * that raced a removal), until `limit` mapped rows or the end. `cql` takes
   * (partition, after, limit).
   */
  async pageLive<T>(
    cql: string,
    partition: string,
    after: string,
    keyColumn: string,
    limit: number,
    map: (row: types.Row) => T | undefined,
  ): Promise<T[]> {
    const n = clampLimit(limit);
    const out: T[] = [];
    let cursor = after;
    while (out.length < n) {
      const want = Math.min(n - out.length, MAX_CHUNK);
      const rows = await this.fetch(cql, [partition, cursor, want], want);
      for (const r of rows) {
        const v = map(r);
        if (v !== undefined) out.push(v);
      }
      const last = rows.at(-1);
      if (rows.length < want || !last) break;
      cursor = str(last, keyColumn);
    }
    return out;
  }
}

/**
 * unavailable turns a driver failure (no host, timeouts, overload) into
 * ChatError Unavailable, which clients retry; the original stays as cause.
 * A ChatError (a decision, not a failure) passes through.
 */
function unavailable(e: unknown): never {
  if (e instanceof ChatError) throw e;
  throw new ChatError("Unavailable", "the database is unavailable; retry", { cause: e });
}

// ------------------------------------------------------------ row helpers

/** clampLimit is a row limit as a whole number >= 0 (0 for NaN and infinities). */
export function clampLimit(limit: number): number {
  return Number.isFinite(limit) ? Math.max(0, Math.floor(limit)) : 0;
}

/** isRole tells whether a column value is a Role. */
export function isRole(v: unknown): v is Role {
  return v === "member" || v === "admin" || v === "owner";
}

/** optStr reads a text column, or null if the row or the value is absent (or not text). */
export function optStr(r: types.Row | undefined, col: string): string | null {
  const v: unknown = r?.get(col);
  return typeof v === "string" ? v : null;
}

/** str reads a text column; throws ChatError Internal if it is absent. */
export function str(r: types.Row | undefined, col: string): string {
  const v = optStr(r, col);
  if (v === null) throw new ChatError("Internal", `column ${col} is missing`);
  return v;
}

/**
 * optNum reads an int or bigint column (the driver gives Long for bigint) as
 * a number, or null if absent; throws ChatError Internal for a value that is
 * not a number.
 */
export function optNum(r: types.Row | undefined, col: string): number | null {
  const v: unknown = r?.get(col);
  if (v === null || v === undefined) return null;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  if (v instanceof cassandra.types.Long) return v.toNumber();
  throw new ChatError("Internal", `column ${col} is not a number`);
}

/** num reads an int or bigint column as a number (see optNum); throws ChatError Internal if it is absent. */
export function num(r: types.Row | undefined, col: string): number {
  const v = optNum(r, col);
  if (v === null) throw new ChatError("Internal", `column ${col} is missing`);
  return v;
}
