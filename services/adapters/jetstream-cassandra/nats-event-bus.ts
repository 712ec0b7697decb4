/**
 * NatsEventBus: the production EventBus on NATS (core + JetStream).
 *
 * - Group events are published to JetStream on their slot subject
 *   `<prefix>.group.<groupId>.<seq>` (stream `<PREFIX>_TIMELINE`, declared in
 *   jetstream-streams.ts: file storage, bounded `max_age` as a replay buffer,
 *   `Nats-Msg-Id` = `<groupId>:<seq>` deduped within `duplicate_window`). The
 *   store stays the source of truth.
 * - Subscribers use plain core NATS subscriptions on the group's tail subjects
 *   `<prefix>.tail.<groupId>.*`, where the timeline stream republishes each
 *   message it stored, whole (JetStream's `republish`): cheap, no consumer
 *   state on the server. Never the group subject itself: that one also
 *   carries publishes JetStream refused (a compare-and-set proposal that lost
 *   its race, a retry with a repeated `Nats-Msg-Id`), which a core subscriber
 *   would receive like the stored event of the same seq. The stream leader
 *   republishes: at most once and in order per leader term; across a leader
 *   change gaps or repeats are possible. Gaps (those, and e.g. across a
 *   reconnect) and repeats are the subscriber's to repair by seq from the
 *   store, as the port says.
 * - A headers-only republish (the stream switched back by an older version
 *   during a rolling upgrade) is not dropped: the stored message is fetched
 *   by its stream sequence and delivered in its place, in order (see
 *   subscribeGroup).
 * - User notices are core NATS only (ephemeral, never stored).
 *
 * The local handlers of one group (or user) share its topic: each message is
 * decoded once and handed to every handler. The topic's messages come on a
 * NATS subscription of its own (groupSubscriptions "each") or on the bus's
 * one subscription to every group's tail or every user's notices ("shared").
 */
import { setTimeout as sleep } from "node:timers/promises";
import { connect, headers } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { ChatError } from "../../core/errors.js";
import type { GroupEvent } from "../../core/model.js";
import type { EventBus, Subscription, UserNotice } from "../../core/ports.js";
import { WRONG_LAST_SEQUENCE, ensureTimelineStream } from "./jetstream-streams.js";
import type { TimelineOptions } from "./jetstream-streams.js";
import { decodeEvent, decodeNotice, encodeEvent, encodeNotice } from "./nats-codec.js";
import { NatsNames } from "./subjects.js";

/**
 * NatsBusLogger is the part of a structured logger (pino's shape) the bus
 * uses. warn: a peer sent something undecodable or a handler threw; error: a
 * backend operation failed; info: connection lifecycle.
 */
