/**
 * SqliteEventFeed: the embedded EventFeed, following the store's `events`
 * table by rowid.
 *
 * `events` is a rowid table and SQLite serialises writers, so every
 * committed event has a rowid above every event committed before it (a new
 * rowid is max + 1; the purge deletes only old rows). A follower's name
 * therefore has one durable position in `feed_positions`: the highest rowid
 * up to which every event was acknowledged (handlers settle out of order;
 * the acknowledged events above the first unacknowledged one are kept in
 * memory and come again only after a restart). The feed reads the rows above
 * what it has read so far, in rowid order, from its own connection to the
 * database file (WAL: readers never block the store's writer), and hands
 * them out.
 *
 * Instances following one name are the follow calls on one SqliteEventFeed
 * (the embedded deployment is one process): they share the name's events,
 * each to one of them at a time. Two SqliteEventFeed objects (or processes)
 * following the same name on one file would both deliver every event.
 *
 * Limits: a rowid is reused only if the newest row is deleted, i.e. when
 * every event is past retention. The feed notices that the table shrank
 * below what it read and starts again from the first row (the rows then are
 * all new); it cannot notice the one case where the deleted newest row's
 * rowid is taken again before it looks (a retried send whose expired
 * original was the newest event of the whole database): that event is not
 * delivered.
 */
import { watch } from "node:fs";
import type { FSWatcher } from "node:fs";
import Database from "better-sqlite3";
import type { Database as Db, Statement } from "better-sqlite3";
import { ChatError } from "../../core/errors.js";
import type { GroupEvent } from "../../core/model.js";
import type { EventFeed, Subscription } from "../../core/ports.js";
import { EVENT_COLUMNS, toEvent } from "./sqlite-store.js";
import type { EventRow } from "./sqlite-store.js";

/** SqliteEventFeedOptions configures createSqliteEventFeed. */
export type SqliteEventFeedOptions = (
  | {
      /** The store's database file (already created and migrated by createSqliteStore); the feed opens its own connection. */
      readonly path: string;
    }
  | {
      /** A connection to share (the store's, for an in-memory database); not closed by the feed. */
      readonly db: Db;
    }
) & {
  /**
   * How often the feed looks for new rows, ms (default 50). A commit by
   * another connection leaves no signal but the file, so the feed polls:
   * 20 indexed range reads a second cost next to nothing and add at most
   * 50 ms to an event's way, well inside the notifier's coalescing window.
   * A change to the WAL file (fs.watch, when available) wakes it sooner.
   */
  readonly pollMs?: number;
  /** Pause before an event whose handler rejected comes again, ms (default 1000). */
  readonly retryDelayMs?: number;
  /**
   * Most events a name holds in memory above its acknowledged position
   * (default 20,000): an event that keeps failing holds the position, and
   * past this many the feed reads no further until it is acknowledged (like
   * a JetStream consumer's max_ack_pending).
   */
  readonly maxWindow?: number;
  /** onError hears failures of the feed's background work (a read, a position write, an undecodable row); the feed carries on. */
  readonly onError?: (err: unknown) => void;
};

const DEFAULT_POLL_MS = 50;
const DEFAULT_RETRY_DELAY_MS = 1000;
const DEFAULT_MAX_WINDOW = 20_000;

/** FEED_NAME_RE is what a follower name may look like (EventFeed.follow): the same rule as JetStream's durable names. */
const FEED_NAME_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;

type RowWithId = EventRow & { rowid: number };

/** Entry is one read event of a name, until it falls below the acknowledged position. */
interface Entry {
  readonly rowid: number;
  /** The event; dropped once acknowledged. */
  event: GroupEvent | undefined;
  acked: boolean;
  /** In `ready` or waiting on `retry` to go there. */
  queued: boolean;
  retry: NodeJS.Timeout | undefined;
}

/** Follower is one follow call. */
interface Follower {
  readonly handler: (event: GroupEvent) => Promise<void>;
  readonly maxPending: number;
  readonly ackWaitMs: number;
  /** Handler calls not settled yet. */
  inFlight: number;
  stopped: boolean;
  /** Deliveries still counted as the event's current one (not settled, timed out or given back). */
  readonly open: Set<Delivery>;
}

/** Delivery is one handler call for an entry. */
interface Delivery {
  readonly entry: Entry;
  readonly follower: Follower;
  /** The name's generation when it was made (see NameFeed.generation). */
  readonly generation: number;
  timer: NodeJS.Timeout | undefined;
}

