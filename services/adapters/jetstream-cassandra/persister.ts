/**
 * The persister: the one writer of messages to Cassandra, a durable
 * JetStream consumer on the timeline stream (CQRS: the stream is the log
 * that acknowledges sends; Cassandra is the query side for 30-day history;
 * docs/production.md, "The write path").
 *
 * A send is acknowledged once the timeline stream stored its event (on a
 * quorum of its replicas); nothing on the send path writes Cassandra. Every
 * message process runs a persister; they all bind to one durable pull
 * consumer (`NatsNames.durable("persister")`), so JetStream hands each event
 * to one of them (a queue group), and redelivers it if that process dies
 * before acking. The persister takes what it was handed within `lingerMs`
 * (200 ms), and per group writes:
 * - messages in unlogged batches per partition (EventTables.writeMessages:
 *   event rows, the bucket index and head_seq), so each
 *   message is written to Cassandra once;
 * - membership events and renames (rare) in seq order with the counts they
 *   carry (Chat-Counts). Their writer (the group service) has written them
 *   already, with the membership rows the next change decides on; writing
 *   them again repairs a writer that died between the stream and Cassandra.
 * Then it acks them. A failed write is redelivered after a pause (nak), so a
 * Cassandra outage only delays history: the stream holds the events until
 * the persister catches up (readers merge the stream's not-yet-persisted
 * tail meanwhile: CassandraStore). Writes are idempotent by primary key and
 * seq-stamped (CassandraTables), so replays, redeliveries and out-of-order
 * batches are harmless.
 */
import type { GroupEvent } from "../../core/model.js";
import { setTimeout as sleep } from "node:timers/promises";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import type { ConsumerMessages, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import type { NatsNames } from "./subjects.js";
import { parseSequenced } from "./jetstream-sequencer.js";
import type { SequencedEvent } from "./jetstream-sequencer.js";
import { ensurePersisterConsumer } from "./jetstream-streams.js";
import type { CassandraTables } from "./cassandra-tables.js";
import type { GroupCounts, GroupTables } from "./group-tables.js";

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
  /** Where events are written. */
  readonly tables: CassandraTables;
  readonly logger?: PersisterLogger;
  /** Groups written at once (default 16). */
  readonly concurrency?: number;
  /** How long JetStream waits for an ack before redelivering, ms (default 5000; set when the consumer is created). */
  readonly ackWaitMs?: number;
  /**
   * How long the first taken event waits for more before they are written,
   * ms (default 200): a group's messages of that window go out in one batch
   * per partition, instead of one batch each. Reads do not wait for it (they
   * merge the stream's not-yet-persisted tail); it only delays Cassandra.
   */
  readonly lingerMs?: number;
  /** Pause before a failed write is redelivered, ms (default 1000). */
  readonly retryDelayMs?: number;
  /**
   * afterWrite runs for every membership event and rename once it is
   * durable, before the ack (e.g. to invalidate the membership cache,
   * whichever process wrote them); not for messages. Its failures are
   * logged and do not redeliver the event.
   */
  readonly afterWrite?: (event: GroupEvent) => Promise<void> | void;
}