export interface NatsBusLogger {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

/** NatsEventBusStats counts what the bus dropped or survived since it was created. */
export interface NatsEventBusStats {
  /** Messages dropped because they did not decode (not a GroupEvent / UserNotice). */
  readonly decodeErrors: number;
  /** Handler calls that threw (the error is swallowed so other handlers still run). */
  readonly handlerErrors: number;
  /** Times the connection was lost. */
  readonly disconnects: number;
  /** Times the connection came back after a loss. */
  readonly reconnects: number;
  /** Headers-only republishes received on a tail subject (each answered by fetching the stored message). */
  readonly headersOnly: number;
}

/** NatsEventBusOptions configures {@link createNatsEventBus}. */
export interface NatsEventBusOptions extends TimelineOptions {
  /** servers is one URL or a comma-separated list, e.g. `nats://127.0.0.1:4222`. */
  readonly servers: string | readonly string[];
  /** prefix of every subject and stream name (default "chat"); tests pass a unique one per run. */
  readonly prefix?: string;
  /** name is the connection name shown by the server (monitoring), e.g. `stream-1`. */
  readonly name?: string;
  /** logger receives structured warnings and lifecycle events; default: silent. */
  readonly logger?: NatsBusLogger;
  /**
   * onStatus is called with `false` when the connection is lost (or closes by
   * itself) and `true` when it is back; not on close(). A subscriber should
   * catch up its groups from the store on `true`: events published while it
   * was disconnected never reach it.
   */
  readonly onStatus?: (connected: boolean) => void;
  /**
   * publishTimeoutMs bounds publishEvent and publishUser, including waiting
   * for a reconnect and resending; default 5000. Keep it well below the
   * duplicate window, so every resend of one event is deduped.
   */
  readonly publishTimeoutMs?: number;
  /** subscribeTimeoutMs bounds the wait for the server to confirm a new subscription (across a reconnect); default 5000. */
  readonly subscribeTimeoutMs?: number;
  /** reconnectTimeWaitMs is the pause between reconnect attempts to one server; default 1000. Attempts never stop. */
  readonly reconnectTimeWaitMs?: number;
  /** pingIntervalMs is how often the client pings (detects a dead peer); default 10000. */
  readonly pingIntervalMs?: number;
  /** closeTimeoutMs bounds close()'s drain before the connection is closed hard; default 5000. */
  readonly closeTimeoutMs?: number;
  /** apiTimeoutMs bounds each JetStream API request (stream setup, the fetch of a headers-only republish's stored event); default 5000. */
  readonly apiTimeoutMs?: number;
  /** ensureStream creates/updates the timeline stream at start and after each reconnect (default true); false = assume it exists. */
  readonly ensureStream?: boolean;
  /**
   * groupSubscriptions is how the bus listens to groups' events and users' notices (default "each"):
   * - "each": one NATS subscription per group (`tail(groupId)`) and per user (`user(userId)`) with local
   *   handlers: the server sends a process only those, and each costs the process a NATS subscription (~2 KB
   *   of heap, compiled);
   * - "shared": one NATS subscription to every group's events (`allTails`) and one to every user's notices
   *   (`allUsers`), each taken at its first subscribe and kept until close; messages of groups or users with no
   *   local handler are dropped unread (their subject is looked up, the body not decoded). A followed group or
   *   user then costs ~1 KB, and the process receives every group's events: the better choice when each
   *   process follows most groups (users spread over a few stream processes, each in many groups), the worse
   *   when processes follow few of many busy groups.
   * Either way the guarantees below are the same.
   */
  readonly groupSubscriptions?: "each" | "shared";
}

/** MAX_ATTEMPTS bounds the sends of one publish or subscribe confirmation (besides its time bound). */
const MAX_ATTEMPTS = 20;
/** RETRY_PAUSE_MS is the pause after a failed attempt before the next one. */
const RETRY_PAUSE_MS = 100;
/**
 * HEADERS_ONLY_NOTICE_MS is how often, at most, a bus that receives
 * headers-only republishes logs it and ensures the timeline stream again.
 */
const HEADERS_ONLY_NOTICE_MS = 60_000;
/**
 * MAX_QUEUED_WHILE_FETCHING bounds the tail messages of one group kept while
 * a stored message is fetched; past it they are dropped (counted as
 * undecodable), a gap the subscriber repairs by seq.
 */
const MAX_QUEUED_WHILE_FETCHING = 10_000;

/**
 * storedSeqOfHeadersOnly returns the stream sequence of a headers-only
 * republish (JetStream's `republish.headers_only`: an empty body, the
 * original headers plus `Nats-Msg-Size`, `Nats-Sequence`, `Nats-Subject`,
 * `Nats-Stream`, `Nats-Last-Sequence`), or undefined for anything else (a
 * whole republish, whose body is the event).
 */
function storedSeqOfHeadersOnly(msg: Msg): number | undefined {
  if (msg.data.length > 0 || !msg.headers?.has("Nats-Msg-Size")) return undefined;
  const seq = msg.headers.get("Nats-Sequence");
  return /^\d{1,15}$/.test(seq) && Number(seq) > 0 ? Number(seq) : undefined;
}

/** Entry is one local subscription's handler; inactive once unsubscribed. */
interface Entry<T> {
  readonly handler: (value: T) => void;
  active: boolean;
}

/** Topic is what the local handlers of one subject (a group's events, a user's notices) share. */
interface Topic<T> {
  readonly entries: Set<Entry<T>>;
  /** receive hands one NATS message of the topic to its entries (used by the shared subscription's dispatch). */
  readonly receive: (msg: Msg) => void;
  /** Resolves once the server has the subscription the topic's messages come on (SUB flushed). */
  readonly ready: Promise<void>;
  /** release ends the topic's own NATS subscription, if it has one (not the shared one). */
  readonly release: () => void;
}

/** Listening is a NATS subscription a topic's messages come on, and when the server has it. */
interface Listening {
  readonly release: () => void;
  readonly ready: Promise<void>;
}

/** NatsEventBusParts is what a NatsEventBus is built on (see {@link createNatsEventBus}). */
export interface NatsEventBusParts {
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly names: NatsNames;
  /** True if close() should drain the connection (it was opened for this bus). */
  readonly ownsConnection: boolean;
}

/**
 * NatsEventBus implements EventBus on NATS. Guarantees beyond the port:
 *
 * - publishEvent resolves only after JetStream stored the event (or found it a
 *   duplicate of one stored within the duplicate window). If the connection
 *   is down, or drops before the ack, it waits for the reconnect and sends
 *   again (same `Nats-Msg-Id`, so JetStream stores the event once), all
 *   within `publishTimeoutMs`; then it rejects with ChatError Unavailable. A
 *   rejected publish may still have been stored (only the ack was lost);
 *   publishing it again is deduped within the window, and subscribers get it
 *   once (they only get what the stream stored).
 * - publishUser resolves once the server has received the notice (a PING
 *   round trip after it), with the same waiting and resending (a notice may
 *   arrive twice); it never resolves for a notice the client dropped. Notices
 *   are not stored: subscribers that are disconnected at the time miss them.
 * - subscribeGroup/subscribeUser resolve once the server confirmed the
 *   subscription, waiting for a reconnect if need be, or reject with
 *   ChatError Unavailable after `subscribeTimeoutMs`. Subscriptions survive
 *   reconnects (the client resubscribes); events published while this bus
 *   was disconnected are missed, which subscribers repair by seq (use
 *   `onStatus(true)` to catch up at once rather than at the next event).
 * - Handlers run one message at a time, in arrival order per subject: on the
 *   connection's read loop, except for a group's messages from a
 *   headers-only republish on, which wait for the stored message's fetch.
 *   A handler that throws is counted and logged; others still run. No
 *   handler call starts after unsubscribe() or close() was called.
 * - Ids must be lower-case UUIDs; others are rejected with ChatError
 *   InvalidArgument (they could not be subject tokens).
 * - After close() every method except isHealthy/stats rejects with ChatError
 *   Unavailable, and pending publishes and subscribes reject at once.
 */
export class NatsEventBus implements EventBus {
  readonly names: NatsNames;
  private readonly nc: NatsConnection;
  private readonly js: JetStreamClient;
  private readonly jsm: JetStreamManager;
  private readonly ownsConnection: boolean;
  private readonly log: NatsBusLogger | undefined;
  private readonly onStatus: ((connected: boolean) => void) | undefined;
  private readonly publishTimeoutMs: number;
  private readonly subscribeTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly timeline: TimelineOptions;
  private readonly ensureOnReconnect: boolean;
  /** Group topics by group id; user topics by subject. */
  private readonly groups = new Map<string, Topic<GroupEvent>>();
  private readonly users = new Map<string, Topic<UserNotice>>();
  private readonly groupSubscriptions: "each" | "shared";
  /** The subscriptions to every group's events and every user's notices (groupSubscriptions "shared"), by filter, once taken. */
  private readonly shared = new Map<string, Listening>();
  private readonly link: Link;
  private closed = false;
  private closing: Promise<void> | undefined;
  private counters = { decodeErrors: 0, handlerErrors: 0, disconnects: 0, reconnects: 0, headersOnly: 0 };
  /** When a headers-only republish was last logged (and the stream ensured again); see noticeHeadersOnly. */
  private headersOnlyNoticedAt = Number.NEGATIVE_INFINITY;