/** NameFeed is the state of one follower name. */
interface NameFeed {
  readonly name: string;
  /** Every read rowid at or below it is acknowledged. */
  position: number;
  /** What feed_positions holds for the name. */
  saved: number;
  /** The highest rowid read. */
  readUpTo: number;
  /** Read entries above `position`, ascending by rowid (from `head`). */
  window: Entry[];
  head: number;
  /** Entries to hand out, in order. */
  ready: Entry[];
  followers: Follower[];
  /** Round-robin start for the next hand-out. */
  next: number;
  /** Raised when the name starts again from the first row; deliveries of an older generation are ignored. */
  generation: number;
}

/**
 * SqliteEventFeed implements EventFeed on the embedded store's database (see
 * the module comment). Guarantees beyond the port: events reach a name in
 * rowid (commit) order, except those that come again; an acknowledged
 * position is written within a poll interval and when a follower stops or
 * the feed closes; events redelivered after a rejection or timeout go ahead
 * of new ones.
 */
export class SqliteEventFeed implements EventFeed {
  private readonly names = new Map<string, NameFeed>();
  private readonly pollMs: number;
  private readonly retryDelayMs: number;
  private readonly maxWindow: number;
  private readonly stmts: {
    readonly rowsAfter: Statement<[number, number], RowWithId>;
    readonly maxRowid: Statement<[], number>;
    readonly position: Statement<[string], number>;
    readonly insertPosition: Statement<[string, number]>;
    readonly savePosition: Statement<[string, number]>;
  };
  private poller: NodeJS.Timeout | undefined;
  private watcher: FSWatcher | undefined;
  private soon: NodeJS.Immediate | undefined;
  private closed = false;

  /** constructor takes a connection to the migrated database; prefer createSqliteEventFeed. */
  constructor(
    private readonly db: Db,
    private readonly ownsDb: boolean,
    private readonly opts: Omit<SqliteEventFeedOptions, "path" | "db"> & { readonly walPath?: string },
  ) {
    this.pollMs = opts.pollMs ?? DEFAULT_POLL_MS;
    this.retryDelayMs = opts.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
    this.maxWindow = opts.maxWindow ?? DEFAULT_MAX_WINDOW;
    this.stmts = {
      rowsAfter: db.prepare<[number, number], RowWithId>(
        `SELECT rowid, ${EVENT_COLUMNS} FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?`,
      ),
      maxRowid: db.prepare<[], number>("SELECT coalesce(max(rowid), 0) FROM events").pluck(),
      position: db.prepare<[string], number>("SELECT position FROM feed_positions WHERE name = ?").pluck(),
      insertPosition: db.prepare<[string, number]>("INSERT OR IGNORE INTO feed_positions (name, position) VALUES (?, ?)"),
      savePosition: db.prepare<[string, number]>(
        "INSERT INTO feed_positions (name, position) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET position = excluded.position",
      ),
    };
  }

  async follow(
    name: string,
    handler: (event: GroupEvent) => Promise<void>,
    opts: { readonly maxPending: number; readonly ackWaitMs: number },
  ): Promise<Subscription> {
    if (this.closed) throw new ChatError("FailedPrecondition", "the event feed is closed");
    if (!FEED_NAME_RE.test(name)) {
      throw new ChatError("InvalidArgument", `invalid feed follower name ${JSON.stringify(name)}: use 1-32 of [a-z0-9_-]`);
    }
    if (!Number.isSafeInteger(opts.maxPending) || opts.maxPending < 1) {
      throw new ChatError("InvalidArgument", `maxPending must be a positive integer, got ${opts.maxPending}`);
    }
    if (!Number.isFinite(opts.ackWaitMs) || opts.ackWaitMs < 1) {
      throw new ChatError("InvalidArgument", `ackWaitMs must be at least 1, got ${opts.ackWaitMs}`);
    }
    const feed = this.names.get(name) ?? this.load(name);
    const follower: Follower = { handler, maxPending: opts.maxPending, ackWaitMs: opts.ackWaitMs, inFlight: 0, stopped: false, open: new Set() };
    feed.followers.push(follower);
    this.start();
    this.wake();
    return { unsubscribe: () => this.stopFollower(feed, follower) };
  }

  /** close stops every follower (their events in flight are not acknowledged), writes the positions and releases the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    // Closed first, so what a stopped follower gives back is not handed to the next one.
    this.closed = true;
    for (const feed of this.names.values()) {
      for (const f of [...feed.followers]) this.stopFollower(feed, f);
      for (const e of feed.window.slice(feed.head)) clearTimeout(e.retry);
    }
    clearInterval(this.poller);
    if (this.soon) clearImmediate(this.soon);
    this.watcher?.close();
    if (this.ownsDb && this.db.open) this.db.close();
  }

  // ---- names and positions ----

  /** load reads the name's position; a name without one starts at the newest row now, written at once so a restart keeps it. */
  private load(name: string): NameFeed {
    let position = this.stmts.position.get(name);
    if (position === undefined) {
      this.stmts.insertPosition.run(name, this.stmts.maxRowid.get() ?? 0);
      position = this.stmts.position.get(name) ?? 0;
    }
    const feed: NameFeed = {
      name,
      position,
      saved: position,
      readUpTo: position,
      window: [],
      head: 0,
      ready: [],
      followers: [],
      next: 0,
      generation: 0,
    };
    this.names.set(name, feed);
    return feed;
  }

