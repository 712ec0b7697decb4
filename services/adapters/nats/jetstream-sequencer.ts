/**
 * JetStreamSequencer: a group's next seq from a JetStream per-subject
 * compare-and-set (docs/production.md, "Sequencing without LWT on the hot
 * path").
 *
 * The group's subject `<prefix>.group.<groupId>` in the timeline stream is a
 * compare-and-set register: a publish with `Nats-Expected-Last-Subject-Sequence: S`
 * is stored only if the subject's last message has stream sequence S. The
 * writer reads the last message (direct get, `last_by_subj`), builds the
 * event with group seq N + 1 and publishes it expecting S; if another writer
 * won, JetStream answers "wrong last sequence" and the writer starts over.
 *
 * Events are published with the NatsEventBus's codec on the NatsEventBus's
 * subject, so core subscribers of the bus (stream processes) receive them
 * live: the sequencer's publish IS the fan-out. Callers must therefore not
 * publish the event again through the bus (see {@link storePublishesEvents}).
 *
 * Every sequenced message carries headers (all decimal):
 *
 * | header        | value                                                                |
 * |---------------|----------------------------------------------------------------------|
 * | `Chat-Seq`    | the event's group seq                                                |
 * | `Chat-Prev`   | stream seq of the previous event on the subject (0: none): a backward chain |
 * | `Chat-Change` | `<groupSeq>:<streamSeq>` of the latest membership/rename event before it |
 * | `Chat-Counts` | `<memberCount>:<ownerCount>` after a member_* event                  |
 *
 * `Chat-Prev` lets a writer find events JetStream holds but the store lacks
 * (walking back from the last one); `Chat-Change` lets it check, with one
 * read, that the store holds the latest membership event (the snapshot a
 * change is decided on depends on it); `Chat-Counts` lets anyone (the
 * persister) write a member_* event with its counts.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { createHash } from "node:crypto";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import { JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { ChatError } from "../../core/errors.js";
import type { GroupEvent } from "../../core/model.js";
import type { EventBus, Subscription, UserNotice } from "../../core/ports.js";
import { decodeEvent, encodeEvent } from "./event-codec.js";
import { NatsNames } from "./subjects.js";

/** Header names of a sequenced event (see the module comment). */
export const SEQ_HEADER = "Chat-Seq";
export const PREV_HEADER = "Chat-Prev";
export const CHANGE_HEADER = "Chat-Change";
export const COUNTS_HEADER = "Chat-Counts";

/** JetStream API error code for "wrong last sequence" (Nats-Expected-Last-Subject-Sequence did not match). */
const WRONG_LAST_SEQUENCE = 10071;

/** EventCounts are a group's member and owner counts after a member_* event. */
export interface EventCounts {
  readonly memberCount: number;
  readonly ownerCount: number;
}

/** ChangeRef locates a membership or rename event: its group seq and stream seq. */
export interface ChangeRef {
  readonly groupSeq: number;
  readonly streamSeq: number;
}

/** SequencedEvent is a group event as stored in the timeline stream. */
export interface SequencedEvent {
  readonly event: GroupEvent;
  /** The message's stream sequence. */
  readonly streamSeq: number;
  /** The event's group seq (= event.seq). */
  readonly groupSeq: number;
  /** Stream sequence of the previous event on the subject; 0 if none or unknown. */
  readonly prevStreamSeq: number;
  /** The latest membership/rename event at or before this one (itself if it is one); undefined if unknown. */
  readonly change: ChangeRef | undefined;
  /** Counts after the event (member_* events published by the sequencer). */
  readonly counts: EventCounts | undefined;
  /** The message's Nats-Msg-Id, if any. */
  readonly msgId: string | undefined;
}

/** AppendExtras are what a publish carries besides the event. */
export interface AppendExtras {
  /** The latest change before this event (from the last message); undefined if none is known. */
  readonly change?: ChangeRef | undefined;
  /** Counts after a member_* event. */
  readonly counts?: EventCounts | undefined;
}