  /**
   * Builds a bus on an open connection. Prefer {@link createNatsEventBus},
   * which connects with the right reconnect policy and ensures the stream.
   */
  constructor(parts: NatsEventBusParts, opts: Omit<NatsEventBusOptions, "servers" | "prefix" | "name"> = {}) {
    this.nc = parts.nc;
    this.jsm = parts.jsm;
    this.js = parts.jsm.jetstream();
    this.names = parts.names;
    this.ownsConnection = parts.ownsConnection;
    this.log = opts.logger;
    this.onStatus = opts.onStatus;
    this.publishTimeoutMs = opts.publishTimeoutMs ?? 5000;
    this.subscribeTimeoutMs = opts.subscribeTimeoutMs ?? 5000;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 5000;
    this.timeline = { maxAgeMs: opts.maxAgeMs, duplicateWindowMs: opts.duplicateWindowMs, replicas: opts.replicas };
    this.ensureOnReconnect = opts.ensureStream ?? true;
    this.groupSubscriptions = opts.groupSubscriptions ?? "each";
    this.link = new Link(!this.nc.isClosed());
    void this.watchStatus();
  }

  /** publishEvent stores the event in JetStream, whose republish fans it out; resolves on JetStream's ack (see the class comment). */
  async publishEvent(event: GroupEvent): Promise<void> {
    this.assertOpen();
    const subject = this.names.slot(event.groupId, event.seq);
    const msgID = this.names.msgId(event.groupId, event.seq);
    const data = encodeEvent(event);
    const h = headers();
    // The slot is written at most once, also by a resend after the duplicate window: a slot already holding
    // an event holds this one (the store, the one source of seqs here, gave this seq to this event only).
    h.set("Nats-Expected-Last-Subject-Sequence", "0");
    await this.untilDone("publish the event", this.publishTimeoutMs, async (remainingMs) => {
      try {
        await this.js.publish(subject, data, { msgID, timeout: remainingMs, headers: h });
      } catch (e) {
        if (!(e instanceof JetStreamApiError) || e.code !== WRONG_LAST_SEQUENCE) throw e;
      }
    });
  }

