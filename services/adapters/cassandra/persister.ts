/**
 * The persister: a durable JetStream consumer on the timeline stream that
 * makes sure every group event reaches Cassandra (docs/production.md,
 * "Sequencing without LWT on the hot path").
 *
 * The Cassandra store writes each event right after its compare-and-set
 * publish; a process that dies between the two leaves an event in JetStream
 * that Cassandra lacks. Every message process runs a persister; they all
 * bind to one durable pull consumer (`NatsNames.durable("persister")`), so
 * JetStream hands each event to one of them (a queue group), and redelivers
 * it if that process dies before acking. An event is acked only once it is
 * known durable; a failed write is redelivered after a pause.
 *
 * It does not write every event again (issue 4: that doubled the store's
 * writes). It holds each event until `settleMs` after it was stored (its
 * writer has normally finished by then), and then, per group:
 * - events this process wrote itself (the store and the persister record
 *   what they wrote, see persistEvent) are done, and so are those another
 *   message process said it wrote (each persister publishes, every 100 ms,
 *   the stream seqs its process stored: `NatsNames.persisted`, core NATS);
 * - messages: one read per bucket tells which of them have their event row
 *   (a message's rows are written in one batch, or row by row with the
 *   event row after those that find it); the missing ones are written, and
 *   for the others the bucket index and head_seq are written again in one
 *   small batch (a writer whose batch was applied in part, then died, may
 *   have left them behind; its message_ids row is not checked: see
 *   docs/production.md, known limits);
 * - membership events and renames (rare) are written again, in seq order
 *   (idempotent and seq-stamped, with the counts they carry).
 * Writes are idempotent by primary key and seq-stamped (CassandraTables), so
 * replays, out-of-order delivery and the store's own write of the same event
 * are all harmless.
 */
