/**
 * EventTables: the events family of the production Store's tables
 * (docs/production.md, "Storage"): `events_by_group`, its index
 * `group_buckets`, and the group's `head_seq` (the highest seq written, a
 * column of `groups` that every event write raises). The `message_ids`
 * table of the schema is no longer written or read: the timeline stream's
 * `Nats-Msg-Id` duplicate window makes sends idempotent. It stores
 * and reads events; it does not assign seqs: events arrive with their seq
 * already assigned (by the JetStream compare-and-set sequencer) and are
 * written idempotently, so the persister may replay them in any order.
 *
 * Rules every method keeps (besides CassandraSession's):
 * - `head_seq` is written with `USING TIMESTAMP <seq>`, so it never goes down
 *   whatever the order of the writes. Nothing may write it with a wall-clock
 *   timestamp: that cell would win over every later seq-stamped write.
 * - `group_buckets.first_seq` is written with timestamp MAX - seq (the smallest
 *   seq wins) and `last_seq` with timestamp seq (the largest wins), so the
 *   index is exact without reading it first.
 * - Retention: table TTLs delete expired rows; reads also hide every event
 *   with `at < clock.now() - retentionMs` (the injected clock), exactly as the
 *   SQLite store does, so a fake clock can expire events in tests.
 */
import cassandra from "cassandra-driver";
import type { types } from "cassandra-driver";
import { ChatError } from "../../core/errors.js";
import type { ChatMessage, GroupEvent } from "../../core/model.js";
import type { Clock, MessagePage, RetainedEdge } from "../../core/ports.js";
import { MAX_CHUNK, clampLimit, num, optNum, optStr, str } from "./cassandra-session.js";
import type { CassandraSession, Params, Statement } from "./cassandra-session.js";
import { EVENT_COLUMN_NAMES, decodeEvent, encodeEvent } from "./event-columns.js";
import type { EventColumns } from "./event-columns.js";

/** DAY_MS is the width of one event bucket. */
export const DAY_MS = 86_400_000;

/** bucketOf is the bucket of an event at `at` ms: its UTC day number (days since 1970-01-01). */
export function bucketOf(at: number): number {
  return Math.floor(at / DAY_MS);
}

/** FIRST_SEQ_TIMESTAMP_BASE - seq is the write timestamp of group_buckets.first_seq. */
const FIRST_SEQ_TIMESTAMP_BASE = Number.MAX_SAFE_INTEGER;

/** EventTablesOptions configures EventTables. */
export interface EventTablesOptions {
  /** Events with `at < clock.now() - retentionMs` are invisible to reads. Should not exceed the tables' TTL. */
  readonly retentionMs: number;
  /** Source of "now" for retention. */
  readonly clock: Clock;
}

/** MessageEvent is a GroupEvent whose body is a message. */
export type MessageEvent = GroupEvent & { readonly body: { readonly type: "message"; readonly message: ChatMessage } };

/** One stored event row as read, before decoding. */
interface StoredEvent {
  readonly seq: number;
  readonly cols: EventColumns;
}

/** One row of group_buckets. */
interface BucketInfo {
  readonly bucket: number;
  /** Smallest seq in the bucket (0 if unknown: conservative). */
  readonly firstSeq: number;
  /** Largest seq in the bucket (MAX_SAFE_INTEGER if unknown: conservative). */
  readonly lastSeq: number;
}

type Direction = "asc" | "desc";

const { unset } = cassandra.types;

/**
 * EventTables reads and writes a group's events (see the module comment for
 * the rules). Methods throw ChatError Internal on a corrupt row or a call
 * that breaks their contract, and ChatError Unavailable for driver failures.
 */
export class EventTables {
  private readonly q: ReturnType<typeof statements>;

  /** constructor takes the shared session. Throws on a retention that is not positive. */
  constructor(
    private readonly db: CassandraSession,
    private readonly opts: EventTablesOptions,
  ) {
    if (!(opts.retentionMs > 0)) throw new Error(`invalid retention ${opts.retentionMs}`);
    this.q = statements(db.keyspace);
  }