  /**
   * subscribeGroup subscribes `handler` to the group's events as the
   * timeline stream stored them: its republish on the group's tail subject
   * (see the class comment), so a publish JetStream refused never reaches it.
   *
   * Rolling upgrade: an older version sets the stream to republish headers
   * only, at its start and at every reconnect, so during a rollout the
   * stream may be switched back. A headers-only republish (empty body,
   * `Nats-Msg-Size`) is answered by fetching the stored message by its
   * `Nats-Sequence` (direct get) and delivering that; the group's later
   * messages wait behind the fetch, so the group's events keep their order.
   * A fetch that fails (NATS unreachable, the message aged out) drops that
   * event, counted as undecodable: a gap the subscriber repairs by seq. The
   * bus logs an error naming the stream and ensures the stream again (full
   * republish), each at most once a minute.
   */
  async subscribeGroup(groupId: string, handler: (event: GroupEvent) => void): Promise<Subscription> {
    this.assertOpen();
    const subject = this.names.tail(groupId); // also checks the id
    const listen =
      this.groupSubscriptions === "shared"
        ? () => this.listenToAll(this.names.allTails, (msg) => this.groups.get(this.names.groupIdOfTail(msg.subject) ?? "")?.receive(msg))
        : (receive: (msg: Msg) => void) => this.listen(subject, receive);
    return this.subscribe(this.groups, groupId, (entries) => this.tailReceiver(groupId, entries), listen, handler);
  }

  /**
   * listenToAll takes the shared subscription to `filter` (every group's
   * tail, or every user's notices; groupSubscriptions "shared") at its first
   * call, its messages going to `dispatch`, and returns it for every topic it
   * carries. If the server never confirms it, it is dropped so that a later
   * subscribe takes it afresh.
   */
  private listenToAll(filter: string, dispatch: (msg: Msg) => void): Listening {
    let shared = this.shared.get(filter);
    if (!shared) {
      const created = this.listen(filter, dispatch);
      created.ready.catch(() => {
        if (this.shared.get(filter) !== created) return;
        this.shared.delete(filter);
        created.release();
      });
      this.shared.set(filter, created);
      shared = created;
    }
    return { release: () => {}, ready: shared.ready };
  }