  private save(feed: NameFeed): void {
    if (feed.position === feed.saved || !this.db.open) return;
    try {
      this.stmts.savePosition.run(feed.name, feed.position);
      feed.saved = feed.position;
    } catch (err) {
      this.opts.onError?.(err);
    }
  }

  // ---- polling ----

  /** start begins polling (and watching the WAL) with the first follower. */
  private start(): void {
    if (this.poller) return;
    this.poller = setInterval(() => this.tick(), this.pollMs);
    this.poller.unref();
    if (this.opts.walPath) {
      try {
        this.watcher = watch(this.opts.walPath, { persistent: false }, () => this.wake());
        this.watcher.on("error", () => {
          this.watcher?.close();
          this.watcher = undefined;
        });
      } catch {
        // No WAL file to watch (yet): polling alone.
      }
    }
  }

  /** wake runs a tick soon (once for any number of calls in one turn). */
  private wake(): void {
    if (this.soon || this.closed) return;
    this.soon = setImmediate(() => {
      this.soon = undefined;
      this.tick();
    });
  }

  private tick(): void {
    if (this.closed) return;
    for (const feed of this.names.values()) {
      try {
        this.fill(feed);
      } catch (err) {
        this.opts.onError?.(err);
      }
      this.save(feed);
    }
  }

  /** fill reads as many new rows as the followers can take (bounded by maxWindow) and hands them out. */
  private fill(feed: NameFeed): void {
    let capacity = 0;
    for (const f of feed.followers) capacity += Math.max(0, f.maxPending - f.inFlight);
    const want = Math.min(capacity - feed.ready.length, this.maxWindow - (feed.window.length - feed.head));
    if (want <= 0) return;
    const rows = this.stmts.rowsAfter.all(feed.readUpTo, want);
    if (rows.length === 0) {
      if (feed.readUpTo > 0 && (this.stmts.maxRowid.get() ?? 0) < feed.readUpTo) this.restart(feed);
      return;
    }
    for (const row of rows) {
      const entry: Entry = { rowid: row.rowid, event: undefined, acked: false, queued: false, retry: undefined };
      feed.window.push(entry);
      feed.readUpTo = row.rowid;
      try {
        entry.event = toEvent(row);
      } catch (err) {
        this.opts.onError?.(new Error(`event feed skipped row ${row.rowid} (${row.group_id}/${row.seq}): not a decodable event`, { cause: err }));
        this.ack(feed, entry);
        continue;
      }
      entry.queued = true;
      feed.ready.push(entry);
    }
    this.pump(feed);
  }

  /**
   * restart starts the name again from the first row: the table holds no
   * row at or above what was read, so every row there now was appended
   * since (see the module comment). Deliveries in flight are forgotten.
   */
  private restart(feed: NameFeed): void {
    for (const e of feed.window.slice(feed.head)) clearTimeout(e.retry);
    for (const f of feed.followers) {
      for (const d of f.open) clearTimeout(d.timer);
      f.open.clear();
    }
    feed.generation++;
    feed.window = [];
    feed.head = 0;
    feed.ready = [];
    feed.position = 0;
    feed.readUpTo = 0;
    this.opts.onError?.(new Error(`event feed ${feed.name}: the events table shrank below the rows it had read (all expired?); following it from its first row`));
  }

  // ---- hand-out and acknowledgement ----

  /** pump hands ready entries to followers with room, round robin. */
  private pump(feed: NameFeed): void {
    while (feed.ready.length > 0) {
      const follower = this.pick(feed);
      if (!follower) return;
      const entry = feed.ready.shift() as Entry;
      entry.queued = false;
      if (entry.acked || !entry.event) continue;
      this.deliver(feed, follower, entry, entry.event);
    }
  }

  private pick(feed: NameFeed): Follower | undefined {
    const n = feed.followers.length;
    for (let i = 0; i < n; i++) {
      const f = feed.followers[(feed.next + i) % n] as Follower;
      if (!f.stopped && f.inFlight < f.maxPending) {
        feed.next = (feed.next + i + 1) % n;
        return f;
      }
    }
    return undefined;
  }

