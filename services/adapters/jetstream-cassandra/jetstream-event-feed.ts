/**
 * JetStreamEventFeed: the production EventFeed, a durable pull consumer per
 * follower name on the timeline stream (`feed-<name>`, declared in
 * jetstream-streams.ts: ensureFeedConsumer).
 *
 * Every durable event is stored on its slot `<prefix>.group.<g>.<seq>` of
 * the timeline stream before anyone learns of it (JetStreamSequencer), so a
 * consumer over `<prefix>.group.>` sees each one. The consumer is created
 * with DeliverPolicy.New by the name's first follow call (a new name gets
 * only what is appended after it) and keeps the name's ack state on the
 * servers (replicated like the stream), so a follower that died or stopped
 * leaves its unacknowledged events there for the others or the next one.
 * Instances following one name, in any number of processes, pull from the
 * same consumer: JetStream hands each event to one of them and redelivers it
 * after a nak or ack_wait.
 *
 * Each instance pulls only what it has room for: it never has more than
 * `maxPending` events asked for or in its handler (fetches of the free room;
 * a consume() would ask for more as soon as events arrive, however long the
 * handlers take). An event is acked when its handler resolves (even if
 * ack_wait passed meanwhile) and nak'ed with `retryDelayMs` when it rejects;
 * one not done within ack_wait is redelivered by JetStream. A message that
 * is not a group event is terminated (never redelivered) and logged. Like
 * the persister, an instance keeps going across NATS outages: a failed or
 * heartbeat-less fetch is retried after a pause, binding to the consumer
 * again (recreating it if it was deleted).
 *
 * Stopping keeps the stopped instance's pulls open until they end (at most
 * FETCH_EXPIRES_MS) and nak's at once whatever they still bring. A pull
 * request cannot be withdrawn, and nats-server 2.9.10 mishandles a
 * redelivery that meets a pull request nobody listens to any more: the
 * redelivered event is lost until its ack_wait passes, and the consumer
 * hands out again, as new, an event after it that was already acked
 * (reproduced: a fetch stopped with room left, then a nak). An instance
 * that dies with pulls open can still cause that (for up to
 * FETCH_EXPIRES_MS): one event late by ack_wait, one acked event twice,
 * which at-least-once delivery allows.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import type { ConsumerMessages, JetStreamManager, JsMsg, Consumer } from "@nats-io/jetstream";
import { ChatError } from "../../core/errors.js";
import type { GroupEvent } from "../../core/model.js";
import type { EventFeed, Subscription } from "../../core/ports.js";
import { parseSequenced } from "./jetstream-sequencer.js";
import { ensureFeedConsumer } from "./jetstream-streams.js";
import type { NatsNames } from "./subjects.js";

/** FeedLogger is the part of a pino logger the feed uses. */
export interface FeedLogger {
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

/** JetStreamEventFeedOptions configures createJetStreamEventFeed. */
export interface JetStreamEventFeedOptions {
  /** An open NATS connection (not closed by the feed; e.g. the store's). */
  readonly nc: NatsConnection;
  /** Names of the deployment (stream, subjects, consumer names). The timeline stream must exist. */
  readonly names: NatsNames;
  readonly logger?: FeedLogger;
  /** Pause before an event whose handler rejected is redelivered, ms (default 1000). */
  readonly retryDelayMs?: number;
}

/**
 * How long one pull waits for events, ms: an idle instance asks again this
 * often, a dead connection shows within about this (the idle heartbeat is
 * half of it), and a stopped instance's pulls end within it.
 */
const FETCH_EXPIRES_MS = 5_000;
/** Pause after a failed fetch or bind before the next, ms. */
const ERROR_PAUSE_MS = 1000;
/** A fetch that ends empty sooner than this (not by expiring) counts as failed, so a refusing server is not asked in a tight loop. */
const EARLY_END_MS = FETCH_EXPIRES_MS / 2;

/**
 * JetStreamEventFeed implements EventFeed on the timeline stream (see the
 * module comment). Beyond the port: an instance's events come in stream
 * order apart from redeliveries; the last follow call of a name sets the
 * consumer's ack_wait for all its instances.
 */
export class JetStreamEventFeed implements EventFeed {
  private readonly followers = new Set<FeedFollower>();
  private closed = false;

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly opts: JetStreamEventFeedOptions,
  ) {}