/** PersisterStats counts what the persister did since it started. */
export interface PersisterStats {
  /** Events written to Cassandra and acked. */
  readonly persisted: number;
  /** Batches of one group's events written (each is one or more Cassandra requests). */
  readonly batches: number;
  /** Events whose write failed (redelivered). */
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

/**
 * persistEvent writes one sequenced event to Cassandra idempotently. A
 * member_* event is written with the counts it carries (Chat-Counts); one
 * without them (not published by the sequencer) gets counts derived from
 * the members partition, which is exact when events are persisted in order.
 */
export async function persistEvent(tables: CassandraTables, stored: SequencedEvent): Promise<void> {
  const e = stored.event;
  if (e.body.type === "message") {
    await tables.events.writeMessage(e);
  } else if (e.body.type === "group_renamed") {
    await tables.groups.writeChange(e);
  } else {
    await tables.groups.writeChange(e, stored.counts ?? (await deriveCounts(tables.groups, e.groupId, e.body)));
  }
}

/** deriveCounts computes the counts after a member_* event from the stored members (O(members)). */
async function deriveCounts(
  tables: GroupTables,
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

/** PREFETCH is how many events each persister asks for at a time. */
const PREFETCH = 512;

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

/** FLUSH_AT is how many taken events start a write at once (fewer wait up to lingerMs for more). */
const FLUSH_AT = 2_048;

/** DEFAULT_LINGER_MS is how long taken events wait for more by default (see PersisterOptions.lingerMs). */
const DEFAULT_LINGER_MS = 200;

class RunningPersister implements Persister {
  private readonly counters = { persisted: 0, batches: 0, failures: 0, undecodable: 0 };
  private readonly concurrency: number;
  private readonly retryDelayMs: number;
  private taken: JsMsg[] = [];
  /** Events handed to this persister and not acked, nak'ed or terminated yet (taken or being written). */
  private readonly held = new Set<JsMsg>();
  private keepAlive: NodeJS.Timeout | undefined;
  private scheduled = false;
  private flushing: Promise<void> | undefined;
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
  }

  start(): void {
    this.loop = this.run();
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
        while (this.flushing) await this.flushing;
        // Not written yet: hand them back at once rather than after ack_wait.
        for (const m of this.taken) {
          this.held.delete(m);
          m.nak();
        }
        this.taken = [];
        clearInterval(this.keepAlive);
        this.keepAlive = undefined;
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
          if (this.stopped) {
            m.nak();
            continue;
          }
          this.taken.push(m);
          this.hold(m);
          this.schedule();
        }
      } catch (err) {
        if (!this.stopped) logger?.error({ err, stream: names.timelineStream }, "persister consumption failed; restarting");
      }
      if (!this.stopped) await sleep(1000);
    }
  }

  /** schedule starts a write of what was taken: at once past FLUSH_AT, else lingerMs after the first; one at a time. */
  private schedule(): void {
    if (this.flushing || this.taken.length === 0) return;
    if (this.taken.length >= FLUSH_AT) {
      this.startFlush();
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    const linger = this.opts.lingerMs ?? DEFAULT_LINGER_MS;
    const go = () => {
      this.scheduled = false;
      if (!this.flushing) this.startFlush();
    };
    if (linger > 0) setTimeout(go, linger);
    else setImmediate(go);
  }

  private startFlush(): void {
    const batch = this.taken;
    this.taken = [];
    if (batch.length === 0) return;
    this.flushing = this.flush(batch).finally(() => {
      this.flushing = undefined;
      this.schedule();
    });
  }

  /**
   * hold keeps a delivered event until it is settled. While any is held,
   * JetStream is told every ackWait/2 that they are in progress (a write that
   * hangs in a Cassandra outage, and the events waiting behind it), so it does
   * not hand them to another persister to write again meanwhile.
   */
  private hold(m: JsMsg): void {
    this.held.add(m);
    if (this.keepAlive) return;
    this.keepAlive = setInterval(() => {
      for (const h of this.held) h.working();
      if (this.held.size === 0) {
        clearInterval(this.keepAlive);
        this.keepAlive = undefined;
      }
    }, Math.max(100, (this.opts.ackWaitMs ?? 5000) / 2));
    this.keepAlive.unref();
  }

  /** settle acks, naks (after retryDelayMs) or terminates a held event and stops holding it. */
  private settle(m: JsMsg, how: "ack" | "nak" | "term"): void {
    this.held.delete(m);
    if (how === "ack") m.ack();
    else if (how === "nak") m.nak(this.retryDelayMs);
    else m.term();
  }

  /** decode parses a delivered event; an undecodable one is terminated (never redelivered) and undefined returned. */
  private decode(m: JsMsg): SequencedEvent | undefined {
    const stored = parseSequenced(this.opts.names, m.subject, m.seq, m.headers, m.data);
    if (stored) return stored;
    this.counters.undecodable++;
    this.opts.logger?.warn({ subject: m.subject, streamSeq: m.seq }, "persister dropped a message that is not a group event");
    this.settle(m, "term");
    return undefined;
  }

  /** flush writes the taken events group by group (at most `concurrency` groups at once). */
  private async flush(batch: readonly JsMsg[]): Promise<void> {
    const byGroup = new Map<string, { m: JsMsg; stored: SequencedEvent }[]>();
    for (const m of batch) {
      const stored = this.decode(m);
      if (!stored) continue;
      const g = stored.event.groupId;
      const list = byGroup.get(g);
      if (list) list.push({ m, stored });
      else byGroup.set(g, [{ m, stored }]);
    }
    const groups = [...byGroup.entries()];
    let next = 0;
    const worker = async () => {
      while (next < groups.length) {
        const [groupId, list] = groups[next++] as [string, { m: JsMsg; stored: SequencedEvent }[]];
        await this.writeGroup(groupId, list);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, groups.length) }, worker));
  }

  /** writeGroup writes one group's events (changes in seq order, then the messages batched), then acks them; naks them on failure. */
  private async writeGroup(groupId: string, list: { m: JsMsg; stored: SequencedEvent }[]): Promise<void> {
    list.sort((a, b) => a.stored.groupSeq - b.stored.groupSeq);
    const tables = this.opts.tables;
    try {
      const messages: GroupEvent[] = [];
      for (const h of list) {
        if (h.stored.event.body.type === "message") messages.push(h.stored.event);
        else await persistEvent(tables, h.stored);
      }
      if (messages.length > 0) await tables.events.writeMessages(groupId, messages);
    } catch (err) {
      this.counters.failures += list.length;
      this.opts.logger?.error(
        { err, groupId, seqs: `${list[0]?.stored.groupSeq}-${list.at(-1)?.stored.groupSeq}` },
        "persister could not write events; they will be redelivered",
      );
      for (const h of list) this.settle(h.m, "nak");
      return;
    }
    this.counters.batches++;
    for (const h of list) {
      await this.afterWrite(h.stored);
      this.settle(h.m, "ack");
      this.counters.persisted++;
    }
  }

  private async afterWrite(stored: SequencedEvent): Promise<void> {
    if (!this.opts.afterWrite || stored.event.body.type === "message") return;
    try {
      await this.opts.afterWrite(stored.event);
    } catch (err) {
      this.opts.logger?.warn({ err, groupId: stored.event.groupId, seq: stored.groupSeq }, "persister afterWrite hook failed");
    }
  }
}