  // ----------------------------------------------------------------- writes

  /**
   * eventWrites are the statements that store any event and find it again:
   * its event row, its bucket's first and last seq, and head_seq, in that
   * order; for the logged batch of a membership event or rename
   * (GroupTables), which adds the rows the event changes.
   */
  eventWrites(e: GroupEvent): Statement[] {
    const s = e.seq;
    return [
      [this.q.insertEvent, this.eventParams(e, encodeEvent(e))],
      ...this.bucketWrites(e.groupId, bucketOf(e.at), s),
      [this.q.setHead, [s, s, e.groupId]],
    ];
  }

  /**
   * writeMessage stores a message event whose seq is already assigned,
   * idempotently (writing it again, or replaying older events after it,
   * changes nothing): its group_buckets entry, the event row and head_seq in
   * one unlogged batch (one request, three partitions); writeMessages writes
   * many at once. When this resolves, head_seq >= seq and the event is
   * readable. A text too long for a small batch (see SMALL_BATCH_BYTES) has
   * its event row written on its own, after the bucket index and before
   * head_seq. A batch that failed half-way may have written some rows
   * without the others: writing the event again completes it.
   *
   * Throws ChatError Internal for an event that is not a message, or a
   * message that disagrees with its event.
   */
  async writeMessage(event: GroupEvent): Promise<void> {
    if (event.body.type !== "message") {
      throw new ChatError("Internal", `writeMessage was given ${event.body.type} event ${event.groupId}/${event.seq}`);
    }
    const cols = encodeEvent(event);
    const bucket = bucketOf(event.at);
    const rows: Statement[] = [
      ...this.bucketWrites(event.groupId, bucket, event.seq),
      [this.q.setHead, [event.seq, event.seq, event.groupId]],
    ];
    const eventRow: Statement = [this.q.insertEvent, this.eventParams(event, cols)];
    if (isSmall(event.body.message.text)) {
      await this.db.batch([eventRow, ...rows], true, false);
    } else {
      // Cassandra warns about (and past 50 KiB refuses) large batches: the big row goes on its own, after the
      // rows that find it (an event row is only ever stored with or after them) and before head_seq.
      const head = rows.pop() as Statement;
      await this.db.batch(rows, true, false);
      await this.db.run(eventRow[0], eventRow[1], true);
      await this.db.run(head[0], head[1], true);
    }
  }

  /**
   * writeMessages stores message events of one group whose seqs are already
   * assigned, idempotently, batched per partition: the events of one bucket
   * go out as unlogged batches (their event rows, the bucket's first and
   * last seq, and head_seq; at most MESSAGES_BATCH_BYTES of text per batch,
   * a long text in a batch of its own), the buckets in parallel. For the
   * persister, the one writer of messages: it resolves once every row is
   * written. A batch that failed half-way left rows that writing the same
   * events again completes (idempotent, seq-stamped).
   * Throws ChatError Internal for an event of another group or not a message.
   */
  async writeMessages(groupId: string, events: readonly GroupEvent[]): Promise<void> {
    const byBucket = new Map<number, GroupEvent[]>();
    for (const e of events) {
      if (e.groupId !== groupId || e.body.type !== "message") {
        throw new ChatError("Internal", `writeMessages(${groupId}) was given ${e.body.type} event ${e.groupId}/${e.seq}`);
      }
      const b = bucketOf(e.at);
      const list = byBucket.get(b);
      if (list) list.push(e);
      else byBucket.set(b, [e]);
    }
    const q = this.q;
    const writes: Promise<unknown>[] = [];
    for (const [bucket, list] of byBucket) {
      let rows: Statement[] = [];
      let bytes = 0;
      let lo = Number.POSITIVE_INFINITY;
      let hi = 0;
      const send = () => {
        if (rows.length === 0) return;
        rows.push(...this.bucketWrites(groupId, bucket, lo), [q.bucketLast, [hi, hi, groupId, bucket]], [q.setHead, [hi, hi, groupId]]);
        writes.push(this.db.batch(rows, true, false));
        rows = [];
        bytes = 0;
        lo = Number.POSITIVE_INFINITY;
        hi = 0;
      };
      for (const e of list) {
        if (e.body.type !== "message") continue;
        const text = e.body.message.text;
        const size = isSmall(text) ? text.length + ROW_OVERHEAD_BYTES : MESSAGES_BATCH_BYTES;
        if (bytes > 0 && bytes + size > MESSAGES_BATCH_BYTES) send();
        rows.push([q.insertEvent, this.eventParams(e, encodeEvent(e))]);
        bytes += size;
        lo = Math.min(lo, e.seq);
        hi = Math.max(hi, e.seq);
      }
      send();
    }
    await Promise.all(writes);
  }