import type { GroupEvent } from "../../core/model.js";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { nanos } from "@nats-io/transport-node";
import type { NatsConnection, Subscription as NatsSubscription } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, JetStreamApiCodes, JetStreamApiError, ReplayPolicy, jetstreamManager } from "@nats-io/jetstream";
import type { ConsumerMessages, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import type { NatsNames } from "../nats/subjects.js";
import { parseSequenced } from "../nats/jetstream-sequencer.js";
import type { SequencedEvent } from "../nats/jetstream-sequencer.js";
import { bucketOf } from "./cassandra-tables.js";
import type { CassandraTables, GroupCounts } from "./cassandra-tables.js";

/** PersisterLogger is the part of a pino logger the persister uses. */
export interface PersisterLogger {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

/** PersisterOptions configures startPersister. */
export interface PersisterOptions {
  /** An open NATS connection (not closed by the persister). */
  readonly nc: NatsConnection;
  /** Names of the deployment (stream, subjects, durable name). The timeline stream must exist. */
  readonly names: NatsNames;
  /** Where events are written (the store's CassandraTables, so the persister knows what the store wrote). */
  readonly tables: CassandraTables;
  readonly logger?: PersisterLogger;
  /** Groups checked or written at once (default 16). */
  readonly concurrency?: number;
  /** How long JetStream waits for an ack before redelivering, ms (default 5000; set when the consumer is created). */
  readonly ackWaitMs?: number;
  /** Pause before a failed write is redelivered, ms (default 1000). */
  readonly retryDelayMs?: number;
  /**
   * How long after an event was stored the persister looks at it, ms
   * (default 1000, at most a third of ackWaitMs): its writer has normally
   * stored it by then, and the persister only checks. 0 checks at once.
   */
  readonly settleMs?: number;
  /**
   * afterWrite runs for every membership event and rename once it is
   * durable, before the ack (e.g. to invalidate the membership cache,
   * whichever process wrote them); not for messages, which the persister
   * does not even decode when their writer stored them. Its failures are
   * logged and do not redeliver the event.
   */
  readonly afterWrite?: (event: GroupEvent) => Promise<void> | void;
}

/** PersisterStats counts what the persister did since it started. */
export interface PersisterStats {
  /** Events known durable and acked. */
  readonly persisted: number;
  /** Of those, events the persister wrote itself (their writer had not). */
  readonly written: number;
  /** Of those, events another process had already stored (found by reading). */
  readonly alreadyStored: number;
  /** Of those, events this process had written (no Cassandra work). */
  readonly local: number;
  /** Of those, events another message process said it had written (no Cassandra work). */
  readonly peer: number;
  /** Events whose check or write failed (redelivered). */
  readonly failures: number;
  /** Messages that were not events (terminated, never redelivered). */
  readonly undecodable: number;
}

/** Persister is a running persister. */
export interface Persister {
  /** stop ends consumption and waits for in-flight writes (their events are acked or redelivered). Idempotent. */
  stop(): Promise<void>;
  stats(): PersisterStats;
}

/** How long the written-log remembers an event (between one and two windows). */
const WRITTEN_WINDOW_MS = 30_000;

/** Longest pause between two notes of what this process stored, ms. */
const NOTE_INTERVAL_MS = 100;

/** Most seqs waiting for the next note (beyond that, peers check the rest themselves). */
const MAX_NOTE_BACKLOG = 100_000;

/**
 * WrittenLog remembers the stream sequences of the events this process
 * wrote to Cassandra in the last 30-60 s: two generations of sets, the older
 * dropped as a whole.
 */
class WrittenLog {
  private current = new Map<number, boolean>();
  private previous = new Map<number, boolean>();
  private rotatedAt = Date.now();
  /** What was added since the last takeFresh(), while a persister announces it to its peers. */
  private fresh: { seqs: number[]; changes: number[] } | undefined;
  private announcers = 0;

  /** add records the event at `streamSeq`; `change`: a membership event or rename (not a message). */
  add(streamSeq: number, change: boolean): void {
    this.rotate();
    this.current.set(streamSeq, change);
    if (this.fresh && this.fresh.seqs.length < MAX_NOTE_BACKLOG) {
      this.fresh.seqs.push(streamSeq);
      if (change) this.fresh.changes.push(streamSeq);
    }
  }

  /** addAll records a peer's note: `seqs`, of which `changes` are changes. */
  addAll(seqs: readonly number[], changes: readonly number[]): void {
    this.rotate();
    for (const s of seqs) this.current.set(s, false);
    for (const s of changes) this.current.set(s, true);
  }

  /** announce(true) starts collecting what is added for takeFresh; announce(false) undoes one such call. */
  announce(on: boolean): void {
    this.announcers += on ? 1 : -1;
    if (this.announcers > 0) this.fresh ??= { seqs: [], changes: [] };
    else this.fresh = undefined;
  }

  /** takeFresh returns (and forgets) what was added since the last call. */
  takeFresh(): { seqs: number[]; changes: number[] } {
    const out = this.fresh ?? { seqs: [], changes: [] };
    if (this.fresh) this.fresh = { seqs: [], changes: [] };
    return out;
  }

  /** kind tells whether the event at `streamSeq` is recorded, and whether it is a change. */
  kind(streamSeq: number): "message" | "change" | undefined {
    this.rotate();
    const k = this.current.get(streamSeq) ?? this.previous.get(streamSeq);
    return k === undefined ? undefined : k ? "change" : "message";
  }

  private rotate(): void {
    const now = Date.now();
    if (now - this.rotatedAt < WRITTEN_WINDOW_MS) return;
    this.previous = now - this.rotatedAt < 2 * WRITTEN_WINDOW_MS ? this.current : new Map();
    this.current = new Map();
    this.rotatedAt = now;
  }
}

/** The written-log of each CassandraTables (one per store, shared with the persister built on the same tables). */
const writtenLogs = new WeakMap<CassandraTables, WrittenLog>();

function writtenLog(tables: CassandraTables): WrittenLog {
  let log = writtenLogs.get(tables);
  if (!log) {
    log = new WrittenLog();
    writtenLogs.set(tables, log);
  }
  return log;
}

/**
 * noteWritten records that an event (stored at stream sequence `streamSeq`)
 * is durable in Cassandra through `tables` (for writes that do not go
 * through persistEvent, e.g. a group's creation), so this process's
 * persister skips it.
 */
export function noteWritten(tables: CassandraTables, stored: { readonly streamSeq: number; readonly event: GroupEvent }): void {
  writtenLog(tables).add(stored.streamSeq, stored.event.body.type !== "message");
}

/**
 * persistEvent writes one sequenced event to Cassandra idempotently, and
 * records it for this process's persister (which then skips it). A
 * member_* event is written with the counts it carries (Chat-Counts); one
 * without them (not published by the sequencer) gets counts derived from
 * the members partition, which is exact when events are persisted in order.
 */
export async function persistEvent(tables: CassandraTables, stored: SequencedEvent): Promise<void> {
  const e = stored.event;
  if (e.body.type === "message" || e.body.type === "group_renamed") {
    await tables.writeEvent(e);
  } else {
    await tables.writeEvent(e, stored.counts ?? (await deriveCounts(tables, e.groupId, e.body)));
  }
  writtenLog(tables).add(stored.streamSeq, e.body.type !== "message");
}

/** deriveCounts computes the counts after a member_* event from the stored members (O(members)). */
async function deriveCounts(
  tables: CassandraTables,
  groupId: string,
  body: Extract<SequencedEvent["event"]["body"], { type: "member_added" | "member_removed" | "member_role_changed" }>,
): Promise<GroupCounts> {
  const [now, member] = await Promise.all([tables.countMembers(groupId), tables.getMember(groupId, body.member.id)]);
  const wasOwner = member?.role === "owner" ? 1 : 0;
  switch (body.type) {
    case "member_added":
      return member
        ? { memberCount: now.memberCount, ownerCount: now.ownerCount - wasOwner + (body.role === "owner" ? 1 : 0) }
        : { memberCount: now.memberCount + 1, ownerCount: now.ownerCount + (body.role === "owner" ? 1 : 0) };
    case "member_removed":
      return member ? { memberCount: now.memberCount - 1, ownerCount: now.ownerCount - wasOwner } : now;
    case "member_role_changed":
      return member
        ? { memberCount: now.memberCount, ownerCount: now.ownerCount - wasOwner + (body.role === "owner" ? 1 : 0) }
        : now;
  }
}

/**
 * MAX_ACK_PENDING bounds the events handed to the persisters and not acked
 * yet. Events are held for `settleMs` before they are acked, so this must
 * exceed the event rate times settleMs with room to spare.
 */
const MAX_ACK_PENDING = 20_000;

/** PREFETCH is how many events each persister asks for at a time. */
const PREFETCH = 512;

/**
 * ensurePersisterConsumer creates the durable pull consumer of the
 * persisters if it does not exist (explicit acks, from the first retained
 * event, over every group subject), and raises the max_ack_pending of one
 * created before the persister held events. Safe to race.
 */
export async function ensurePersisterConsumer(jsm: JetStreamManager, names: NatsNames, ackWaitMs = 5_000): Promise<void> {
  const stream = names.timelineStream;
  const durable = names.durable("persister");
  try {
    const info = await jsm.consumers.info(stream, durable);
    if ((info.config.max_ack_pending ?? 0) >= 0 && (info.config.max_ack_pending ?? 0) < MAX_ACK_PENDING) {
      await jsm.consumers.update(stream, durable, { max_ack_pending: MAX_ACK_PENDING });
    }
    return;
  } catch (e) {
    if (!(e instanceof JetStreamApiError) || e.code !== JetStreamApiCodes.ConsumerNotFound) throw e;
  }
  try {
    await jsm.consumers.add(stream, {
      durable_name: durable,
      description: "makes sure every timeline event reaches Cassandra (the persisters of all message processes share it)",
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      replay_policy: ReplayPolicy.Instant,
      filter_subject: names.allGroups,
      ack_wait: nanos(ackWaitMs),
      max_ack_pending: MAX_ACK_PENDING,
      max_deliver: -1,
    });
  } catch (e) {
    // Another process created it first.
    await jsm.consumers.info(stream, durable).catch(() => {
      throw e;
    });
  }
}

/**
 * startPersister binds to (creating if needed) the persister consumer and
 * starts writing events. Rejects if the consumer cannot be set up (e.g. the
 * timeline stream does not exist). Once started it keeps going across NATS
 * and Cassandra outages (failed writes are redelivered) until stop().
 */
export async function startPersister(opts: PersisterOptions): Promise<Persister> {
  const jsm = await jetstreamManager(opts.nc);
  await ensurePersisterConsumer(jsm, opts.names, opts.ackWaitMs);
  const p = new RunningPersister(jsm, opts);
  p.start();
  return p;
}

const NOTE_ENCODER = new TextEncoder();
const NOTE_DECODER = new TextDecoder();

/**
 * readNote parses a peer's note (`{"from": id, "seqs": [stream seqs], "changes": [those of them that are
 * changes]}`); undefined if it is not one.
 */
function readNote(data: Uint8Array): { from: string; seqs: number[]; changes: number[] } | undefined {
  let v: unknown;
  try {
    v = JSON.parse(NOTE_DECODER.decode(data));
  } catch {
    return undefined;
  }
  const note = v as { from?: unknown; seqs?: unknown; changes?: unknown };
  if (typeof note?.from !== "string" || !Array.isArray(note.seqs) || !Array.isArray(note.changes)) return undefined;
  const valid = (s: unknown): s is number => Number.isSafeInteger(s) && (s as number) > 0;
  return { from: note.from, seqs: note.seqs.filter(valid), changes: note.changes.filter(valid) };
}

/** Held is an event the persister holds until it is due. */
interface Held {
  readonly m: JsMsg;
  /** When to look at it (ms since the epoch). */
  readonly due: number;
}

/** Known is a held event that is due and that this process (local) or another (peer) stored. */
interface Known {
  readonly m: JsMsg;
  readonly by: "local" | "peer";
  readonly kind: "message" | "change";
}

/** Due is a held event that is due and was not written by this process: decoded. */
interface Due {
  readonly m: JsMsg;
  readonly stored: SequencedEvent;
}

class RunningPersister implements Persister {
  private readonly counters = { persisted: 0, written: 0, alreadyStored: 0, local: 0, peer: 0, failures: 0, undecodable: 0 };
  private readonly concurrency: number;
  private readonly retryDelayMs: number;
  private readonly settleMs: number;
  /** Smallest pause between two checks (so events are checked in batches, one read per group and bucket). */
  private readonly tickMs: number;
  private readonly log: WrittenLog;
  /** What the other message processes said they stored (their notes). */
  private readonly peers = new WrittenLog();
  /** Tells this persister's notes from its peers'. */
  private readonly id = randomUUID();
  private notes: NatsSubscription | undefined;
  private noteTimer: NodeJS.Timeout | undefined;
  private held: Held[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private lastFlush = 0;
  private messages: ConsumerMessages | undefined;
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  private stopping: Promise<void> | undefined;

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly opts: PersisterOptions,
  ) {
    this.concurrency = Math.max(1, opts.concurrency ?? 16);
    this.retryDelayMs = opts.retryDelayMs ?? 1000;
    this.settleMs = Math.max(0, Math.min(opts.settleMs ?? 1000, (opts.ackWaitMs ?? 5000) / 3));
    this.tickMs = Math.min(250, this.settleMs / 4);
    this.log = writtenLog(opts.tables);
  }

  start(): void {
    this.startNotes();
    this.loop = this.run();
  }

  /**
   * startNotes tells the other message processes, every NOTE_INTERVAL_MS
   * (at most a quarter of settleMs), which events this one stored (core
   * NATS: a note that is lost only costs a peer a check), and listens to
   * theirs. The persister holding an event another process wrote then acks
   * it without asking Cassandra.
   */
  private startNotes(): void {
    const { nc, names } = this.opts;
    this.log.announce(true);
    this.notes = nc.subscribe(names.persisted, {
      callback: (err, m) => {
        if (err) return;
        const note = readNote(m.data);
        if (note && note.from !== this.id) this.peers.addAll(note.seqs, note.changes);
      },
    });
    this.noteTimer = setInterval(() => {
      const { seqs, changes } = this.log.takeFresh();
      if (seqs.length === 0 || nc.isClosed()) return;
      try {
        nc.publish(names.persisted, NOTE_ENCODER.encode(JSON.stringify({ from: this.id, seqs, changes })));
      } catch {
        // Closed meanwhile: peers check those events themselves.
      }
    }, Math.max(10, Math.min(NOTE_INTERVAL_MS, this.settleMs / 4)));
    this.noteTimer.unref();
  }

  private stopNotes(): void {
    clearInterval(this.noteTimer);
    this.noteTimer = undefined;
    try {
      this.notes?.unsubscribe();
    } catch {
      // The connection is closed already.
    }
    this.notes = undefined;
    this.log.announce(false);
  }

  stats(): PersisterStats {
    return { ...this.counters };
  }

  stop(): Promise<void> {
    if (!this.stopping) {
      this.stopped = true;
      this.stopping = (async () => {
        await this.messages?.close().catch(() => {});
        await this.loop;
        clearTimeout(this.timer);
        this.timer = undefined;
        await this.flushing;
        this.stopNotes();
        // Not looked at yet: hand them back at once rather than after ack_wait.
        for (const h of this.held) h.m.nak();
        this.held = [];
      })();
    }
    return this.stopping;
  }

  private async run(): Promise<void> {
    const { names, logger } = this.opts;
    while (!this.stopped) {
      try {
        await ensurePersisterConsumer(this.jsm, names, this.opts.ackWaitMs);
        const consumer = await this.jsm.jetstream().consumers.get(names.timelineStream, names.durable("persister"));
        if (this.stopped) return;
        // What a dying persister held (fetched, not acked) is redelivered after ack_wait (5 s).
        this.messages = await consumer.consume({ max_messages: PREFETCH });
        if (this.stopped) {
          await this.messages.close().catch(() => {});
          return;
        }
        for await (const m of this.messages) {
          if (this.stopped) break;
          this.take(m);
        }
      } catch (err) {
        if (!this.stopped) logger?.error({ err, stream: names.timelineStream }, "persister consumption failed; restarting");
      }
      if (!this.stopped) await sleep(1000);
    }
  }

  /**
   * take holds one delivered event until it is due (settleMs after it was
   * stored, by the stream's clock). Nothing is decoded yet: most events
   * turn out to be this process's own writes.
   */
  private take(m: JsMsg): void {
    const now = Date.now();
    const storedAt = m.info.timestampNanos / 1e6;
    // An old event (a backlog, a redelivery) is due at once; clocks that disagree never hold one past settleMs.
    const due = now + Math.min(this.settleMs, Math.max(0, storedAt + this.settleMs - now));
    this.held.push({ m, due });
    this.schedule();
  }

  /**
   * ackLocal acks events this process wrote: messages at once, in one loop
   * (so the client writes their acks to the socket together), then changes
   * after afterWrite (which needs them decoded).
   */
  private async ackLocal(msgs: readonly Known[]): Promise<void> {
    const changes: Known[] = [];
    for (const h of msgs) {
      if (h.kind === "change" && this.opts.afterWrite) {
        changes.push(h);
        continue;
      }
      h.m.ack();
      this.counters[h.by]++;
      this.counters.persisted++;
    }
    for (const h of changes) {
      const stored = this.decode(h.m);
      if (!stored) continue;
      await this.afterWrite(stored);
      h.m.ack();
      this.counters[h.by]++;
      this.counters.persisted++;
    }
  }

  /** decode parses a delivered event; an undecodable one is terminated (never redelivered) and undefined returned. */
  private decode(m: JsMsg): SequencedEvent | undefined {
    const stored = parseSequenced(this.opts.names, m.subject, m.seq, m.headers, m.data);
    if (stored) return stored;
    this.counters.undecodable++;
    this.opts.logger?.warn({ subject: m.subject, streamSeq: m.seq }, "persister dropped a message that is not a group event");
    m.term();
    return undefined;
  }

  private async afterWrite(stored: SequencedEvent): Promise<void> {
    if (!this.opts.afterWrite || stored.event.body.type === "message") return;
    try {
      await this.opts.afterWrite(stored.event);
    } catch (err) {
      this.opts.logger?.warn({ err, groupId: stored.event.groupId, seq: stored.groupSeq }, "persister afterWrite hook failed");
    }
  }

  private schedule(): void {
    if (this.timer || this.flushing || this.held.length === 0 || this.stopped) return;
    const now = Date.now();
    let first = Number.POSITIVE_INFINITY;
    for (const h of this.held) if (h.due < first) first = h.due;
    const wait = Math.max(first - now, this.lastFlush + this.tickMs - now, 0);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushing = this.flush().finally(() => {
        this.flushing = undefined;
        this.schedule();
      });
    }, wait);
  }

  /**
   * flush looks at every held event that is due: this process's own writes
   * are acked at once; the others are decoded and settled group by group.
   */
  private async flush(): Promise<void> {
    const now = Date.now();
    this.lastFlush = now;
    const byGroup = new Map<string, Due[]>();
    const keep: Held[] = [];
    const local: Known[] = [];
    for (const h of this.held) {
      let kind: Known["kind"] | undefined;
      if (h.due > now && !this.stopped) keep.push(h);
      else if ((kind = this.log.kind(h.m.seq))) local.push({ m: h.m, by: "local", kind });
      else if ((kind = this.peers.kind(h.m.seq))) local.push({ m: h.m, by: "peer", kind });
      else {
        const stored = this.decode(h.m);
        if (!stored) continue;
        const g = stored.event.groupId;
        const list = byGroup.get(g);
        if (list) list.push({ m: h.m, stored });
        else byGroup.set(g, [{ m: h.m, stored }]);
      }
    }
    this.held = keep;
    await this.ackLocal(local);
    const groups = [...byGroup.entries()];
    let next = 0;
    const worker = async () => {
      while (next < groups.length) {
        const [groupId, list] = groups[next++] as [string, Due[]];
        await this.settleGroup(groupId, list);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, groups.length) }, worker));
  }

  /** settleGroup makes a group's due events durable (see the module comment), then acks them; naks them on failure. */
  private async settleGroup(groupId: string, list: Due[]): Promise<void> {
    list.sort((a, b) => a.stored.groupSeq - b.stored.groupSeq);
    try {
      await this.ensureStored(groupId, list);
    } catch (err) {
      this.counters.failures += list.length;
      this.opts.logger?.error(
        { err, groupId, seqs: `${list[0]?.stored.groupSeq}-${list.at(-1)?.stored.groupSeq}` },
        "persister could not write events; they will be redelivered",
      );
      for (const h of list) h.m.nak(this.retryDelayMs);
      return;
    }
    for (const h of list) {
      await this.afterWrite(h.stored);
      h.m.ack();
      this.counters.persisted++;
    }
  }

  /** ensureStored makes a group's events (none of them written by this process) durable: see the module comment. */
  private async ensureStored(groupId: string, list: readonly Due[]): Promise<void> {
    const tables = this.opts.tables;
    // Changes are rare and decide later changes' snapshots: written again, in seq order, with their counts.
    for (const h of list) {
      if (h.stored.event.body.type === "message") continue;
      await persistEvent(tables, h.stored);
      this.counters.written++;
    }
    const messages = list.filter((h) => h.stored.event.body.type === "message");
    if (messages.length === 0) return;
    const byBucket = new Map<number, Due[]>();
    for (const h of messages) {
      const b = bucketOf(h.stored.event.at);
      const l = byBucket.get(b);
      if (l) l.push(h);
      else byBucket.set(b, [h]);
    }
    await Promise.all(
      [...byBucket].map(async ([bucket, hs]) => {
        const seqs = hs.map((h) => h.stored.groupSeq);
        const present = await tables.storedSeqs(groupId, bucket, Math.min(...seqs), Math.max(...seqs));
        const found = hs.filter((h) => present.has(h.stored.groupSeq)).map((h) => h.stored.groupSeq);
        const missing = hs.filter((h) => !present.has(h.stored.groupSeq));
        await Promise.all(missing.map((h) => persistEvent(tables, h.stored)));
        this.counters.written += missing.length;
        this.counters.alreadyStored += found.length;
        // A writer that died half-way may have left the bucket index or head_seq behind its event rows.
        if (found.length > 0) await tables.repairIndex(groupId, bucket, Math.min(...found), Math.max(...found));
      }),
    );
  }
}