  private deliver(feed: NameFeed, follower: Follower, entry: Entry, event: GroupEvent): void {
    const d: Delivery = { entry, follower, generation: feed.generation, timer: undefined };
    follower.inFlight++;
    follower.open.add(d);
    d.timer = setTimeout(() => {
      // Not done within ackWaitMs: it comes again (the late result still counts if it succeeds).
      if (follower.open.delete(d)) this.requeue(feed, entry, 0);
    }, follower.ackWaitMs);
    d.timer.unref();
    let result: Promise<void>;
    try {
      result = Promise.resolve(follower.handler(event));
    } catch (err) {
      result = Promise.reject(err);
    }
    result.then(
      () => this.settle(feed, d, true),
      () => this.settle(feed, d, false),
    );
  }

  private settle(feed: NameFeed, d: Delivery, ok: boolean): void {
    const { follower, entry } = d;
    follower.inFlight--;
    clearTimeout(d.timer);
    const current = follower.open.delete(d);
    if (this.closed || follower.stopped || d.generation !== feed.generation) {
      // Given back at unsubscribe (or forgotten): not acknowledged. The name's other followers may take more now.
      if (!this.closed) this.pump(feed);
      return;
    }
    if (ok) this.ack(feed, entry);
    else if (current) this.requeue(feed, entry, this.retryDelayMs);
    this.pump(feed);
    if (feed.ready.length === 0) this.wake();
  }

  /** requeue puts the entry back to be handed out after `delayMs`, ahead of new entries, unless it is acknowledged or queued already. */
  private requeue(feed: NameFeed, entry: Entry, delayMs: number): void {
    if (entry.acked || entry.queued || this.closed) return;
    entry.queued = true;
    const generation = feed.generation;
    const put = () => {
      entry.retry = undefined;
      if (this.closed || generation !== feed.generation) return;
      if (entry.acked) {
        entry.queued = false;
        return;
      }
      feed.ready.unshift(entry);
      this.pump(feed);
    };
    if (delayMs <= 0) put();
    else {
      entry.retry = setTimeout(put, delayMs);
      entry.retry.unref();
    }
  }

  /** ack marks the entry acknowledged and raises the position over every acknowledged entry at the window's head. */
  private ack(feed: NameFeed, entry: Entry): void {
    if (entry.acked) return;
    entry.acked = true;
    entry.event = undefined;
    clearTimeout(entry.retry);
    entry.retry = undefined;
    while (feed.head < feed.window.length && (feed.window[feed.head] as Entry).acked) {
      feed.position = (feed.window[feed.head] as Entry).rowid;
      feed.head++;
    }
    if (feed.head > 1024 && feed.head * 2 > feed.window.length) {
      feed.window = feed.window.slice(feed.head);
      feed.head = 0;
    }
  }

  /** stopFollower stops one follow call: nothing more starts for it, and what it holds goes to the name's other followers (or the next one). */
  private stopFollower(feed: NameFeed, follower: Follower): void {
    if (follower.stopped) return;
    follower.stopped = true;
    feed.followers = feed.followers.filter((f) => f !== follower);
    feed.next = 0;
    const held = [...follower.open];
    follower.open.clear();
    for (const d of held) {
      clearTimeout(d.timer);
      if (d.generation === feed.generation) this.requeue(feed, d.entry, 0);
    }
    this.save(feed);
  }
}

/**
 * createSqliteEventFeed opens the feed on the store's database: its own
 * connection to `path` (busy_timeout=5000, synchronous=NORMAL: a position
 * write lost in a power cut only means those events come again), or the
 * given shared connection. The database must be migrated (createSqliteStore
 * does it; `feed_positions` is schema version 6). Throws if the file does
 * not exist or is not migrated.
 */
export function createSqliteEventFeed(opts: SqliteEventFeedOptions): SqliteEventFeed {
  const { pollMs, retryDelayMs, maxWindow, onError } = opts;
  const rest = {
    ...(pollMs !== undefined ? { pollMs } : {}),
    ...(retryDelayMs !== undefined ? { retryDelayMs } : {}),
    ...(maxWindow !== undefined ? { maxWindow } : {}),
    ...(onError ? { onError } : {}),
  };
  if ("db" in opts) return new SqliteEventFeed(opts.db, false, rest);
  const db = new Database(opts.path, { fileMustExist: true });
  try {
    db.pragma("busy_timeout = 5000");
    db.pragma("synchronous = NORMAL");
    return new SqliteEventFeed(db, true, { ...rest, walPath: `${opts.path}-wal` });
  } catch (e) {
    db.close();
    throw e;
  }
}