  /**
   * tailReceiver is the message callback of one group's tail subscription:
   * a whole republish is decoded and delivered at once, unless a fetch for a
   * headers-only republish is in flight; then it is queued behind it. The
   * queue is drained in arrival order, one fetch at a time.
   */
  private tailReceiver(groupId: string, entries: Set<Entry<GroupEvent>>): (msg: Msg) => void {
    const decodeWhole = (bytes: Uint8Array): GroupEvent | undefined => {
      const event = decodeEvent(bytes);
      return event?.groupId === groupId ? event : undefined;
    };
    /** Messages that arrived while a fetch was in flight, in arrival order; undefined when none is. */
    let queue: Msg[] | undefined;
    const drain = async (first: Msg, firstSeq: number): Promise<void> => {
      let msg: Msg | undefined = first;
      let seq: number | undefined = firstSeq;
      // Each pass takes one message off the queue (capped at MAX_QUEUED_WHILE_FETCHING) and waits at most one fetch
      // (bounded by the API timeout); the loop ends as soon as the queue is empty.
      while (msg !== undefined) {
        if (seq !== undefined) this.deliver(entries, await this.fetchStored(groupId, seq), msg.subject);
        else this.deliver(entries, decodeWhole(msg.data), msg.subject);
        msg = queue?.shift();
        seq = msg && storedSeqOfHeadersOnly(msg);
      }
      queue = undefined;
    };
    return (msg) => {
      if (queue !== undefined) {
        if (queue.length < MAX_QUEUED_WHILE_FETCHING) queue.push(msg);
        else this.dropped(msg.subject);
        return;
      }
      const seq = storedSeqOfHeadersOnly(msg);
      if (seq === undefined) {
        this.deliver(entries, decodeWhole(msg.data), msg.subject);
        return;
      }
      queue = [];
      void drain(msg, seq).catch((err: unknown) => {
        // deliver and fetchStored do not throw; this is a last resort so the group is never stuck behind a queue.
        queue = undefined;
        this.log?.error({ err, subject: msg.subject }, "event bus tail delivery failed");
      });
    };
  }

  /**
   * fetchStored reads the group's event stored at stream sequence `seq`
   * (direct get); undefined, logged, if it cannot be read or is not an event
   * of the group.
   */
  private async fetchStored(groupId: string, seq: number): Promise<GroupEvent | undefined> {
    // Closed: no handler runs any more (deliver finds no entries), so nothing is fetched.
    if (this.closed) return undefined;
    this.counters.headersOnly++;
    this.noticeHeadersOnly();
    const stream = this.names.timelineStream;
    try {
      const stored = await this.jsm.direct.getMessage(stream, { seq });
      const event = stored && this.names.groupIdOf(stored.subject) === groupId ? decodeEvent(stored.data) : undefined;
      if (event?.groupId === groupId) return event;
      this.log?.warn({ stream, seq, groupId }, "a headers-only republish names no stored event of its group");
    } catch (err) {
      this.log?.warn({ err, stream, seq, groupId }, "could not fetch the stored event of a headers-only republish");
    }
    return undefined;
  }

  /**
   * noticeHeadersOnly logs that the stream republishes headers only and
   * ensures the stream again (full republish), at most once per
   * HEADERS_ONLY_NOTICE_MS; the ensuring only if the bus ensures the stream
   * at all (option ensureStream).
   */
  private noticeHeadersOnly(): void {
    const now = Date.now();
    if (now - this.headersOnlyNoticedAt < HEADERS_ONLY_NOTICE_MS || this.closed) return;
    this.headersOnlyNoticedAt = now;
    const stream = this.names.timelineStream;
    this.log?.error(
      { stream, tails: this.names.allTails },
      `the timeline stream ${stream} republishes headers only: its configuration was switched back, most likely by a process of an ` +
        `older version starting or reconnecting during a rolling upgrade. Each event is fetched by its stream sequence meanwhile ` +
        `(slower); ${this.ensureOnReconnect ? "ensuring the stream again" : "not ensuring the stream (ensureStream is false)"}. ` +
        `Finish the rollout (docs/production.md).`,
    );
    if (this.ensureOnReconnect) void this.reensureStream("after a headers-only republish");
  }