  // ------------------------------------------------------------------ reads

  /** readEvents returns up to `limit` retained events with seq > afterSeq, ascending, across buckets. */
  async readEvents(groupId: string, afterSeq: number, limit: number): Promise<GroupEvent[]> {
    const n = clampLimit(limit);
    const out: GroupEvent[] = [];
    if (n === 0) return out;
    for await (const e of this.scan(groupId, "asc", afterSeq, Math.min(n, MAX_CHUNK))) {
      out.push(decodeEvent(groupId, e.seq, e.cols));
      if (out.length >= n) break;
    }
    return out;
  }

  /**
   * listMessages returns up to `limit` retained messages, ascending: with
   * `afterSeq`, the oldest with seq > afterSeq (and < beforeSeq if given);
   * with only `beforeSeq`, the newest with seq < beforeSeq; with neither, the
   * newest. `hasMore` tells whether more retained messages lie further in the
   * paging direction. Non-message events are skipped.
   */
  async listMessages(
    groupId: string,
    anchor: { beforeSeq?: number; afterSeq?: number },
    limit: number,
  ): Promise<MessagePage> {
    const n = clampLimit(limit);
    const chunk = Math.min(n + 1 + 16, MAX_CHUNK);
    const found: ChatMessage[] = [];
    const before = anchor.beforeSeq ?? Number.MAX_SAFE_INTEGER;
    const forward = anchor.afterSeq !== undefined;
    const from = anchor.afterSeq ?? before;
    for await (const e of this.scan(groupId, forward ? "asc" : "desc", from, chunk)) {
      if (forward && e.seq >= before) break;
      if (e.cols.kind !== "message") continue;
      const ev = decodeEvent(groupId, e.seq, e.cols);
      if (ev.body.type === "message") found.push(ev.body.message);
      if (found.length > n) break;
    }
    const messages = found.slice(0, n);
    if (!forward) messages.reverse();
    return { messages, hasMore: found.length > n };
  }

  /** firstRetained returns the oldest retained event's seq and when it leaves retention, or undefined if none is retained. */
  async firstRetained(groupId: string): Promise<RetainedEdge | undefined> {
    for await (const e of this.scan(groupId, "asc", 0, 1)) return { seq: e.seq, retainedUntil: e.cols.at + this.opts.retentionMs };
    return undefined;
  }

  // ---------------------------------------------------------------- private

  private cutoff(): number {
    return this.opts.clock.now() - this.opts.retentionMs;
  }

  private eventParams(e: GroupEvent, cols: EventColumns): Params {
    return [e.groupId, bucketOf(e.at), e.seq, ...EVENT_COLUMN_NAMES.map((c) => cols[c] ?? unset)];
  }

  private bucketWrites(groupId: string, bucket: number, seq: number): Statement[] {
    return [
      [this.q.bucketFirst, [FIRST_SEQ_TIMESTAMP_BASE - seq, seq, groupId, bucket]],
      [this.q.bucketLast, [seq, seq, groupId, bucket]],
    ];
  }

  /** bucketsOf lists the group's buckets that may hold events at or after `cutoff`. */
  private async bucketsOf(groupId: string, cutoff: number): Promise<BucketInfo[]> {
    const rows = await this.db.fetch(this.q.buckets, [groupId], Number.MAX_SAFE_INTEGER);
    return rows
      .map((r) => ({
        bucket: num(r, "bucket"),
        firstSeq: optNum(r, "first_seq") ?? 0,
        lastSeq: optNum(r, "last_seq") ?? Number.MAX_SAFE_INTEGER,
      }))
      .filter((b) => (b.bucket + 1) * DAY_MS > cutoff);
  }

