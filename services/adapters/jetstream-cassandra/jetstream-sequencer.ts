/**
 * JetStreamSequencer: a group's next seq from the JetStream timeline stream
 * (docs/production.md, "The write path").
 *
 * Each event of a group is stored on a subject of its own, its slot
 * `<prefix>.group.<groupId>.<seq>`, published with
 * `Nats-Expected-Last-Subject-Sequence: 0`: JetStream stores it only if the
 * slot is empty, so at most one event is ever stored per (group, seq). That
 * holds on a replicated (R3) stream under racing writers, where a non-zero
 * expected subject sequence does not on nats-server 2.9 (both racing
 * proposals were stored in 7-55 % of rounds; expected 0 was exclusive in
 * every round: jetstream-cluster.int.spec.ts). A writer proposes the seq
 * after the group's last event it knows (its remembered tail, or a direct
 * get `last_by_subj: <prefix>.group.<groupId>.*`); a taken slot ("conflict")
 * means another writer stored that seq, and the writer retries after the
 * real last event. The ack names the stream sequence once the event is
 * stored on the stream's quorum: that is a send's durability.
 *
 * Events are published with the NatsEventBus's codec, so the timeline stream
 * republishes each one it stores on `<prefix>.tail.<groupId>.<seq>`, where
 * the bus's subscribers (stream processes) receive it live: the stream's
 * republish is the fan-out, and a proposal JetStream refused (a taken slot, a
 * repeated msgId) reaches no subscriber. Callers must therefore not publish
 * the event again through the bus (see {@link storePublishesEvents}).
 *
 * Every sequenced message carries headers (all decimal):
 *
 * | header        | value                                                                |
 * |---------------|----------------------------------------------------------------------|
 * | `Chat-Seq`    | the event's group seq (also the slot's last token)                   |
 * | `Chat-Prev`   | stream seq of the previous event of the group (0: unknown)           |
 * | `Chat-Change` | `<groupSeq>:<streamSeq>` of the latest membership/rename event before it |
 * | `Chat-Counts` | `<memberCount>:<ownerCount>` after a member_* event                  |
 * | `Chat-Type`   | the event's type (`message`, `member_added`, ...)                    |
 *
 * `Chat-Change` lets a sender's membership check be reused while the group's
 * latest change stays the same, and chains the changes (on a change event it
 * names the previous change), so a writer can find the changes Cassandra
 * lacks by walking back; `Chat-Counts` lets anyone (the persister) write a
 * member_* event with its counts; `Chat-Type` lets a reader of the headers
 * alone (the tails below) tell a change from a message.
 *
 * Cost on the hot path. A sequencer remembers each group's last event (its
 * "tail": stream seq, group seq, latest change) and proposes on it without
 * reading it; once it sees contention (a conflict) it follows the stream's
 * republished tails for a minute (renewed while others keep appending to
 * its groups), keeping the tails of the groups it writes current, so an
 * append by another process costs no conflict unless the two race within a
 * round trip. Publishes and direct gets go through JsRequests (one inbox
 * subscription, no per-request timers or stack traces). Reads that must
 * see every acknowledged event (history, a duplicate's original) go to the
 * stream leader when a direct get, which any replica may answer, finds
 * nothing.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { createHash } from "node:crypto";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { Msg, MsgHdrs, NatsConnection, Subscription as NatsSubscription } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { ChatError } from "../../core/errors.js";
import type { GroupEvent } from "../../core/model.js";
import type { EventBus, Subscription, UserNotice } from "../../core/ports.js";
import { decodeEvent, encodeEvent } from "./nats-codec.js";
import { WRONG_LAST_SEQUENCE } from "./jetstream-streams.js";
import { JsRequests, RequestInterruptedError } from "./js-requests.js";
import { NatsNames } from "./subjects.js";

/** Header names of a sequenced event (see the module comment). */
export const SEQ_HEADER = "Chat-Seq";
export const PREV_HEADER = "Chat-Prev";
export const CHANGE_HEADER = "Chat-Change";
export const COUNTS_HEADER = "Chat-Counts";
export const TYPE_HEADER = "Chat-Type";

/** The JetStream API subject prefix (no JetStream domain). */
const JS_API = "$JS.API";
const EMPTY = new Uint8Array(0);
const TEXT = new TextDecoder();

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

/** Tail is what a writer needs to know of a group's last event to append after it. */
export interface Tail {
  /** The message's stream sequence. */
  readonly streamSeq: number;
  /** The event's group seq. */
  readonly groupSeq: number;
  /** The latest membership/rename event at or before this one (itself if it is one); undefined if unknown. */
  readonly change: ChangeRef | undefined;
}