  async follow(
    name: string,
    handler: (event: GroupEvent) => Promise<void>,
    opts: { readonly maxPending: number; readonly ackWaitMs: number },
  ): Promise<Subscription> {
    if (this.closed) throw new ChatError("FailedPrecondition", "the event feed is closed");
    const durable = this.opts.names.feed(name);
    if (!Number.isSafeInteger(opts.maxPending) || opts.maxPending < 1) {
      throw new ChatError("InvalidArgument", `maxPending must be a positive integer, got ${opts.maxPending}`);
    }
    if (!Number.isFinite(opts.ackWaitMs) || opts.ackWaitMs < 1) {
      throw new ChatError("InvalidArgument", `ackWaitMs must be at least 1, got ${opts.ackWaitMs}`);
    }
    await ensureFeedConsumer(this.jsm, this.opts.names, name, opts.ackWaitMs);
    const consumer = await this.jsm.jetstream().consumers.get(this.opts.names.timelineStream, durable);
    if (this.closed) throw new ChatError("FailedPrecondition", "the event feed is closed");
    const follower = new FeedFollower(this.jsm, this.opts, name, durable, handler, opts, consumer);
    this.followers.add(follower);
    follower.start();
    return {
      unsubscribe: () => {
        follower.stop();
        this.followers.delete(follower);
      },
    };
  }

  /**
   * close stops every follower (their events in flight are given back),
   * waits for their pulls to end (at most FETCH_EXPIRES_MS, see the module
   * comment) and flushes their acks; the connection stays open. Idempotent.
   */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.followers];
    this.followers.clear();
    for (const f of all) f.stop();
    await Promise.all(all.map((f) => f.done()));
    if (!this.opts.nc.isClosed()) await this.opts.nc.flush().catch(() => {});
  }
}