  /**
   * scan yields the group's retained events strictly after `from` (asc) or
   * strictly before it (desc), in seq order, reading `chunk` rows at a time.
   *
   * Buckets are days of `at`, and writers' clocks differ, so neighbouring
   * buckets may overlap in seq near midnight. scan is therefore a lazy k-way
   * merge: a bucket is opened only once it could hold the next event (its
   * first_seq, or last_seq going down, is past the best open head), so the
   * common case reads one bucket at a time and never a bucket it does not need.
   */
  private async *scan(groupId: string, dir: Direction, from: number, chunk: number): AsyncGenerator<StoredEvent> {
    const cutoff = this.cutoff();
    const asc = dir === "asc";
    const pending = (await this.bucketsOf(groupId, cutoff))
      .filter((b) => (asc ? b.lastSeq > from : b.firstSeq < from))
      .sort((a, b) => (asc ? a.firstSeq - b.firstSeq : b.lastSeq - a.lastSeq));
    const open: BucketCursor[] = [];
    const better = (a: number, b: number) => (asc ? a < b : a > b);
    let lastYielded: number | undefined;
    for (;;) {
      let best = pickBest(open, better);
      for (let next = pending[0]; next; next = pending[0]) {
        if (best && !better(asc ? next.firstSeq : next.lastSeq, best.head.seq)) break;
        pending.shift();
        const bucket = next.bucket;
        const since = bucket * DAY_MS < cutoff ? cutoff : undefined;
        const cursor = new BucketCursor(from, chunk, (bound, n) => this.readBucket(groupId, bucket, dir, bound, n, since));
        if (await cursor.advance()) open.push(cursor);
        best = pickBest(open, better);
      }
      if (!best) return;
      const e = best.head;
      if (e.seq !== lastYielded) yield e;
      lastYielded = e.seq;
      if (!(await best.advance())) open.splice(open.indexOf(best), 1);
    }
  }

  /** readBucket reads up to `limit` rows of one bucket past `from` in `dir` order, with `at >= cutoff` if given. */
  private async readBucket(
    groupId: string,
    bucket: number,
    dir: Direction,
    from: number,
    limit: number,
    cutoff: number | undefined,
  ): Promise<StoredEvent[]> {
    const q = this.q;
    const [cql, params]: Statement =
      cutoff === undefined
        ? [dir === "asc" ? q.eventsAsc : q.eventsDesc, [groupId, bucket, from, limit]]
        : [dir === "asc" ? q.eventsAscSince : q.eventsDescSince, [groupId, bucket, from, cutoff, limit]];
    const rows = await this.db.fetch(cql, params, limit);
    return rows.map((r) => ({ seq: num(r, "seq"), cols: eventColumns(r) }));
  }
}

/** BucketCursor walks one bucket of a group's events in chunks. */
class BucketCursor {
  private buffer: StoredEvent[] = [];
  private exhausted = false;
  private bound: number;
  private current: StoredEvent | undefined;

  /** `read(bound, n)` returns up to n rows strictly past `bound`, in the scan's order. */
  constructor(
    from: number,
    private readonly chunk: number,
    private readonly read: (bound: number, n: number) => Promise<StoredEvent[]>,
  ) {
    this.bound = from;
  }

  /** head is the cursor's current event; valid after advance() returned true. */
  get head(): StoredEvent {
    if (!this.current) throw new Error("BucketCursor.head before advance");
    return this.current;
  }

  /** advance moves to the next event; false when the bucket has no more. */
  async advance(): Promise<boolean> {
    if (this.buffer.length === 0 && !this.exhausted) {
      const rows = await this.read(this.bound, this.chunk);
      this.exhausted = rows.length < this.chunk;
      const last = rows.at(-1);
      if (last) this.bound = last.seq;
      this.buffer = rows;
    }
    this.current = this.buffer.shift();
    return this.current !== undefined;
  }
}