/** SequencedEvent is a group event as stored in the timeline stream. */
export interface SequencedEvent extends Tail {
  readonly event: GroupEvent;
  /** The event's group seq (= event.seq). */
  readonly groupSeq: number;
  /** Stream sequence of the previous event on the subject; 0 if none or unknown. */
  readonly prevStreamSeq: number;
  /** Counts after the event (member_* events published by the sequencer). */
  readonly counts: EventCounts | undefined;
  /** The message's Nats-Msg-Id, if any. */
  readonly msgId: string | undefined;
  /**
   * For a membership event or rename: the latest change before it (its
   * `Chat-Change` header), so the group's changes form a chain a reader can
   * walk back; undefined for a message, for the group's first change, or if
   * its writer did not know.
   */
  readonly prevChange?: ChangeRef | undefined;
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
  /**
   * Another writer stored an event at this seq first (the slot is taken): retry after the real last event.
   * `lastStreamSeq` is the stream sequence of the event in the slot, as the server named it (if it did).
   */
  | { readonly status: "conflict"; readonly lastStreamSeq?: number }
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
  /**
   * Linger of the appends' publishes, in ms (default 0): appends made less
   * than this after the last batch of publishes went out wait for the next
   * batch (JsRequests `lingerMs`), so that under load nats-server gets them in
   * bursts and replicates them in fewer raft rounds. Adds at most this much
   * to an append's latency, nothing while appends are rarer than that.
   */
  readonly publishLingerMs?: number;
}

/** JetStreamSequencerParts is what the sequencer is built on. */
export interface JetStreamSequencerParts {
  readonly nc: NatsConnection;
  /** Kept for callers that have one; the sequencer talks to JetStream through its own requests. */
  readonly jsm?: JetStreamManager;
  readonly names: NatsNames;
}

/** SequencerStats counts what the sequencer did since it was built (for tests and profiling). */
export interface SequencerStats {
  /** Events appended. */
  readonly appended: number;
  /** Publishes refused because another writer appended first. */
  readonly conflicts: number;
  /** Retries after a conflict made on the republished tail, without reading the last event. */
  readonly tailRetries: number;
  /** Reads of a group's last event (direct get). */
  readonly lastReads: number;
  /** Tails taken from the republished headers. */
  readonly tailUpdates: number;
}

/** How long a read of a group's last event waits for the floor when the stream holds an event of the group, ms. */
const FLOOR_WAIT_MS = 250;

/** soonOr resolves with `p`'s value if it settles fulfilled within `ms`, else (late or rejected) with `fallback`. */
/**
 * newestSlot finds the highest seq in [floor, cap] whose slot `read` finds,
 * given that a group's stored slots are dense and expire oldest first (see
 * JetStreamSequencer.readNewest, whose rules it implements): the floor's slot,
 * or when it is empty and `floorIsHead` (or floor is 0) the one after it,
 * then galloping up to an empty slot and bisecting.
 */
async function newestSlot<T>(read: (seq: number) => Promise<T | undefined>, floor: number, cap: number, floorIsHead: boolean): Promise<T | undefined> {
  let lo = Math.max(0, Math.min(floor, cap));
  let best = lo >= 1 ? await read(lo) : undefined;
  if (best === undefined) {
    // The floor's slot expired (or there is no floor): above Cassandra's head the stream's newest slots start right after it.
    if (!(floorIsHead || lo === 0) || lo + 1 > cap) return undefined;
    best = await read(lo + 1);
    if (best === undefined) return undefined;
    lo += 1;
  }
  let missing = 0;
  for (let step = 1; missing === 0; step *= 2) {
    const probe = Math.min(lo + step, cap);
    if (probe <= lo) return best;
    const found = await read(probe);
    if (found === undefined) missing = probe;
    else {
      best = found;
      lo = probe;
    }
  }
  while (missing - lo > 1) {
    const mid = lo + Math.floor((missing - lo) / 2);
    const found = await read(mid);
    if (found === undefined) missing = mid;
    else {
      best = found;
      lo = mid;
    }
  }
  return best;
}