/** AppendOutcome is what one compare-and-set publish did. */
export type AppendOutcome =
  /** Stored as the subject's new last message. */
  | { readonly status: "appended"; readonly stored: SequencedEvent }
  /** Another writer appended first (wrong last sequence): read the last message again and retry. */
  | { readonly status: "conflict" }
  /** The Nats-Msg-Id was stored before within the duplicate window: `original` is that message. */
  | { readonly status: "duplicate"; readonly original: SequencedEvent }
  /** No answer (timeout, connection lost): the publish may or may not have been stored; retry with the same msgId. */
  | { readonly status: "unknown"; readonly cause: unknown };

/** Proposal is what a writer wants to append after the last event it was shown. */
export interface Proposal {
  readonly event: GroupEvent;
  /** Idempotency key (Nats-Msg-Id): equal for retries of one logical write, distinct otherwise. */
  readonly msgId: string;
  /** Counts after a member_* event. */
  readonly counts?: EventCounts | undefined;
}

/** SequenceResult is the event a sequence() call settled on. */
export interface SequenceResult {
  readonly stored: SequencedEvent;
  /** True when the msgId was stored before (this is the original of an earlier attempt). */
  readonly duplicate: boolean;
}

/** SequencerOptions tune retries. */
export interface SequencerOptions {
  /** Bound on compare-and-set attempts of one sequence() call (default 64). */
  readonly maxAttempts?: number;
  /** Bound on the time of one sequence() call, in ms (default 10000). */
  readonly timeoutMs?: number;
  /** Timeout of each JetStream request, in ms (default 5000). */
  readonly requestTimeoutMs?: number;
  /** Largest jitter pause between retries, in ms (default 50). */
  readonly maxJitterMs?: number;
}

/** JetStreamSequencerParts is what the sequencer is built on. */
export interface JetStreamSequencerParts {
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly names: NatsNames;
}

/** How many groups' last events the sequencer remembers. */
const LAST_CACHE_SIZE = 4096;

/**
 * JetStreamSequencer appends group events by compare-and-set on the group's
 * subject. Within one instance, sequence() calls for one group run one at a
 * time (a local queue), so compare-and-set conflicts only arise between
 * processes; the instance also remembers the last event it appended per
 * group, saving the read of the last message while it stays current (a stale
 * entry only costs one conflict).
 */
export class JetStreamSequencer {
  readonly names: NatsNames;
  private readonly js: JetStreamClient;
  private readonly jsm: JetStreamManager;
  private readonly maxAttempts: number;
  private readonly timeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly maxJitterMs: number;
  private readonly tails = new Map<string, Promise<void>>();
  private readonly lastAppended = new Map<string, SequencedEvent>();

  constructor(parts: JetStreamSequencerParts, opts: SequencerOptions = {}) {
    this.names = parts.names;
    this.jsm = parts.jsm;
    this.js = parts.jsm.jetstream();
    this.maxAttempts = opts.maxAttempts ?? 64;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    this.maxJitterMs = opts.maxJitterMs ?? 50;
  }

  /**
   * last returns the group's last event in the timeline stream, or undefined
   * if its subject holds none (never written, or idle past the stream's
   * max_age). Throws ChatError Unavailable if JetStream cannot be asked, and
   * Internal if the last message is not a well-formed event of the group.
   */
  async last(groupId: string): Promise<SequencedEvent | undefined> {
    const subject = this.names.group(groupId);
    let msg;
    try {
      msg = await this.jsm.direct.getMessage(this.names.timelineStream, { last_by_subj: subject });
    } catch (e) {
      throw new ChatError("Unavailable", "the sequencer could not read the group's last event", { cause: e });
    }
    if (!msg) return undefined;
    const stored = parseSequenced(this.names, msg.subject, msg.seq, msg.header, msg.data);
    if (!stored || stored.event.groupId !== groupId) {
      throw new ChatError("Internal", `the last message on ${subject} (stream seq ${msg.seq}) is not an event of the group`);
    }
    return stored;
  }

