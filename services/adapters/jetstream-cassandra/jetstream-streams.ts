/**
 * The one place that declares every JetStream stream and durable consumer of
 * the timeline (DESIGN.md, "NATS"; anchor: dendrite
 * `setup/jetstream/streams.go`). Their names come from subjects.ts
 * (NatsNames); their settings and the functions that create or update them on
 * the server are here, and nowhere else:
 *
 * | what                       | name                     | declared by                                   |
 * |----------------------------|--------------------------|-----------------------------------------------|
 * | the timeline stream        | `<PREFIX>_TIMELINE`      | {@link timelineStreamConfig}, {@link ensureTimelineStream} |
 * | the persisters' consumer   | `persister` (durable)    | {@link ensurePersisterConsumer}               |
 * | an EventFeed name's consumer | `feed-<name>` (durable, e.g. `feed-notifier`) | {@link ensureFeedConsumer} |
 *
 * Everything else reads the stream without declaring anything on it: direct
 * gets (JetStreamSequencer, NatsEventBus) and message gets answered by the
 * stream leader (JetStreamSequencer: readLog, and reads a direct get found
 * nothing for); no other consumer is created on it.
 */
import { nanos } from "@nats-io/transport-node";
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import type { JetStreamManager, StreamConfig } from "@nats-io/jetstream";
import { ChatError } from "../../core/errors.js";
import type { NatsNames } from "./subjects.js";

/** TimelineOptions configures the timeline stream (the replay buffer). */
export interface TimelineOptions {
  /** maxAgeMs bounds how long JetStream keeps an event; default 24 h. */
  readonly maxAgeMs?: number;
  /** duplicateWindowMs is how long a `Nats-Msg-Id` is remembered for dedupe; default 2 min. */
  readonly duplicateWindowMs?: number;
  /**
   * replicas is the stream's replica count: 3 in production (an ack then
   * means stored on a quorum of three nats-servers), 1 on a lone server;
   * default 1.
   */
  readonly replicas?: number;
}

const DEFAULT_MAX_AGE_MS = 24 * 60 * 60 * 1000;
const DEFAULT_DUPLICATE_WINDOW_MS = 2 * 60 * 1000;
/** JetStream API error: stream name already in use with a different configuration. */
const STREAM_NAME_IN_USE = 10058;

/**
 * WRONG_LAST_SEQUENCE is the JetStream API error code (err_code) of a
 * publish refused because its `Nats-Expected-Last-Subject-Sequence` did not
 * match: on the timeline stream, whose every event is published on a slot of
 * its own with expected 0 (NatsNames.slot), it means the slot is taken (another
 * writer stored that group's seq first). The one definition, for
 * JetStreamSequencer and NatsEventBus.
 */
export const WRONG_LAST_SEQUENCE = 10071;

/**
 * timelineStreamConfig is the configuration of the timeline stream for
 * `names`: file storage, limits retention (old events fall off after
 * `maxAgeMs`), dedupe window for `Nats-Msg-Id`, direct get allowed, and
 * every stored event republished whole on `<prefix>.tail.<groupId>.<seq>` (its
 * headers plus `Nats-Sequence`, its stream sequence, and `Nats-Subject`).
 * JetStream republishes a message only once it has stored it (after the
 * quorum on a replicated stream); the stream's leader republishes each entry
 * as it applies it, so within one leader term each stored message is
 * republished at most once and in stream order, but around a leader change
 * an entry may be republished by nobody or twice, and the two leaders'
 * republishes may interleave. That is what stream processes subscribe to
 * (NatsEventBus.subscribeGroup; subscribers drop seqs at or below their
 * cursor and repair gaps by seq from the store), and sequencers keep each
 * group's last event current from its headers without reading it
 * (JetStreamSequencer).
 */
export function timelineStreamConfig(names: NatsNames, opts: TimelineOptions = {}): Partial<StreamConfig> & { name: string } {
  return {
    name: names.timelineStream,
    description: `Group timelines (${names.allGroups}): fan-out log and replay buffer; the store is the source of truth`,
    subjects: [names.allGroups],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(opts.maxAgeMs ?? DEFAULT_MAX_AGE_MS),
    duplicate_window: nanos(opts.duplicateWindowMs ?? DEFAULT_DUPLICATE_WINDOW_MS),
    max_msgs: -1,
    max_bytes: -1,
    max_msgs_per_subject: -1,
    max_msg_size: -1,
    max_consumers: -1,
    num_replicas: opts.replicas ?? 1,
    allow_direct: true,
    mirror_direct: false,
    sealed: false,
    deny_delete: false,
    deny_purge: false,
    allow_rollup_hdrs: false,
    republish: { src: names.allGroups, dest: names.allTails, headers_only: false },
  };
}