  /** publishUser sends the notice over core NATS; resolves once the server has it (see the class comment). */
  async publishUser(userId: string, notice: UserNotice): Promise<void> {
    this.assertOpen();
    const subject = this.names.user(userId);
    const data = encodeNotice(notice);
    await this.untilDone("send the notice", this.publishTimeoutMs, async () => {
      this.nc.publish(subject, data);
      await this.nc.flush();
    });
  }

  /** subscribeUser subscribes `handler` to the user's notices (see the class comment). */
  async subscribeUser(userId: string, handler: (notice: UserNotice) => void): Promise<Subscription> {
    this.assertOpen();
    const subject = this.names.user(userId);
    return this.subscribe(
      this.users,
      subject,
      (entries) => (msg) => this.deliver(entries, decodeNotice(msg.data), msg.subject),
      this.groupSubscriptions === "shared"
        ? () => this.listenToAll(this.names.allUsers, (msg) => this.users.get(msg.subject)?.receive(msg))
        : (receive) => this.listen(subject, receive),
      handler,
    );
  }

  /** isHealthy tells whether the bus is open and connected to a server (for NOT_SERVING while NATS is unreachable). */
  isHealthy(): boolean {
    return !this.closed && this.link.up && !this.nc.isClosed();
  }

  /** stats returns counters of dropped messages, handler failures and connection losses. */
  stats(): NatsEventBusStats {
    return { ...this.counters };
  }