  /**
   * get returns the group's event stored at stream sequence `streamSeq`, or
   * undefined if the stream no longer holds it (or it belongs elsewhere).
   * Throws ChatError Unavailable if JetStream cannot be asked.
   */
  async get(groupId: string, streamSeq: number): Promise<SequencedEvent | undefined> {
    if (!Number.isSafeInteger(streamSeq) || streamSeq < 1) return undefined;
    let msg;
    try {
      msg = await this.jsm.direct.getMessage(this.names.timelineStream, { seq: streamSeq });
    } catch (e) {
      throw new ChatError("Unavailable", "the sequencer could not read a stored event", { cause: e });
    }
    if (!msg || msg.subject !== this.names.group(groupId)) return undefined;
    const stored = parseSequenced(this.names, msg.subject, msg.seq, msg.header, msg.data);
    return stored?.event.groupId === groupId ? stored : undefined;
  }

  /**
   * append publishes `event` on its group's subject if the subject's last
   * message has stream sequence `expectedLastStreamSeq` (0: the subject is
   * empty), with Nats-Msg-Id `msgId` and the headers of the module comment.
   * Distinguishes a lost race ("conflict"), a repeated msgId ("duplicate",
   * with the stored original) and no answer ("unknown"); any other refusal
   * throws ChatError Unavailable.
   */
  async append(event: GroupEvent, expectedLastStreamSeq: number, msgId: string, extras: AppendExtras = {}): Promise<AppendOutcome> {
    const subject = this.names.group(event.groupId);
    const h = natsHeaders();
    h.set(SEQ_HEADER, String(event.seq));
    h.set(PREV_HEADER, String(expectedLastStreamSeq));
    if (extras.change) h.set(CHANGE_HEADER, `${extras.change.groupSeq}:${extras.change.streamSeq}`);
    if (extras.counts) h.set(COUNTS_HEADER, `${extras.counts.memberCount}:${extras.counts.ownerCount}`);
    let ack;
    try {
      ack = await this.js.publish(subject, encodeEvent(event), {
        msgID: msgId,
        expect: { lastSubjectSequence: expectedLastStreamSeq },
        headers: h,
        timeout: this.requestTimeoutMs,
      });
    } catch (e) {
      if (e instanceof JetStreamApiError) {
        if (e.code === WRONG_LAST_SEQUENCE) return { status: "conflict" };
        throw new ChatError("Unavailable", "the timeline stream refused the event", { cause: e });
      }
      return { status: "unknown", cause: e };
    }
    if (ack.duplicate) {
      const original = await this.get(event.groupId, ack.seq);
      if (!original) {
        throw new ChatError("Unavailable", `the original of duplicate ${msgId} is no longer in the timeline stream`);
      }
      return { status: "duplicate", original };
    }
    return {
      status: "appended",
      stored: {
        event,
        streamSeq: ack.seq,
        groupSeq: event.seq,
        prevStreamSeq: expectedLastStreamSeq,
        change: isChange(event) ? { groupSeq: event.seq, streamSeq: ack.seq } : extras.change,
        counts: extras.counts,
        msgId,
      },
    };
  }