/** sameRepublish tells whether two republish settings are the same (an absent `headers_only` is false). */
function sameRepublish(a: StreamConfig["republish"] | undefined, b: StreamConfig["republish"] | undefined): boolean {
  if (!a || !b) return a === b;
  return a.src === b.src && a.dest === b.dest && (a.headers_only ?? false) === (b.headers_only ?? false);
}

/**
 * ensureTimelineStream creates the timeline stream, or updates it to
 * {@link timelineStreamConfig} if it exists with another configuration.
 * Idempotent and safe to race: concurrent callers with the same options all
 * succeed.
 *
 * A stream made by an older version republishes headers only (or nothing),
 * and nats-server before 2.10 cannot change `republish` on an existing
 * stream: live delivery would then get no events at all. That is refused
 * with ChatError FailedPrecondition, whose message names the stream and the
 * fix (nats-server 2.10+, or delete the stream once the persister has caught
 * up; docs/production.md), rather than started half working.
 */
export async function ensureTimelineStream(jsm: JetStreamManager, names: NatsNames, opts: TimelineOptions = {}): Promise<void> {
  const cfg = timelineStreamConfig(names, opts);
  try {
    await jsm.streams.add(cfg);
  } catch (e) {
    if (!(e instanceof JetStreamApiError) || e.code !== STREAM_NAME_IN_USE) throw e;
    const { name, storage: _storage, ...mutable } = cfg;
    try {
      await jsm.streams.update(name, mutable);
    } catch (refused) {
      if (!(refused instanceof JetStreamApiError)) throw refused;
      const current = (await jsm.streams.info(name)).config.republish;
      if (sameRepublish(current, cfg.republish)) throw refused;
      // nats-server before 2.10 cannot add or change RePublish on an existing stream.
      throw new ChatError(
        "FailedPrecondition",
        `the timeline stream ${name} republishes ${current ? `${current.headers_only ? "headers only" : "whole messages"} on ${current.dest}` : "nothing"}, ` +
          `but live delivery needs every stored event republished whole on ${names.allTails}, and this nats-server cannot change that ` +
          `(${refused.message}). Either run nats-server 2.10 or later, or stop the chat processes, wait until the persister ` +
          `has caught up (\`nats consumer info ${name} ${names.durable("persister")}\`: no pending messages), delete the stream ` +
          `(\`nats stream rm ${name}\`; the store keeps the history) and start them again (docs/production.md).`,
        { cause: refused },
      );
    }
  }
}

/**
 * MAX_ACK_PENDING bounds the events handed to the persisters and not acked
 * yet (what a Cassandra outage keeps in redelivery at once).
 */
const MAX_ACK_PENDING = 20_000;

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
 * FEED_MAX_ACK_PENDING bounds the events of one EventFeed name handed out
 * and not acked yet, over all its instances (each bounds its own share by
 * its maxPending): what a handler that keeps failing holds in redelivery.
 */
const FEED_MAX_ACK_PENDING = 20_000;

/**
 * ensureFeedConsumer creates the durable pull consumer of the EventFeed
 * follower `name` (NatsNames.feed) if it does not exist: explicit acks,
 * ack_wait = `ackWaitMs`, redelivered without limit, over every group
 * subject, starting with the events stored after its creation
 * (DeliverPolicy.New: a new name gets only what is appended after its first
 * follow), replicated like the stream (num_replicas unset: the stream's).
 * An existing one keeps its position and ack state; its ack_wait is set to
 * `ackWaitMs` if it differs (the latest follow call wins). Safe to race.
 * Returns the consumer's name. Throws ChatError InvalidArgument for a bad
 * name.
 */
export async function ensureFeedConsumer(jsm: JetStreamManager, names: NatsNames, name: string, ackWaitMs: number): Promise<string> {
  const stream = names.timelineStream;
  const durable = names.feed(name);
  const ackWait = nanos(ackWaitMs);
  try {
    const info = await jsm.consumers.info(stream, durable);
    if (info.config.ack_wait !== ackWait) await jsm.consumers.update(stream, durable, { ack_wait: ackWait });
    return durable;
  } catch (e) {
    if (!(e instanceof JetStreamApiError) || e.code !== JetStreamApiCodes.ConsumerNotFound) throw e;
  }
  try {
    await jsm.consumers.add(stream, {
      durable_name: durable,
      description: `EventFeed follower ${name}: every durable group event, at least once (its instances share it)`,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.New,
      replay_policy: ReplayPolicy.Instant,
      filter_subject: names.allGroups,
      ack_wait: ackWait,
      max_ack_pending: FEED_MAX_ACK_PENDING,
      max_deliver: -1,
    });
  } catch (e) {
    // Another instance created it first.
    await jsm.consumers.info(stream, durable).catch(() => {
      throw e;
    });
  }
  return durable;
}