  /**
   * close ends every subscription at once (no handler call starts once it
   * has been called), then drains the connection if the bus owns it:
   * outgoing messages are flushed first. A drain that does not finish within
   * `closeTimeoutMs` (e.g. NATS unreachable) is cut short. Idempotent.
   */
  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true;
      this.link.close();
      for (const topics of [this.groups, this.users] as Map<string, Topic<unknown>>[]) {
        for (const topic of topics.values()) {
          for (const entry of topic.entries) entry.active = false;
          topic.entries.clear();
          topic.release();
        }
        topics.clear();
      }
      for (const { release } of this.shared.values()) release();
      this.shared.clear();
      this.closing = this.ownsConnection ? this.shutdown() : Promise.resolve();
    }
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    if (this.nc.isClosed()) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.closeTimeoutMs);
    });
    try {
      const outcome = await Promise.race([this.nc.drain().then(() => "drained" as const), timeout]);
      if (outcome === "timeout") await this.nc.close();
    } catch {
      // Already closed or closing: nothing left to release.
      if (!this.nc.isClosed()) await this.nc.close().catch(() => {});
    } finally {
      clearTimeout(timer);
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new ChatError("Unavailable", "the event bus is closed");
  }

  /**
   * subscribe adds `handler` to the topic `key` of `topics`, making the topic
   * if need be: its messages go to `receiver(entries)`, and `listen` gives
   * the NATS subscription they come on (released with the topic's last
   * handler). If the server never confirms that subscription, the topic is
   * forgotten at once, so a later subscribe starts afresh.
   */
  private async subscribe<T>(
    topics: Map<string, Topic<T>>,
    key: string,
    receiver: (entries: Set<Entry<T>>) => (msg: Msg) => void,
    listen: (receive: (msg: Msg) => void) => Listening,
    handler: (value: T) => void,
  ): Promise<Subscription> {
    let topic = topics.get(key);
    if (!topic) {
      const entries = new Set<Entry<T>>();
      const receive = receiver(entries);
      const { release, ready } = listen(receive);
      const created: Topic<T> = { entries, receive, ready, release };
      ready.catch(() => {
        if (topics.get(key) !== created) return;
        topics.delete(key);
        for (const e of entries) e.active = false;
        entries.clear();
        release();
      });
      topics.set(key, created);
      topic = created;
    }
    // A fresh entry per call, so the same function subscribed twice gets two subscriptions.
    const entry: Entry<T> = { handler, active: true };
    topic.entries.add(entry);
    const unsubscribe = () => {
      if (!entry.active) return;
      entry.active = false;
      const current = topics.get(key);
      if (!current?.entries.delete(entry)) return;
      if (current.entries.size === 0) {
        topics.delete(key);
        current.release();
      }
    };
    try {
      await topic.ready;
    } catch (e) {
      unsubscribe();
      throw e;
    }
    if (this.closed) throw new ChatError("Unavailable", "the event bus is closed");
    return { unsubscribe };
  }

  /** listen takes a NATS subscription of its own for `subject`, whose messages go to `receive`. */
  private listen(subject: string, receive: (msg: Msg) => void): Listening {
    const sub = this.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err) {
          this.log?.error({ subject, err }, "NATS subscription failed");
          return;
        }
        receive(msg);
      },
    });
    return { release: () => sub.unsubscribe(), ready: this.untilDone("subscribe", this.subscribeTimeoutMs, () => this.nc.flush()) };
  }

  /** deliver hands one decoded message (undefined: it did not decode, dropped and counted) to every active handler of its subject. */
  private deliver<T>(entries: Set<Entry<T>>, value: T | undefined, subject: string): void {
    if (entries.size === 0) return;
    if (value === undefined) {
      this.dropped(subject);
      return;
    }
    for (const entry of [...entries]) {
      // Unsubscribed (or closed) by an earlier handler of this same message: skip.
      if (!entry.active) continue;
      try {
        entry.handler(value);
      } catch (err) {
        this.counters.handlerErrors++;
        this.log?.warn({ subject, err }, "event bus handler threw");
      }
    }
  }

  private dropped(subject: string): void {
    this.counters.decodeErrors++;
    this.log?.warn({ subject }, "dropped an undecodable event bus message");
  }

  /**
   * untilDone runs `attempt` (given the time left) until it succeeds, within
   * `timeoutMs` and MAX_ATTEMPTS: while disconnected it waits for the
   * reconnect; an attempt cut off by a disconnect or failed for a transient
   * reason is made again. A JetStream API error (the server refused for a
   * reason) is final. Rejects with ChatError Unavailable, the last failure as
   * `cause`.
   */
  private async untilDone<T>(what: string, timeoutMs: number, attempt: (remainingMs: number) => Promise<T>): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown = new Error(`not connected to NATS within ${timeoutMs} ms`);
    for (let i = 0; i < MAX_ATTEMPTS && !this.closed; i++) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      if (!this.link.up) {
        await this.link.until(true, remaining).promise;
        continue;
      }
      const down = this.link.until(false, remaining);
      try {
        const outcome = await Promise.race([
          attempt(remaining).then((value) => ({ done: true as const, value })),
          down.promise.then(() => ({ done: false as const })),
        ]);
        if (outcome.done) return outcome.value;
        lastError = new Error(this.closed ? "the event bus was closed" : `no answer from NATS within ${timeoutMs} ms, or the connection was lost first`);
      } catch (e) {
        lastError = e;
        if (e instanceof JetStreamApiError) break;
        await sleep(Math.max(0, Math.min(RETRY_PAUSE_MS, deadline - Date.now())));
      } finally {
        down.cancel();
      }
    }
    if (this.closed) throw new ChatError("Unavailable", "the event bus is closed", { cause: lastError });
    throw new ChatError("Unavailable", `the event bus could not ${what}`, { cause: lastError });
  }

  private async watchStatus(): Promise<void> {
    try {
      for await (const s of this.nc.status()) {
        switch (s.type) {
          case "disconnect":
            this.counters.disconnects++;
            this.setConnected(false);
            this.log?.warn({ server: s.server }, "lost the NATS connection; reconnecting");
            break;
          case "reconnect":
            this.counters.reconnects++;
            this.setConnected(true);
            this.log?.info({ server: s.server }, "reconnected to NATS");
            if (this.ensureOnReconnect) void this.reensureStream("after reconnect");
            break;
          case "close":
            this.setConnected(false);
            return;
          default:
            break;
        }
      }
    } catch (err) {
      this.log?.error({ err }, "NATS status watch ended");
    } finally {
      this.setConnected(false);
    }
  }

  private setConnected(connected: boolean): void {
    if (!this.link.set(connected)) return;
    try {
      this.onStatus?.(connected);
    } catch (err) {
      this.log?.warn({ err }, "event bus status hook threw");
    }
    if (!connected) return;
    for (const handler of this.resyncHandlers) {
      try {
        handler();
      } catch (err) {
        this.log?.warn({ err }, "event bus resync handler threw");
      }
    }
  }

  /** onResync handlers run each time the connection comes back (events published meanwhile were missed). */
  onResync(handler: () => void): void {
    this.resyncHandlers.push(handler);
  }

  private readonly resyncHandlers: (() => void)[] = [];

  /**
   * reensureStream puts the timeline stream back as it should be: after a
   * reconnect (the server may have lost its store: a new, empty one), or
   * after a headers-only republish (an older version switched it back).
   */
  private async reensureStream(when: string): Promise<void> {
    try {
      await ensureTimelineStream(this.jsm, this.names, this.timeline);
    } catch (err) {
      this.log?.error({ err, stream: this.names.timelineStream }, `could not ensure the timeline stream ${when}`);
    }
  }
}