  /**
   * sequence appends one event to the group by compare-and-set, retrying
   * until it is stored: `propose` is called with the group's last event
   * (undefined if the subject is empty) and returns the event to append
   * after it (its seq must be above the last one's: normally + 1); it may be called more
   * than once and may throw (the error is passed through, nothing is
   * appended). On a duplicate msgId, `acceptDuplicate(original)` decides:
   * true returns the original (default), false retries (the next proposal
   * should carry another msgId).
   *
   * Calls for one group are queued within this instance. The first
   * proposal may be made on the last event this instance appended, which
   * another process may have followed already (the compare-and-set then
   * fails and the next proposal sees the real last event); pass
   * `fresh: true` when a proposal may fail on what it is shown (a change
   * decided on a snapshot), so that it always sees the real last event.
   * Gives up with ChatError Unavailable after `maxAttempts` attempts or
   * `timeoutMs`.
   */
  async sequence(
    groupId: string,
    propose: (last: SequencedEvent | undefined) => Promise<Proposal> | Proposal,
    acceptDuplicate: (original: SequencedEvent) => boolean | Promise<boolean> = () => true,
    opts: { readonly fresh?: boolean } = {},
  ): Promise<SequenceResult> {
    return this.queued(groupId, async () => {
      const deadline = Date.now() + this.timeoutMs;
      const cached = opts.fresh ? undefined : this.lastAppended.get(groupId);
      let last = cached ?? (await this.last(groupId));
      let lastCause: unknown;
      // An "unknown" answer (timeout, reconnect) may hide a publish that was
      // stored: the same proposal is sent again (same event, expected
      // sequence and msgId), so JetStream answers "duplicate" with the original
      // instead of the proposal being decided anew on its own outcome.
      let resend: { p: Proposal; expected: number; change: SequencedEvent["change"] } | undefined;
      for (let attempt = 0; attempt < this.maxAttempts && Date.now() < deadline; attempt++) {
        const expected = resend?.expected ?? last?.streamSeq ?? 0;
        const change = resend ? resend.change : last?.change;
        const p = resend?.p ?? (await propose(last));
        const isResend = resend !== undefined;
        resend = undefined;
        if (p.event.groupId !== groupId || p.event.seq <= (last?.groupSeq ?? 0)) {
          throw new ChatError("Internal", `proposed seq ${p.event.seq} does not follow the last event`);
        }
        const outcome = await this.append(p.event, expected, p.msgId, { change, counts: p.counts });
        switch (outcome.status) {
          case "appended":
            this.remember(groupId, outcome.stored);
            return { stored: outcome.stored, duplicate: false };
          case "duplicate":
            if (isResend && outcome.original.msgId === p.msgId && outcome.original.event.seq === p.event.seq) {
              // Our own unanswered publish had been stored: it is this call's append, not an earlier call's.
              this.remember(groupId, outcome.original);
              return { stored: outcome.original, duplicate: false };
            }
            if (await acceptDuplicate(outcome.original)) return { stored: outcome.original, duplicate: true };
            // JetStream checks the msgId before the expected sequence: `last` may still be current.
            continue;
          case "conflict":
            lastCause = new Error(`wrong last sequence ${expected}`);
            break;
          case "unknown":
            lastCause = outcome.cause;
            resend = { p, expected, change };
            await sleep(Math.random() * Math.min(this.maxJitterMs, 2 ** attempt) + 50);
            continue;
        }
        this.lastAppended.delete(groupId);
        if (attempt > 0) await sleep(Math.random() * Math.min(this.maxJitterMs, 2 ** attempt));
        last = await this.last(groupId);
      }
      throw new ChatError("Unavailable", `could not sequence an event of group ${groupId}: too much contention or JetStream unreachable`, {
        cause: lastCause,
      });
    });
  }

  /** forget drops what the instance remembers of the group's last event (e.g. after an outside write). */
  forget(groupId: string): void {
    this.lastAppended.delete(groupId);
  }

  private remember(groupId: string, stored: SequencedEvent): void {
    this.lastAppended.delete(groupId);
    this.lastAppended.set(groupId, stored);
    if (this.lastAppended.size > LAST_CACHE_SIZE) {
      const oldest = this.lastAppended.keys().next().value;
      if (oldest !== undefined) this.lastAppended.delete(oldest);
    }
  }