/** FeedFollower is one follow call: a pull loop on the name's consumer. */
class FeedFollower {
  /** Handler calls not settled yet. */
  private inFlight = 0;
  /** Events asked for by running fetches and not received yet. */
  private outstanding = 0;
  /** Events in a handler, until acked, nak'ed or given back. */
  private readonly held = new Set<JsMsg>();
  /** Running drains of fetches (they outlive stop() until the pull ends). */
  private readonly drains = new Set<Promise<void>>();
  private stopped = false;
  private pauseUntil = 0;
  private wakeUp: (() => void) | undefined;
  private loop: Promise<void> = Promise.resolve();
  private readonly retryDelayMs: number;

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly opts: JetStreamEventFeedOptions,
    private readonly name: string,
    private readonly durable: string,
    private readonly handler: (event: GroupEvent) => Promise<void>,
    private readonly limits: { readonly maxPending: number; readonly ackWaitMs: number },
    private consumer: Consumer | undefined,
  ) {
    this.retryDelayMs = opts.retryDelayMs ?? 1000;
  }

  start(): void {
    this.loop = this.run();
  }

  /** done resolves when the pull loop and every pull of a stopped follower have ended. */
  async done(): Promise<void> {
    await this.loop;
    while (this.drains.size > 0) await Promise.all([...this.drains]);
  }

  /**
   * stop: nothing more is handed to the handler; what it holds is nak'ed at
   * once (for the name's other instances), and so is what its open pulls
   * still bring until they end (see the module comment for why they are not
   * cut short).
   */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const m of this.held) m.nak();
    this.held.clear();
    this.wake();
  }

  private wake(): void {
    const w = this.wakeUp;
    this.wakeUp = undefined;
    w?.();
  }

  private async run(): Promise<void> {
    const { names, logger } = this.opts;
    const { maxPending } = this.limits;
    // Ask again once half the room is free (or all of it is, when nothing is asked for).
    const threshold = Math.ceil(maxPending / 2);
    while (!this.stopped) {
      const wait = this.pauseUntil - Date.now();
      if (wait > 0) {
        await Promise.race([sleep(wait), new Promise<void>((resolve) => (this.wakeUp = resolve))]);
        continue;
      }
      const free = maxPending - this.inFlight - this.outstanding;
      if (free <= 0 || (this.outstanding > 0 && free < threshold)) {
        await new Promise<void>((resolve) => (this.wakeUp = resolve));
        continue;
      }
      try {
        if (!this.consumer) {
          await ensureFeedConsumer(this.jsm, names, this.name, this.limits.ackWaitMs);
          this.consumer = await this.jsm.jetstream().consumers.get(names.timelineStream, this.durable);
        }
        if (this.stopped) return;
        const messages = await this.consumer.fetch({ max_messages: free, expires: FETCH_EXPIRES_MS });
        this.outstanding += free;
        const drain = this.drain(messages, free).finally(() => this.drains.delete(drain));
        this.drains.add(drain);
      } catch (err) {
        if (this.stopped) return;
        logger?.error({ err, stream: names.timelineStream, consumer: this.durable }, "event feed could not pull; retrying");
        this.consumer = undefined;
        this.pauseUntil = Date.now() + ERROR_PAUSE_MS;
      }
    }
  }

  /** drain hands one fetch's events to the handler as they arrive; when it ends, its unfilled room is free again. */
  private async drain(messages: ConsumerMessages, asked: number): Promise<void> {
    const started = Date.now();
    let got = 0;
    try {
      for await (const m of messages) {
        got++;
        this.outstanding--;
        if (this.stopped) {
          m.nak();
          continue;
        }
        this.deliver(m);
      }
      if (got === 0 && !this.stopped && Date.now() - started < EARLY_END_MS) this.pauseUntil = Date.now() + ERROR_PAUSE_MS;
    } catch (err) {
      if (!this.stopped) {
        this.opts.logger?.warn({ err, stream: this.opts.names.timelineStream, consumer: this.durable }, "event feed pull failed; binding again");
        this.consumer = undefined;
        this.pauseUntil = Date.now() + ERROR_PAUSE_MS;
      }
    } finally {
      this.outstanding -= asked - got;
      this.wake();
    }
  }

  private deliver(m: JsMsg): void {
    const stored = parseSequenced(this.opts.names, m.subject, m.seq, m.headers, m.data);
    if (!stored) {
      this.opts.logger?.warn({ subject: m.subject, streamSeq: m.seq, consumer: this.durable }, "event feed dropped a message that is not a group event");
      m.term();
      return;
    }
    this.inFlight++;
    this.held.add(m);
    let result: Promise<void>;
    try {
      result = Promise.resolve(this.handler(stored.event));
    } catch (err) {
      result = Promise.reject(err);
    }
    result.then(
      () => this.settle(m, true),
      () => this.settle(m, false),
    );
  }

  /** settle acks (resolved) or naks after retryDelayMs (rejected) an event still held; one given back at stop stays given back. */
  private settle(m: JsMsg, ok: boolean): void {
    this.inFlight--;
    if (this.held.delete(m)) {
      if (ok) m.ack();
      else m.nak(this.retryDelayMs);
    }
    this.wake();
  }
}

/**
 * createJetStreamEventFeed builds the feed on an open connection (the
 * timeline stream must exist: see ensureTimelineStream). Follow calls
 * create their consumers.
 */
export async function createJetStreamEventFeed(opts: JetStreamEventFeedOptions): Promise<JetStreamEventFeed> {
  return new JetStreamEventFeed(await jetstreamManager(opts.nc), opts);
}