async function soonOr<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms);
  });
  try {
    return await Promise.race([p.catch(() => fallback), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * How many groups' last events the sequencer remembers (about 150 bytes each): more than the 10,000 active
 * groups the product is sized for, so a send to a group that was quiet for minutes still proposes on a known
 * tail instead of reading it (at 4,096, 100 msg/s spread over 10,000 groups read nearly every tail).
 */
const LAST_CACHE_SIZE = 65_536;

/** How long the sequencer follows the tails after it last saw contention (a conflict, another writer's append), ms. */
const TAILS_WANTED_MS = 60_000;

/**
 * JetStreamSequencer appends group events by compare-and-set on the group's
 * subject. Within one instance, sequence() calls for one group run one at a
 * time (a local queue), so compare-and-set conflicts only arise between
 * processes; the instance also remembers the tail (last event) of each group
 * it appends to, kept current from the stream's republished headers, saving
 * the read of the last message while it stays current (a stale tail only
 * costs one conflict).
 */
export class JetStreamSequencer {
  readonly names: NatsNames;
  private readonly nc: NatsConnection;
  private readonly api: JsRequests;
  /** The appends' publishes: `api` itself, or a JsRequests of their own with a linger (SequencerOptions.publishLingerMs). */
  private readonly publishes: JsRequests;
  private readonly maxAttempts: number;
  private readonly timeoutMs: number;
  private readonly maxJitterMs: number;
  private readonly queues = new Map<string, Promise<void>>();
  private readonly tails = new Map<string, Tail>();
  /** The Nats-Msg-Id of this instance's publish in flight, by group (to tell its own tails from others'). */
  private readonly publishing = new Map<string, string>();
  private tailSub: NatsSubscription | undefined;
  /** Until when the tail subscription is wanted (extended by contention: conflicts, others' appends). */
  private tailsWantedUntil = 0;
  private tailTimer: NodeJS.Timeout | undefined;
  private statusWatch: { stop(): void } | undefined;
  private closed = false;
  private readonly counters = { appended: 0, conflicts: 0, tailRetries: 0, lastReads: 0, tailUpdates: 0 };

  constructor(parts: JetStreamSequencerParts, opts: SequencerOptions = {}) {
    this.names = parts.names;
    this.nc = parts.nc;
    this.maxAttempts = opts.maxAttempts ?? 64;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.maxJitterMs = opts.maxJitterMs ?? 50;
    this.api = new JsRequests(parts.nc, opts.requestTimeoutMs ?? 5000);
    const linger = opts.publishLingerMs ?? 0;
    this.publishes = linger > 0 ? new JsRequests(parts.nc, opts.requestTimeoutMs ?? 5000, linger) : this.api;
  }

  /** stats returns the sequencer's counters. */
  stats(): SequencerStats {
    return { ...this.counters };
  }

  /**
   * last returns the group's last event in the timeline stream, or undefined
   * if its subject holds none (never written, or idle past the stream's
   * max_age). Throws ChatError Unavailable if JetStream cannot be asked, and
   * Internal if the last message is not a well-formed event of the group.
   */
  async last(groupId: string): Promise<SequencedEvent | undefined> {
    const subject = this.names.group(groupId);
    this.counters.lastReads++;
    const body = new TextEncoder().encode(JSON.stringify({ last_by_subj: subject }));
    const msg = await this.directGet(`${JS_API}.DIRECT.GET.${this.names.timelineStream}`, body, "the sequencer could not read the group's last event");
    if (!msg) return undefined;
    const stored = parseSequenced(this.names, msg.subject, msg.seq, msg.header, msg.data);
    if (!stored || stored.event.groupId !== groupId) {
      throw new ChatError("Internal", `the last message on ${subject} (stream seq ${msg.seq}) is not an event of the group`);
    }
    return stored;
  }

  /**
   * lastFrom is `last` found from `head`, the group's newest seq in
   * Cassandra (every seq Cassandra holds was stored first), by exact slot
   * reads (`at`: a direct get, and the leader when it finds nothing, so an
   * empty slot is the leader's answer): see readNewest. undefined if the
   * stream holds neither the head's slot nor any after it (a group idle past
   * max_age, or a stream that lost its tail: the next seq is head + 1).
   */
  lastFrom(groupId: string, head: number): Promise<SequencedEvent | undefined> {
    return newestSlot((seq) => this.at(groupId, seq), head, Number.MAX_SAFE_INTEGER, true);
  }

  /**
   * get returns the group's event stored at stream sequence `streamSeq`, or
   * undefined if the stream no longer holds it (or it belongs elsewhere).
   * Throws ChatError Unavailable if JetStream cannot be asked.
   */
  async get(groupId: string, streamSeq: number): Promise<SequencedEvent | undefined> {
    if (!Number.isSafeInteger(streamSeq) || streamSeq < 1) return undefined;
    const body = new TextEncoder().encode(JSON.stringify({ seq: streamSeq }));
    // A direct get may be answered by a replica a little behind the leader (a duplicate's original stored a
    // moment ago by another writer): when it has nothing, the leader is asked.
    const msg =
      (await this.directGet(`${JS_API}.DIRECT.GET.${this.names.timelineStream}`, body, "the sequencer could not read a stored event")) ??
      (await this.leaderGet({ seq: streamSeq }));
    if (!msg || this.names.groupIdOf(msg.subject) !== groupId) return undefined;
    const stored = parseSequenced(this.names, msg.subject, msg.seq, msg.header, msg.data);
    return stored?.event.groupId === groupId ? stored : undefined;
  }

  /**
   * at returns the group's event at group seq `seq` as the timeline stream
   * holds it (its slot subject), or undefined if the stream holds none there
   * (not written yet, or past the stream's max_age). Throws ChatError
   * Unavailable if JetStream cannot be asked.
   */
  async at(groupId: string, seq: number): Promise<SequencedEvent | undefined> {
    const subject = this.names.slot(groupId, seq);
    const body = new TextEncoder().encode(JSON.stringify({ last_by_subj: subject }));
    const msg =
      (await this.directGet(`${JS_API}.DIRECT.GET.${this.names.timelineStream}`, body, "the sequencer could not read a stored event")) ??
      (await this.leaderGet({ last_by_subj: subject }));
    if (!msg || msg.subject !== subject) return undefined;
    const stored = parseSequenced(this.names, msg.subject, msg.seq, msg.header, msg.data);
    return stored?.event.groupId === groupId && stored.groupSeq === seq ? stored : undefined;
  }

  /**
   * readLog answers history reads from the stream's leader (the JetStream
   * `STREAM.MSG.GET` API, not a direct get, which any replica may answer a
   * little behind), so an event acknowledged to a writer is seen by a read
   * started after the ack: `last` is the group's newest event, `first` its
   * oldest still in the stream, a number the event at that group seq.
   * Resolves undefined if the stream holds no such event. Throws ChatError
   * Unavailable if JetStream cannot be asked.
   */
  async readLog(groupId: string, which: "last" | "first" | number): Promise<GroupEvent | undefined> {
    const query =
      which === "last"
        ? { last_by_subj: this.names.group(groupId) }
        : which === "first"
          ? { seq: 1, next_by_subj: this.names.group(groupId) }
          : { last_by_subj: this.names.slot(groupId, which) };
    const m = await this.leaderGet(query);
    if (!m || this.names.groupIdOf(m.subject) !== groupId) return undefined;
    const event = decodeEvent(m.data);
    const slot = this.names.slotOf(m.subject);
    return event && event.groupId === groupId && event.seq === slot?.seq ? event : undefined;
  }

  /**
   * readNewest is readLog(groupId, "last") found by exact slot reads from a
   * floor instead of one `last_by_subj` on the wildcard `<prefix>.group.<g>.*`:
   * nats-server answers a wildcard by walking the stream's per-subject state
   * back to the group's last message, and with one subject per event that
   * walk is as long as the stream after it (measured on nats-server 2.9 with
   * 100,000 events of 10,000 groups on R3: 3-17 ms a read for a group whose
   * last event is old, against 0.6 ms for one exact slot). `floor` is a seq
   * the stream stored (Cassandra holds only stored events: its head, or a
   * seq it returned). A group's slots in the stream are dense and expire
   * oldest first, so from the floor it gallops up to the first empty slot
   * and bisects: about 2·log2(lag) reads, where the lag is what Cassandra
   * does not hold yet. When the floor's slot expired, the answer is
   * undefined, unless `floorIsHead` says the floor is Cassandra's newest
   * event of the group: then the stream's newer events, if any, start right
   * above it (the one after it is older than any Cassandra lacks, unless the
   * persister lagged past the stream's max_age, when history is lost anyway).
   * With `cap`, slots above it are not read (the event at `cap` is then the
   * answer when stored). Every read goes to the leader, so an event
   * acknowledged before the call is at or below the answer, as for readLog.
   * Resolves undefined if the stream holds no event of the group above the
   * floor, nor the floor (an idle group: its events expired from the stream).
   */
  readNewest(groupId: string, floor: number, cap = Number.MAX_SAFE_INTEGER, floorIsHead = false): Promise<GroupEvent | undefined> {
    return newestSlot((seq) => this.readLog(groupId, seq), floor, cap, floorIsHead);
  }

  /**
   * readOldestFrom returns the group's oldest event in the stream with seq in
   * [lo, hi], given that the stream stores the event at `hi` (its slots are
   * dense and expire oldest first): a bisection of exact slot reads, where
   * readLog(groupId, "first") (`next_by_subj` on the wildcard from stream
   * seq 1) walks the stream from its start. undefined if `hi` is not stored.
   */
  async readOldestFrom(groupId: string, lo: number, hi: number): Promise<GroupEvent | undefined> {
    let top = await this.readLog(groupId, hi);
    if (!top) return undefined;
    const bottom = lo <= hi - 1 && lo >= 1 ? await this.readLog(groupId, lo) : undefined;
    if (bottom) return bottom;
    let empty = Math.max(0, lo);
    let stored = hi;
    while (stored - empty > 1) {
      const mid = empty + Math.floor((stored - empty) / 2);
      const e = await this.readLog(groupId, mid);
      if (e) {
        top = e;
        stored = mid;
      } else empty = mid;
    }
    return top;
  }

  /**
   * leaderGet reads one stored message through the stream leader (the
   * `STREAM.MSG.GET` API); undefined if the stream has none (404). Throws
   * ChatError Unavailable if JetStream cannot be asked or refuses.
   */
  private async leaderGet(query: Record<string, unknown>): Promise<{ subject: string; seq: number; header: MsgHdrs; data: Uint8Array } | undefined> {
    let reply: Msg;
    const subject = `${JS_API}.STREAM.MSG.GET.${this.names.timelineStream}`;
    const body = new TextEncoder().encode(JSON.stringify(query));
    try {
      reply = await this.api.request(subject, body).catch((e: unknown) => {
        if (e instanceof RequestInterruptedError) return this.api.request(subject, body);
        throw e;
      });
    } catch (e) {
      throw new ChatError("Unavailable", "could not read the group's timeline from JetStream", { cause: e });
    }
    let answer: { message?: { subject?: unknown; seq?: unknown; data?: unknown; hdrs?: unknown }; error?: { code?: unknown; description?: unknown } };
    try {
      answer = JSON.parse(TEXT.decode(reply.data));
    } catch (e) {
      throw new ChatError("Unavailable", "JetStream answered a timeline read with something else than JSON", { cause: e });
    }
    if (answer.error) {
      if (answer.error.code === 404) return undefined;
      throw new ChatError("Unavailable", "JetStream refused a timeline read", { cause: new Error(`${answer.error.code} ${answer.error.description}`) });
    }
    const m = answer.message;
    if (!m || typeof m.subject !== "string" || typeof m.seq !== "number") return undefined;
    const header = natsHeaders();
    if (typeof m.hdrs === "string") {
      // "NATS/1.0\r\nName: value\r\n...\r\n\r\n"
      for (const line of Buffer.from(m.hdrs, "base64").toString("utf8").split("\r\n").slice(1)) {
        const colon = line.indexOf(":");
        if (colon > 0) header.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
      }
    }
    return { subject: m.subject, seq: m.seq, header, data: typeof m.data === "string" ? Buffer.from(m.data, "base64") : EMPTY };
  }

  /**
   * append publishes `event` on its slot subject (`<prefix>.group.<g>.<seq>`)
   * if that slot is empty (`Nats-Expected-Last-Subject-Sequence: 0`, which is
   * exclusive on a replicated stream too), with Nats-Msg-Id `msgId` and the
   * headers of the module comment; `prevStreamSeq` is the stream seq of the
   * event at seq - 1 if known (0 if not), for `Chat-Prev`. Distinguishes a
   * taken slot ("conflict": another writer stored this seq), a repeated msgId
   * ("duplicate", with the stored original) and no answer ("unknown"); any
   * other refusal throws ChatError Unavailable.
   */
  async append(event: GroupEvent, prevStreamSeq: number, msgId: string, extras: AppendExtras = {}): Promise<AppendOutcome> {
    const subject = this.names.slot(event.groupId, event.seq);
    const h = natsHeaders();
    h.set(SEQ_HEADER, String(event.seq));
    h.set(PREV_HEADER, String(prevStreamSeq));
    h.set(TYPE_HEADER, event.body.type);
    if (extras.change) h.set(CHANGE_HEADER, `${extras.change.groupSeq}:${extras.change.streamSeq}`);
    if (extras.counts) h.set(COUNTS_HEADER, `${extras.counts.memberCount}:${extras.counts.ownerCount}`);
    h.set("Nats-Msg-Id", msgId);
    h.set("Nats-Expected-Last-Subject-Sequence", "0");
    let reply: Msg;
    try {
      reply = await this.publishes.request(subject, encodeEvent(event), h);
    } catch (e) {
      return { status: "unknown", cause: e };
    }
    const ack = readPubAck(reply);
    switch (ack.kind) {
      case "unknown":
        return { status: "unknown", cause: ack.cause };
      case "error":
        if (ack.errCode === WRONG_LAST_SEQUENCE) {
          const m = /wrong last sequence: (\d{1,15})/.exec(ack.description);
          return m ? { status: "conflict", lastStreamSeq: Number(m[1]) } : { status: "conflict" };
        }
        throw new ChatError("Unavailable", "the timeline stream refused the event", {
          cause: new Error(`JetStream error ${ack.errCode}: ${ack.description}`),
        });
      case "ok":
        break;
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
        prevStreamSeq,
        change: isChange(event) ? { groupSeq: event.seq, streamSeq: ack.seq } : extras.change,
        counts: extras.counts,
        msgId,
        prevChange: isChange(event) ? extras.change : undefined,
      },
    };
  }

  /**
   * sequence appends one event to the group by compare-and-set, retrying
   * until it is stored: `propose` is called with the group's last event (its
   * tail; undefined if the subject is empty) and a floor for the next seq,
   * and returns the event to append after it (its seq must be above the
   * last one's: normally max(last, floor) + 1); it may be called more than
   * once and may throw (the error is passed through, nothing is appended).
   * The floor is what `opts.floor` resolved to when the last event had to be
   * read from the stream (asked at the same time; waited for at most
   * FLOOR_WAIT_MS, else 0, when the stream holds an event of the group), and
   * 0 when the proposal is made on a remembered tail (a tail this instance
   * appended or saw stored).
   * On a duplicate msgId, `acceptDuplicate(original)` decides: true returns
   * the original (default), false retries (the next proposal should carry
   * another msgId).
   *
   * Calls for one group are queued within this instance. The first
   * proposal may be made on a remembered tail, which another process may
   * have followed already (the compare-and-set then fails and the next
   * proposal sees the real last event); pass `fresh: true` when a proposal
   * may fail on what it is shown (a change decided on a snapshot), so that
   * it always sees the real last event, read from the stream (a
   * SequencedEvent). Gives up with ChatError Unavailable after `maxAttempts`
   * attempts or `timeoutMs`.
   */
  async sequence(
    groupId: string,
    propose: (last: Tail | undefined, floor: number) => Promise<Proposal> | Proposal,
    acceptDuplicate: (original: SequencedEvent) => boolean | Promise<boolean> = () => true,
    opts: { readonly fresh?: boolean; readonly floor?: () => Promise<number> } = {},
  ): Promise<SequenceResult> {
    this.names.group(groupId);
    this.watchStatus();
    return this.queued(groupId, async () => {
      const deadline = Date.now() + this.timeoutMs;
      const read = async (): Promise<{ last: Tail | undefined; floor: number }> => {
        const asked = opts.floor ? opts.floor() : Promise.resolve(0);
        asked.catch(() => {});
        if (opts.floor) {
          // The floor (Cassandra's head) in time: the last event is found from it by exact slots (lastFrom), not
          // by the wildcard read, which costs the stream's leader a walk back to the group's last message.
          const head = await soonOr<number | undefined>(asked, FLOOR_WAIT_MS, undefined);
          if (head !== undefined) return { last: await this.lastFrom(groupId, head), floor: head };
        }
        const last = await this.last(groupId);
        // The stream holds the group's last event: the floor only guards against a quorum's lost data, so an
        // append does not wait on the floor's source (Cassandra) beyond FLOOR_WAIT_MS. An empty subject (a group
        // idle past max_age) needs the floor: its seq continues from it.
        const floor = last ? await soonOr(asked, FLOOR_WAIT_MS, 0) : await asked;
        return { last, floor };
      };
      const cached = opts.fresh ? undefined : this.tails.get(groupId);
      let { last, floor } = cached ? { last: cached as Tail | undefined, floor: 0 } : await read();
      let lastCause: unknown;
      // An "unknown" answer (timeout, reconnect) may hide a publish that was
      // stored: the same proposal is sent again (same event, expected
      // sequence and msgId), so JetStream answers "duplicate" with the original
      // instead of the proposal being decided anew on its own outcome.
      let resend: { p: Proposal; expected: number; change: Tail["change"] } | undefined;
      for (let attempt = 0; attempt < this.maxAttempts && Date.now() < deadline; attempt++) {
        const expected = resend?.expected ?? last?.streamSeq ?? 0;
        const change = resend ? resend.change : last?.change;
        const p = resend?.p ?? (await propose(last, floor));
        const isResend = resend !== undefined;
        resend = undefined;
        if (p.event.groupId !== groupId || p.event.seq <= (last?.groupSeq ?? 0)) {
          throw new ChatError("Internal", `proposed seq ${p.event.seq} does not follow the last event`);
        }
        this.publishing.set(groupId, p.msgId);
        let outcome: AppendOutcome;
        try {
          const prev = last && p.event.seq === last.groupSeq + 1 ? expected : 0;
          outcome = await this.append(p.event, prev, p.msgId, { change, counts: p.counts });
        } finally {
          this.publishing.delete(groupId);
        }
        switch (outcome.status) {
          case "appended":
            this.counters.appended++;
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
          case "conflict": {
            this.counters.conflicts++;
            lastCause = new Error(`seq ${p.event.seq} of group ${groupId} is taken`);
            // Another process appends to this group: follow the tails for a while (changes read afresh anyway).
            if (!opts.fresh) this.wantTails();
            // The republished tail usually arrives before the refusal: retry on it at once.
            const known = opts.fresh ? undefined : this.tails.get(groupId);
            if (known && known.groupSeq >= p.event.seq) {
              this.counters.tailRetries++;
              last = known;
              floor = 0;
              continue;
            }
            break;
          }
          case "unknown":
            lastCause = outcome.cause;
            resend = { p, expected, change };
            await sleep(Math.random() * Math.min(this.maxJitterMs, 2 ** attempt) + 50);
            continue;
        }
        this.tails.delete(groupId);
        if (attempt > 0) await sleep(Math.random() * Math.min(this.maxJitterMs, 2 ** attempt));
        ({ last, floor } = await read());
      }
      throw new ChatError("Unavailable", `could not sequence an event of group ${groupId}: too much contention or JetStream unreachable`, {
        cause: lastCause,
      });
    });
  }

  /**
   * tailOf returns the group's last event as this instance remembers it
   * (what the next append will be proposed on), or undefined. A guess: the
   * compare-and-set decides.
   */
  tailOf(groupId: string): Tail | undefined {
    return this.tails.get(groupId);
  }

  /** forget drops what the instance remembers of the group's last event (e.g. after an outside write). */
  forget(groupId: string): void {
    this.tails.delete(groupId);
  }

  /** close stops listening for tails and fails pending requests; appends after it fail. Idempotent; leaves the connection open. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.api.close();
    this.publishes.close();
    this.statusWatch?.stop();
    this.dropTailSubscription();
    this.tails.clear();
  }

  private remember(groupId: string, stored: Tail): void {
    this.tails.delete(groupId);
    this.tails.set(groupId, { streamSeq: stored.streamSeq, groupSeq: stored.groupSeq, change: stored.change });
    if (this.tails.size > LAST_CACHE_SIZE) {
      const oldest = this.tails.keys().next().value;
      if (oldest !== undefined) this.tails.delete(oldest);
    }
  }

  /**
   * wantTails makes sure the instance follows the republished headers of
   * every stored event (the tails) for the next TAILS_WANTED_MS. Only wanted
   * under contention (another process appends to the same groups): a lone
   * writer never conflicts and would only pay for reading its own tails.
   */
  private wantTails(): void {
    if (this.closed) return;
    this.tailsWantedUntil = Date.now() + TAILS_WANTED_MS;
    if (this.tailSub) return;
    this.tailSub = this.nc.subscribe(this.names.allTails, {
      callback: (err, m) => {
        if (!err) this.onTail(m);
      },
    });
    this.tailTimer = setInterval(() => {
      if (Date.now() > this.tailsWantedUntil) this.dropTailSubscription();
    }, TAILS_WANTED_MS / 4);
    this.tailTimer.unref();
  }

  private dropTailSubscription(): void {
    clearInterval(this.tailTimer);
    this.tailTimer = undefined;
    const sub = this.tailSub;
    this.tailSub = undefined;
    try {
      sub?.unsubscribe();
    } catch {
      // The connection is closed already.
    }
  }

  /**
   * watchStatus forgets every tail when the connection drops (once started,
   * on the first append): a server that lost its unsynced tail reuses stream
   * sequences, so a remembered one could name another message.
   */
  private watchStatus(): void {
    if (this.statusWatch || this.closed) return;
    const status = this.nc.status();
    // nats.js's status iterator can be stopped (QueuedIterator), though its type does not say so.
    this.statusWatch = { stop: () => (status as { stop?: () => void }).stop?.() };
    void (async () => {
      try {
        for await (const s of status) {
          if (this.closed) return;
          if (s.type === "disconnect" || s.type === "reconnect") this.tails.clear();
        }
      } catch {
        // The connection closed: nothing to watch.
      }
    })();
  }

  /** onTail takes a republished event's headers as the new tail of its group, if this instance follows the group. */
  private onTail(m: Msg): void {
    const groupId = this.names.groupIdOfTail(m.subject);
    if (groupId === undefined) return;
    const current = this.tails.get(groupId);
    if (!current) return;
    const h = m.headers;
    const streamSeq = positive(h?.get("Nats-Sequence") ?? "");
    if (streamSeq === undefined || streamSeq < current.streamSeq) return;
    const tail = h && parseTail(h, streamSeq);
    if (tail && streamSeq === current.streamSeq && tail.groupSeq === current.groupSeq) return;
    this.counters.tailUpdates++;
    // Another process appended to a group this one writes: contention goes on.
    if (h?.get("Nats-Msg-Id") !== this.publishing.get(groupId)) this.tailsWantedUntil = Date.now() + TAILS_WANTED_MS;
    // Map.set on a present key keeps its place: a tail seen does not make the group recently used.
    if (tail) this.tails.set(groupId, tail);
    else this.tails.delete(groupId);
  }

  /** directGet asks the stream for one message; undefined if it has none (404). */
  private async directGet(
    subject: string,
    body: Uint8Array,
    failure: string,
  ): Promise<{ subject: string; seq: number; header: MsgHdrs; data: Uint8Array } | undefined> {
    let reply: Msg;
    try {
      // A read changes nothing: one cut off by a lost connection is asked again (held until the reconnect).
      reply = await this.api.request(subject, body).catch((e: unknown) => {
        if (e instanceof RequestInterruptedError) return this.api.request(subject, body);
        throw e;
      });
    } catch (e) {
      throw new ChatError("Unavailable", failure, { cause: e });
    }
    const header = reply.headers;
    if (header?.code === 404) return undefined;
    if (!header || header.code !== 0) {
      throw new ChatError("Unavailable", failure, { cause: new Error(`direct get answered ${header?.code ?? "without headers"} ${header?.description ?? ""}`) });
    }
    const seq = positive(header.get("Nats-Sequence"));
    const msgSubject = header.get("Nats-Subject");
    if (seq === undefined || msgSubject === "") {
      throw new ChatError("Unavailable", failure, { cause: new Error("direct get answered without Nats-Sequence or Nats-Subject") });
    }
    return { subject: msgSubject, seq, header, data: reply.data };
  }

  /** queued runs `fn` after every earlier queued call for `key` has finished. */
  private async queued<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(key) ?? Promise.resolve();
    let release: () => void = () => {};
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = prev.then(() => mine);
    this.queues.set(key, tail);
    try {
      await prev;
      return await fn();
    } finally {
      release();
      if (this.queues.get(key) === tail) this.queues.delete(key);
    }
  }
}

/** PubAck is what a JetStream publish was answered with. */
type PubAck =
  | { readonly kind: "ok"; readonly seq: number; readonly duplicate: boolean }
  | { readonly kind: "error"; readonly errCode: number; readonly description: string }
  | { readonly kind: "unknown"; readonly cause: unknown };

/** readPubAck interprets the reply to a JetStream publish (503: no JetStream listening, so nothing was stored). */
function readPubAck(reply: Msg): PubAck {
  const code = reply.headers?.code ?? 0;
  if (code !== 0) return { kind: "unknown", cause: new Error(`JetStream publish answered ${code} ${reply.headers?.description ?? ""}`) };
  let body: unknown;
  try {
    body = JSON.parse(TEXT.decode(reply.data));
  } catch (e) {
    return { kind: "unknown", cause: e };
  }
  const b = body as { seq?: unknown; duplicate?: unknown; error?: { err_code?: unknown; code?: unknown; description?: unknown } };
  if (b.error) {
    const errCode = typeof b.error.err_code === "number" ? b.error.err_code : typeof b.error.code === "number" ? b.error.code : 0;
    return { kind: "error", errCode, description: typeof b.error.description === "string" ? b.error.description : "" };
  }
  if (typeof b.seq !== "number" || !Number.isSafeInteger(b.seq) || b.seq < 1) {
    return { kind: "unknown", cause: new Error("JetStream publish answered without a sequence") };
  }
  return { kind: "ok", seq: b.seq, duplicate: b.duplicate === true };
}

/** parseTail reads a group's tail from a republished event's headers; undefined if they do not say enough. */
export function parseTail(h: MsgHdrs, streamSeq: number): Tail | undefined {
  const groupSeq = positive(h.get(SEQ_HEADER));
  const type = h.get(TYPE_HEADER);
  if (groupSeq === undefined || type === "") return undefined;
  if (type !== "message") return { streamSeq, groupSeq, change: { groupSeq, streamSeq } };
  const c = pair(h.get(CHANGE_HEADER));
  const change = c && c[0] >= 1 && c[0] < groupSeq && c[1] >= 1 && c[1] < streamSeq ? { groupSeq: c[0], streamSeq: c[1] } : undefined;
  return { streamSeq, groupSeq, change };
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

/** sameChange tells whether two change references name the same event (both undefined: no change known). */
export function sameChange(a: ChangeRef | undefined, b: ChangeRef | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.streamSeq === b.streamSeq && a.groupSeq === b.groupSeq);
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
  const slot = names.slotOf(subject);
  if (!event || slot?.groupId !== event.groupId || slot.seq !== event.seq) return undefined;
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
  const prevChange =
    isChange(event) && changeHdr && changeHdr[0] >= 1 && changeHdr[0] < event.seq && changeHdr[1] >= 1 && changeHdr[1] < streamSeq
      ? { groupSeq: changeHdr[0], streamSeq: changeHdr[1] }
      : undefined;
  return {
    event,
    streamSeq,
    groupSeq: event.seq,
    prevStreamSeq: prev !== undefined && prev < streamSeq ? prev : 0,
    change,
    counts: counts && { memberCount: counts[0], ownerCount: counts[1] },
    msgId: msgId === "" ? undefined : msgId,
    prevChange,
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
 * stored each event on the bus's subject, and the stream's republish fans
 * it out to the bus's subscribers, so publishEvent is a no-op (a second
 * publish would be a second stream message with another Nats-Msg-Id).
 * Everything else is the wrapped bus.
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