function pickBest(open: readonly BucketCursor[], better: (a: number, b: number) => boolean): BucketCursor | undefined {
  let best: BucketCursor | undefined;
  for (const c of open) if (!best || better(c.head.seq, best.head.seq)) best = c;
  return best;
}

/** statements builds the family's CQL strings once per keyspace; the driver prepares each on first use. */
function statements(ks: string) {
  const ev = EVENT_COLUMN_NAMES.join(", ");
  const evMarks = EVENT_COLUMN_NAMES.map(() => "?").join(", ");
  return {
    setHead: `UPDATE ${ks}.groups USING TIMESTAMP ? SET head_seq = ? WHERE group_id = ?`,

    insertEvent: `INSERT INTO ${ks}.events_by_group (group_id, bucket, seq, ${ev}) VALUES (?, ?, ?, ${evMarks})`,
    eventsAsc: `SELECT seq, ${ev} FROM ${ks}.events_by_group
      WHERE group_id = ? AND bucket = ? AND seq > ? ORDER BY seq ASC LIMIT ?`,
    eventsDesc: `SELECT seq, ${ev} FROM ${ks}.events_by_group
      WHERE group_id = ? AND bucket = ? AND seq < ? ORDER BY seq DESC LIMIT ?`,
    // Single-partition filtering on `at`, only for the bucket that straddles the retention cutoff.
    eventsAscSince: `SELECT seq, ${ev} FROM ${ks}.events_by_group
      WHERE group_id = ? AND bucket = ? AND seq > ? AND at >= ? ORDER BY seq ASC LIMIT ? ALLOW FILTERING`,
    eventsDescSince: `SELECT seq, ${ev} FROM ${ks}.events_by_group
      WHERE group_id = ? AND bucket = ? AND seq < ? AND at >= ? ORDER BY seq DESC LIMIT ? ALLOW FILTERING`,
    bucketFirst: `UPDATE ${ks}.group_buckets USING TIMESTAMP ? SET first_seq = ? WHERE group_id = ? AND bucket = ?`,
    bucketLast: `UPDATE ${ks}.group_buckets USING TIMESTAMP ? SET last_seq = ? WHERE group_id = ? AND bucket = ?`,
    buckets: `SELECT bucket, first_seq, last_seq FROM ${ks}.group_buckets WHERE group_id = ?`,
  };
}

// ------------------------------------------------------------ row helpers

/**
 * SMALL_BATCH_BYTES bounds the text of a message whose event row goes into
 * the message's batch: Cassandra logs a warning for every batch above
 * `batch_size_warn_threshold` (5 KiB by default) and refuses one above 50 KiB.
 */
const SMALL_BATCH_BYTES = 3072;

/**
 * MESSAGES_BATCH_BYTES bounds what writeMessages puts in one batch (each
 * message counted as its text's length plus ROW_OVERHEAD_BYTES for its other
 * columns), near Cassandra's 5 KiB batch-size warning; a text longer than
 * SMALL_BATCH_BYTES goes alone.
 */
const MESSAGES_BATCH_BYTES = 4096;
const ROW_OVERHEAD_BYTES = 256;

/** isSmall tells whether a text's UTF-8 length is at most SMALL_BATCH_BYTES (without encoding short ones). */
function isSmall(text: string): boolean {
  if (text.length * 3 <= SMALL_BATCH_BYTES) return true;
  return text.length <= SMALL_BATCH_BYTES && Buffer.byteLength(text, "utf8") <= SMALL_BATCH_BYTES;
}

function eventColumns(r: types.Row): EventColumns {
  return {
    kind: str(r, "kind") as EventColumns["kind"],
    at: num(r, "at"),
    actor_id: str(r, "actor_id"),
    actor_name: str(r, "actor_name"),
    message_id: optStr(r, "message_id"),
    message_text: optStr(r, "message_text"),
    client_message_id: optStr(r, "client_message_id"),
    payload: optStr(r, "payload"),
  };
}
