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
 * before acking. Every `lingerMs` (200 ms) the persister pulls everything
 * the consumer has pending, at once (PendingPuller), and per group writes:
 * - messages in unlogged batches per partition (EventTables.writeMessages:
 *   event rows, the bucket index and head_seq), so each
 *   message is written to Cassandra once;
 * - membership events and renames (rare) in seq order with the counts they
 *   carry (Chat-Counts). Their writer (the group service) has written them
 *   already, with the membership rows the next change decides on; writing
 *   them again repairs a writer that died between the stream and Cassandra.
 * Then it acks the pull's events, all in one turn (a full pull is followed by
 * the next at once). A failed write is redelivered after a pause (nak), so a
 * Cassandra outage only delays history: the stream holds the events until
 * the persister catches up (readers merge the stream's not-yet-persisted
 * tail meanwhile: CassandraStore). Writes are idempotent by primary key and
 * seq-stamped (CassandraTables), so replays, redeliveries and out-of-order
 * batches are harmless.
 */
import type { GroupEvent } from "../../core/model.js";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsNames } from "./subjects.js";
import { parseSequenced } from "./jetstream-sequencer.js";
import type { SequencedEvent } from "./jetstream-sequencer.js";
import { ensurePersisterConsumer } from "./jetstream-streams.js";
import { PendingPuller } from "./jetstream-pull.js";
import type { PulledMsg } from "./jetstream-pull.js";
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
   * The pause between pulls of the pending events, ms (default 200): a
   * group's messages of that window go out in one batch per partition,
   * instead of one batch each, and the consumer's replicated updates in few
   * raft rounds. Reads do not wait for it (they merge the stream's
   * not-yet-persisted tail); it only delays Cassandra.
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

/** FLUSH_AT is the most events one pull takes (a full pull is followed by the next at once, not after lingerMs). */
const FLUSH_AT = 2_048;

/** DEFAULT_LINGER_MS is the pause between pulls by default (see PersisterOptions.lingerMs). */
const DEFAULT_LINGER_MS = 200;

/** PULL_TIMEOUT_MS bounds the wait for JetStream's answer to a pull; past it the consumer is bound again. */
const PULL_TIMEOUT_MS = 5_000;

/**
 * RunningPersister pulls what the consumer has pending every lingerMs, all
 * of it at once (PendingPuller, `no_wait`), writes it, then settles every
 * event of the pull in one turn: on an R3 consumer each hand-over and each
 * ack is a replicated update, and updates that reach the consumer's leader
 * together share a raft round. Several persisters pulling the one durable
 * get disjoint events; an event is acked only after its write, so one that
 * a dying persister held is redelivered (ack_wait) to another.
 */