/** Waiter is one pending Link.until call. */
interface Waiter {
  readonly want: boolean;
  readonly resolve: (reached: boolean) => void;
}

/**
 * Link tracks whether the connection is up, and lets callers wait for it to
 * come up or go down. close() releases every waiter (with false).
 */
class Link {
  private readonly waiters = new Set<Waiter>();
  private closed = false;

  constructor(public up: boolean) {}

  /** set records the state; returns false if it did not change. */
  set(up: boolean): boolean {
    if (this.closed || this.up === up) return false;
    this.up = up;
    for (const w of [...this.waiters]) {
      if (w.want !== up) continue;
      this.waiters.delete(w);
      w.resolve(true);
    }
    return true;
  }

  /**
   * until resolves `true` once the link is (or becomes) `want`, or `false`
   * after `ms`, on cancel() or on close(). Cancel it when done with it, so
   * no timer or waiter is left behind.
   */
  until(want: boolean, ms: number): { promise: Promise<boolean>; cancel: () => void } {
    if (this.closed) return { promise: Promise.resolve(false), cancel: () => {} };
    if (this.up === want) return { promise: Promise.resolve(true), cancel: () => {} };
    let timer: NodeJS.Timeout | undefined;
    let waiter: Waiter | undefined;
    const promise = new Promise<boolean>((resolve) => {
      const w: Waiter = {
        want,
        resolve: (reached) => {
          clearTimeout(timer);
          this.waiters.delete(w);
          resolve(reached);
        },
      };
      waiter = w;
      this.waiters.add(w);
      timer = setTimeout(() => w.resolve(false), ms);
    });
    return { promise, cancel: () => waiter?.resolve(false) };
  }

  /** close marks the link down for good and releases every waiter. */
  close(): void {
    this.up = false;
    this.closed = true;
    for (const w of [...this.waiters]) w.resolve(false);
    this.waiters.clear();
  }
}

/**
 * createNatsEventBus connects to NATS (reconnecting forever after the first
 * connection: `maxReconnectAttempts: -1`), creates or updates the timeline
 * stream unless `ensureStream` is false, and returns the bus. Rejects if the
 * first connection or the stream setup fails (the connection is closed then).
 */
export async function createNatsEventBus(opts: NatsEventBusOptions): Promise<NatsEventBus> {
  const names = new NatsNames(opts.prefix);
  const servers = typeof opts.servers === "string" ? opts.servers.split(",").map((s) => s.trim()).filter((s) => s !== "") : [...opts.servers];
  const nc = await connect({
    servers,
    name: opts.name ?? `chat-${names.prefix}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: opts.reconnectTimeWaitMs ?? 1000,
    pingInterval: opts.pingIntervalMs ?? 10_000,
    maxPingOut: 3,
  });
  try {
    const jsm = await jetstreamManager(nc, { timeout: opts.apiTimeoutMs ?? 5000 });
    if (opts.ensureStream ?? true) await ensureTimelineStream(jsm, names, opts);
    return new NatsEventBus({ nc, jsm, names, ownsConnection: true }, opts);
  } catch (e) {
    await nc.close().catch(() => {});
    throw e;
  }
}
