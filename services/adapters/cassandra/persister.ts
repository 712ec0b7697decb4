/**
 * The persister: a durable JetStream consumer on the timeline stream that
 * writes every group event to Cassandra (docs/production.md, "Sequencing
 * without LWT on the hot path").
 *
 * The Cassandra store writes each event right after its compare-and-set
 * publish; a process that dies between the two leaves an event in JetStream
 * that Cassandra lacks. Every message process runs a persister; they all
 * bind to one durable pull consumer (`NatsNames.durable("persister")`), so
 * JetStream hands each event to one of them (a queue group), and redelivers
 * it if that process dies before acking. Writes are idempotent by primary
 * key and seq-stamped (CassandraTables), so replays, out-of-order delivery
 * and the store's own write of the same event are all harmless. An event is
 * acked only after its write; a failed write is redelivered after a pause.
 */
import type { GroupEvent } from "../../core/model.js";
import { setTimeout as sleep } from "node:timers/promises";
import { nanos } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, JetStreamApiCodes, JetStreamApiError, ReplayPolicy, jetstreamManager } from "@nats-io/jetstream";
import type { ConsumerMessages, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import type { NatsNames } from "../nats/subjects.js";
import { parseSequenced } from "../nats/jetstream-sequencer.js";
import type { SequencedEvent } from "../nats/jetstream-sequencer.js";
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
  /** Where events are written. */
  readonly tables: CassandraTables;
  readonly logger?: PersisterLogger;
  /** Events written at once (default 16). */
  readonly concurrency?: number;
  /** How long JetStream waits for an ack before redelivering, ms (default 30000). */
  readonly ackWaitMs?: number;
  /** Pause before a failed write is redelivered, ms (default 1000). */
  readonly retryDelayMs?: number;
  /**
   * afterWrite runs for every event once it is durable, before the ack (e.g.
   * to invalidate the membership cache on member events, whichever process
   * wrote them). Its failures are logged and do not redeliver the event.
   */
  readonly afterWrite?: (event: GroupEvent) => Promise<void> | void;
}

/** PersisterStats counts what the persister did since it started. */
export interface PersisterStats {
  /** Events written and acked. */
  readonly persisted: number;
  /** Writes that failed (the event is redelivered). */
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
  if (e.body.type === "message" || e.body.type === "group_renamed") {
    await tables.writeEvent(e);
    return;
  }
  await tables.writeEvent(e, stored.counts ?? (await deriveCounts(tables, e.groupId, e.body)));
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
 * ensurePersisterConsumer creates the durable pull consumer of the
 * persisters if it does not exist (explicit acks, from the first retained
 * event, over every group subject). Safe to race.
 */
export async function ensurePersisterConsumer(jsm: JetStreamManager, names: NatsNames, ackWaitMs = 5_000): Promise<void> {
  const stream = names.timelineStream;
  const durable = names.durable("persister");
  try {
    await jsm.consumers.info(stream, durable);
    return;
  } catch (e) {
    if (!(e instanceof JetStreamApiError) || e.code !== JetStreamApiCodes.ConsumerNotFound) throw e;
  }
  try {
    await jsm.consumers.add(stream, {
      durable_name: durable,
      description: "writes every timeline event to Cassandra (the persisters of all message processes share it)",
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      replay_policy: ReplayPolicy.Instant,
      filter_subject: names.allGroups,
      ack_wait: nanos(ackWaitMs),
      max_ack_pending: 1000,
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

class RunningPersister implements Persister {
  private readonly counters = { persisted: 0, failures: 0, undecodable: 0 };
  private readonly inFlight = new Set<Promise<void>>();
  private readonly concurrency: number;
  private readonly retryDelayMs: number;
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
        await Promise.allSettled([...this.inFlight]);
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
        // A small prefetch: what a dying persister held is redelivered after ack_wait (5 s).
        this.messages = await consumer.consume({ max_messages: this.concurrency });
        if (this.stopped) {
          await this.messages.close().catch(() => {});
          return;
        }
        for await (const m of this.messages) {
          while (this.inFlight.size >= this.concurrency) await Promise.race(this.inFlight);
          const p = this.handle(m).finally(() => this.inFlight.delete(p));
          this.inFlight.add(p);
        }
      } catch (err) {
        if (!this.stopped) logger?.error({ err, stream: names.timelineStream }, "persister consumption failed; restarting");
      }
      if (!this.stopped) await sleep(1000);
    }
  }

  private async handle(m: JsMsg): Promise<void> {
    const stored = parseSequenced(this.opts.names, m.subject, m.seq, m.headers, m.data);
    if (!stored) {
      this.counters.undecodable++;
      this.opts.logger?.warn({ subject: m.subject, streamSeq: m.seq }, "persister dropped a message that is not a group event");
      m.term();
      return;
    }
    try {
      await persistEvent(this.opts.tables, stored);
      try {
        await this.opts.afterWrite?.(stored.event);
      } catch (err) {
        this.opts.logger?.warn({ err, groupId: stored.event.groupId, seq: stored.groupSeq }, "persister afterWrite hook failed");
      }
      m.ack();
      this.counters.persisted++;
    } catch (err) {
      this.counters.failures++;
      this.opts.logger?.error(
        { err, groupId: stored.event.groupId, seq: stored.groupSeq },
        "persister could not write an event; it will be redelivered",
      );
      m.nak(this.retryDelayMs);
    }
  }
}