class RunningPersister implements Persister {
  private readonly counters = { persisted: 0, batches: 0, failures: 0, undecodable: 0 };
  private readonly concurrency: number;
  private readonly retryDelayMs: number;
  private readonly lingerMs: number;
  /** Events handed to this persister and not acked, nak'ed or terminated yet. */
  private readonly held = new Set<PulledMsg>();
  private keepAlive: NodeJS.Timeout | undefined;
  private puller: PendingPuller | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;
  private loop: Promise<void> = Promise.resolve();
  private stopping: Promise<void> | undefined;

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly opts: PersisterOptions,
  ) {
    this.concurrency = Math.max(1, opts.concurrency ?? 16);
    this.retryDelayMs = opts.retryDelayMs ?? 1000;
    this.lingerMs = Math.max(0, opts.lingerMs ?? DEFAULT_LINGER_MS);
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
        this.wake?.();
        // A waiting pull ends now and what it brought is nak'ed (handed back at once); an event of it that
        // arrives after the close reaches nobody and is redelivered after ack_wait.
        this.puller?.close();
        await this.loop;
        clearInterval(this.keepAlive);
        this.keepAlive = undefined;
      })();
    }
    return this.stopping;
  }

  /** pause waits `ms`, or less if stop() is called (not at all once it was). */
  private pause(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
    });
  }

  private async run(): Promise<void> {
    const { names, logger } = this.opts;
    while (!this.stopped) {
      try {
        await ensurePersisterConsumer(this.jsm, names, this.opts.ackWaitMs);
        if (this.stopped) return;
        this.puller ??= new PendingPuller(this.opts.nc, names.timelineStream, names.durable("persister"));
        for (;;) {
          const r = await this.puller.pull(FLUSH_AT, PULL_TIMEOUT_MS);
          if (this.stopped) {
            for (const m of r.msgs) m.nak();
            return;
          }
          if (r.msgs.length > 0) {
            for (const m of r.msgs) this.hold(m);
            await this.flush(r.msgs);
          }
          // No answer (a lost connection, a deleted consumer) or a refusal: bind again after a pause.
          if (!r.ended || (r.status !== undefined && r.status !== 404 && r.status !== 408)) break;
          if (r.msgs.length < FLUSH_AT) await this.pause(this.lingerMs);
          if (this.stopped) return;
        }
      } catch (err) {
        if (!this.stopped) logger?.error({ err, stream: names.timelineStream }, "persister consumption failed; restarting");
      }
      if (!this.stopped) await this.pause(1000);
    }
  }

  /**
   * hold keeps a delivered event until it is settled. While any is held,
   * JetStream is told every ackWait/2 that they are in progress (a write that
   * hangs in a Cassandra outage, and the events waiting behind it), so it does
   * not hand them to another persister to write again meanwhile.
   */
  private hold(m: PulledMsg): void {
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
  private settle(m: PulledMsg, how: "ack" | "nak" | "term"): void {
    this.held.delete(m);
    if (how === "ack") m.ack();
    else if (how === "nak") m.nak(this.retryDelayMs);
    else m.term();
  }

  /** decode parses a delivered event; an undecodable one is terminated (never redelivered) and undefined returned. */
  private decode(m: PulledMsg): SequencedEvent | undefined {
    const stored = parseSequenced(this.opts.names, m.subject, m.seq, m.headers, m.data);
    if (stored) return stored;
    this.counters.undecodable++;
    this.opts.logger?.warn({ subject: m.subject, streamSeq: m.seq }, "persister dropped a message that is not a group event");
    this.settle(m, "term");
    return undefined;
  }

  /**
   * flush writes one pull's events group by group (at most `concurrency`
   * groups at once), then settles them all in one turn: acks for the written
   * ones, naks for the groups whose write failed.
   */
  private async flush(batch: readonly PulledMsg[]): Promise<void> {
    const byGroup = new Map<string, { m: PulledMsg; stored: SequencedEvent }[]>();
    for (const m of batch) {
      const stored = this.decode(m);
      if (!stored) continue;
      const g = stored.event.groupId;
      const list = byGroup.get(g);
      if (list) list.push({ m, stored });
      else byGroup.set(g, [{ m, stored }]);
    }
    const groups = [...byGroup.entries()];
    const settlements: { m: PulledMsg; how: "ack" | "nak" }[] = [];
    let next = 0;
    const worker = async () => {
      while (next < groups.length) {
        const [groupId, list] = groups[next++] as [string, { m: PulledMsg; stored: SequencedEvent }[]];
        await this.writeGroup(groupId, list, settlements);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, groups.length) }, worker));
    for (const { m, how } of settlements) {
      this.settle(m, how);
      if (how === "ack") this.counters.persisted++;
    }
  }

  /**
   * writeGroup writes one group's events (changes in seq order, then the
   * messages batched) and adds their acks to `settlements`, or their naks if
   * the write failed.
   */
  private async writeGroup(
    groupId: string,
    list: { m: PulledMsg; stored: SequencedEvent }[],
    settlements: { m: PulledMsg; how: "ack" | "nak" }[],
  ): Promise<void> {
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
      for (const h of list) settlements.push({ m: h.m, how: "nak" });
      return;
    }
    this.counters.batches++;
    for (const h of list) {
      await this.afterWrite(h.stored);
      settlements.push({ m: h.m, how: "ack" });
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