  /** queued runs `fn` after every earlier queued call for `key` has finished. */
  private async queued<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release: () => void = () => {};
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    try {
      await prev;
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

/**
 * createJetStreamSequencer builds a sequencer on an open connection (the
 * timeline stream must exist: see ensureTimelineStream).
 */
export async function createJetStreamSequencer(
  nc: NatsConnection,
  prefix: string | undefined,
  opts: SequencerOptions = {},
): Promise<JetStreamSequencer> {
  const jsm = await jetstreamManager(nc, { timeout: opts.requestTimeoutMs ?? 5000 });
  return new JetStreamSequencer({ nc, jsm, names: new NatsNames(prefix) }, opts);
}

/** isChange tells whether an event changes membership or the group (anything but a message). */
export function isChange(event: GroupEvent): boolean {
  return event.body.type !== "message";
}

/**
 * parseSequenced rebuilds a SequencedEvent from a stored message (subject,
 * stream seq, headers, payload); undefined if the payload is not a
 * well-formed event of the subject's group or its Chat-Seq disagrees.
 */
export function parseSequenced(
  names: NatsNames,
  subject: string,
  streamSeq: number,
  header: MsgHdrs | undefined,
  data: Uint8Array,
): SequencedEvent | undefined {
  const event = decodeEvent(data);
  if (!event || names.groupIdOf(subject) !== event.groupId) return undefined;
  const seqText = header?.get(SEQ_HEADER) ?? "";
  if (seqText !== "" && positive(seqText) !== event.seq) return undefined;
  const counts = pair(header?.get(COUNTS_HEADER) ?? "");
  const changeHdr = pair(header?.get(CHANGE_HEADER) ?? "");
  const change = isChange(event)
    ? { groupSeq: event.seq, streamSeq }
    : changeHdr && changeHdr[0] >= 1 && changeHdr[0] < event.seq && changeHdr[1] >= 1 && changeHdr[1] < streamSeq
      ? { groupSeq: changeHdr[0], streamSeq: changeHdr[1] }
      : undefined;
  const prev = positive(header?.get(PREV_HEADER) ?? "");
  const msgId = header?.get("Nats-Msg-Id") ?? "";
  return {
    event,
    streamSeq,
    groupSeq: event.seq,
    prevStreamSeq: prev !== undefined && prev < streamSeq ? prev : 0,
    change,
    counts: counts && { memberCount: counts[0], ownerCount: counts[1] },
    msgId: msgId === "" ? undefined : msgId,
  };
}

function positive(text: string): number | undefined {
  if (!/^\d{1,15}$/.test(text)) return undefined;
  return Number(text);
}

function pair(text: string): [number, number] | undefined {
  const m = /^(\d{1,15}):(\d{1,15})$/.exec(text);
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2])];
}

const MSG_ID_SAFE = /^[\x21-\x7e]{1,64}$/;

/**
 * messageMsgId is the idempotency key (Nats-Msg-Id) of a send:
 * `msg:<groupId>:<senderId>:<clientMessageId>`, so a retried send is stored
 * once within the duplicate window. A client message id that is not 1-64
 * printable ASCII characters is replaced by its SHA-256 (hex).
 */
export function messageMsgId(groupId: string, senderId: string, clientMessageId: string): string {
  const cmid = MSG_ID_SAFE.test(clientMessageId)
    ? clientMessageId
    : `sha256-${createHash("sha256").update(clientMessageId).digest("hex")}`;
  return `msg:${groupId}:${senderId}:${cmid}`;
}

/**
 * storePublishesEvents wraps the bus of a deployment whose store sequences
 * events through JetStream (the Cassandra store): the store's append already
 * stored and fanned out each event on the bus's subject, so publishEvent is
 * a no-op (a second publish would be a second stream message with another
 * Nats-Msg-Id). Everything else is the wrapped bus.
 */
export function storePublishesEvents(bus: EventBus): EventBus {
  return {
    publishEvent: async (_event: GroupEvent): Promise<void> => {},
    subscribeGroup: (groupId: string, handler: (event: GroupEvent) => void): Promise<Subscription> =>
      bus.subscribeGroup(groupId, handler),
    publishUser: (userId: string, notice: UserNotice): Promise<void> => bus.publishUser(userId, notice),
    subscribeUser: (userId: string, handler: (notice: UserNotice) => void): Promise<Subscription> =>
      bus.subscribeUser(userId, handler),
    onResync: (handler: () => void): void => bus.onResync(handler),
    close: (): Promise<void> => bus.close(),
  };
}
