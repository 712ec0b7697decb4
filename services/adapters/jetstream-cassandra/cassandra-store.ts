/**
 * CassandraStore: the production Store. Every group event takes its seq
 * from the JetStream timeline stream (JetStreamSequencer), whose ack makes
 * it durable; Cassandra (or ScyllaDB) keeps the history, written by the
 * persister (docs/production.md; README.md of this folder):
 *
 * 1. know the group's last event (stream seq S, group seq N): the
 *    sequencer's remembered tail, or found from head_seq in Cassandra by
 *    exact slot reads (JetStreamSequencer.lastFrom; an empty slot after
 *    it means N = head_seq, which is also a floor for N, should JetStream
 *    ever lose a tail of acknowledged events that Cassandra holds);
 * 2. publish the event with seq N + 1 on its slot subject, expecting the
 *    slot empty (a lost race retries from 1; a duplicate Nats-Msg-Id
 *    returns the original); the stream's ack is the write's durability;
 * 3. a membership event or rename is written to Cassandra by this process
 *    at once (idempotent, seq-stamped: GroupTables.writeChange), so the next
 *    change decides on it; a message is not: the persister (persister.ts)
 *    is the one writer of messages, and writes changes again;
 * 4. return. The stream republished what step 2 stored to every stream
 *    process (NatsEventBus subscribes to that republish, never to the
 *    publish itself), so the services' own `bus.publishEvent` must be a
 *    no-op (`storePublishesEvents`, wired in server/backends.ts).
 *
 * Reads merge Cassandra with the events the stream holds that Cassandra
 * does not yet (the persister's lag): see readEvents.
 *
 * - appendMessage checks membership (as of the group's latest change and
 *   reused while it stays the latest, see memberAsOf), then sequences (on
 *   the group's remembered tail, or on the last event found from head_seq
 *   when there is none) with Nats-Msg-Id
 *   `msg:<group>:<sender>:<client message id>`, so a retry racing the
 *   original (or following a crash after the publish) is deduped by
 *   JetStream within its duplicate window.
 * - changeGroup decides on a snapshot that matches the sequence: after
 *   step 1 it makes sure Cassandra holds the changes up to N (writing the
 *   ones it lacks from JetStream, found by walking the `Chat-Change` chain
 *   back), reads the snapshot, runs `decide`, and publishes after N: a
 *   concurrent event forces a retry on a fresh snapshot. The counts it
 *   writes come from that snapshot plus the change, and travel with the
 *   event (`Chat-Counts`).
 * - createGroup writes the group to Cassandra first (nobody else can
 *   sequence on a fresh id, and the name and epoch are not in the event),
 *   then publishes seq 1 on an empty slot.
 * - Retention: rows expire by the tables' TTL, so purgeExpired deletes
 *   nothing and returns 0; reads hide expired events by the injected clock.
 * - Read state, devices and the push ledger go straight to their tables
 *   (read-state-tables.ts, device-tables.ts, push-ledger-tables.ts);
 *   countUnread counts over readEvents, so it sees what the persister has
 *   not written yet.
 */
import { randomUUID } from "node:crypto";
import cassandra from "cassandra-driver";
import type { Client } from "cassandra-driver";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { ChatError, groupNotFound, tooManyGroups } from "../../core/errors.js";
import type {
  ChatMessage,
  Device,
  EventBody,
  Group,
  GroupEvent,
  Member,
  MemberReadState,
  Membership,
  NotifySetting,
  RefreshTokenRecord,
  User,
  UserCredentials,
  UserRef,
} from "../../core/model.js";
import type {
  AppendResult,
  Clock,
  GroupChange,
  GroupSnapshot,
  MessageDraft,
  MessagePage,
  NewGroup,
  RetainedEdge,
  Store,
} from "../../core/ports.js";
import { JetStreamSequencer, messageMsgId, sameChange } from "./jetstream-sequencer.js";
import type { ChangeRef, Proposal, SequencedEvent, SequencerOptions, Tail } from "./jetstream-sequencer.js";
import { ensureTimelineStream } from "./jetstream-streams.js";
import type { TimelineOptions } from "./jetstream-streams.js";
import { NatsNames } from "./subjects.js";
import { mapLimit } from "../../core/map-limit.js";
import { createCassandraTables } from "./cassandra-tables.js";
import type { CassandraTables } from "./cassandra-tables.js";
import type { MessageEvent } from "./event-tables.js";
import type { GroupCounts, GroupState } from "./group-tables.js";
import { cassandraClientOptions, parseCassandraUrl } from "./cassandra-url.js";
import { createKeyspace, migrate } from "./migrations.js";
import type { MigrateResult } from "./migrations.js";
import { persistEvent } from "./persister.js";

/** CassandraStoreOptions configures createCassandraStore. */
export interface CassandraStoreOptions {
  /** `cassandra://host[:port][,host...]/keyspace[?dc=...&replication=...]` (see cassandra-url.ts). */
  readonly url: string;
  /** Events older than now - retentionMs are invisible to reads (and expire by the tables' TTL). */
  readonly retentionMs: number;
  /** Source of "now" for retention. */
  readonly clock: Clock;
  /** Lifetime of issued refresh tokens (REFRESH_TOKEN_TTL); see CassandraTablesOptions.refreshTtlMs. */
  readonly refreshTtlMs: number;
  /** NATS: servers to connect to (the store owns that connection), or an open connection to share. */
  readonly nats: { readonly servers: string | readonly string[]; readonly name?: string } | { readonly connection: NatsConnection };
  /** NATS prefix (NatsNames; default "chat"); the same as the event bus's. */
  readonly prefix?: string;
  /** Create the keyspace and apply pending migrations first (default false). */
  readonly migrate?: boolean;
  /** Timeline stream settings, used when ensuring the stream (must match the bus's). */
  readonly timeline?: TimelineOptions;
  /** Create or update the timeline stream at start (default true). */
  readonly ensureStream?: boolean;
  /** Retry bounds of the sequencer. */
  readonly sequencer?: SequencerOptions;
}

/** CassandraStoreParts is what a CassandraStore is built on (see createCassandraStore). */
export interface CassandraStoreParts {
  readonly tables: CassandraTables;
  readonly sequencer: JetStreamSequencer;
  readonly nc: NatsConnection;
  readonly client: Client;
  readonly clock: Clock;
  readonly retentionMs: number;
  /** Releases what the store owns (connections); called once by close(). */
  readonly release: () => Promise<void>;
}

/**
 * How long a sender's membership check is reused for later sends while the
 * group's latest change stays the one it was made as of, ms: membership
 * only changes with a change event, so the check holds exactly as long as
 * that change is the latest; the bound only limits what is remembered.
 */
const MEMBER_CHECK_TTL_MS = 300_000;

/** How long a check made without knowing the group's latest change is reused, ms. */
const UNANCHORED_CHECK_TTL_MS = 2_000;

/** Most changes a change writes from JetStream before deciding (more is the persister's to write). */
const MAX_CATCH_UP = 1_000;

/** Most events of the timeline stream firstRetained looks at for the oldest retained one. */
const MAX_EDGE_SCAN = 64;

/** Most events one read fetches from the timeline stream to fill what Cassandra does not hold yet. */
const MAX_LOG_FILL = 1_024;

/** How many senders' membership checks are kept. */
const MEMBER_CHECKS = 100_000;

/** Most events one page of countUnread reads. */
const UNREAD_PAGE = 1_000;

/** Least events one page of countUnread reads (so a small cap among many other events takes few pages). */
const UNREAD_MIN_PAGE = 32;

/** MemberCheck is a sender found to be a member of a group as of `change` (the group's latest change then). */
interface MemberCheck {
  readonly change: ChangeRef | undefined;
  /** When it was read (ms). */
  readonly at: number;
}

/** CassandraStore implements Store on Cassandra + the JetStream sequencer (see the module comment). */
export class CassandraStore implements Store {
  readonly tables: CassandraTables;
  readonly sequencer: JetStreamSequencer;
  /** The NATS connection the sequencer uses (for the persister). */
  readonly nc: NatsConnection;
  private readonly client: Client;
  private readonly clock: Clock;
  private readonly retentionMs: number;
  private readonly release: () => Promise<void>;
  /** Cassandra writes in progress, by group: a change waits for this process's own before it decides. */
  private readonly writing = new Map<string, Set<Promise<void>>>();
  /** Recent membership checks of senders, by `<group>/<user>` (see memberAsOf). */
  private readonly memberChecks = new Map<string, MemberCheck>();
  private closing: Promise<void> | undefined;

  constructor(parts: CassandraStoreParts) {
    this.tables = parts.tables;
    this.sequencer = parts.sequencer;
    this.nc = parts.nc;
    this.client = parts.client;
    this.clock = parts.clock;
    this.retentionMs = parts.retentionMs;
    this.release = parts.release;
  }

  /** names are the NATS names the store sequences on. */
  get names(): NatsNames {
    return this.sequencer.names;
  }

  /** isHealthy tells whether the store reaches a Cassandra host and NATS (for health checks). */
  isHealthy(): boolean {
    return !this.closing && !this.nc.isClosed() && this.client.getState().getConnectedHosts().length > 0;
  }

  // ---- users and refresh tokens: straight to the tables ----

  createUser(user: UserCredentials): Promise<void> {
    return this.tables.users.createUser(user);
  }

  findUserByName(username: string): Promise<UserCredentials | undefined> {
    return this.tables.users.findUserByName(username);
  }

  getUser(userId: string): Promise<User | undefined> {
    return this.tables.users.getUser(userId);
  }

  insertRefreshToken(record: RefreshTokenRecord): Promise<void> {
    return this.tables.users.insertRefreshToken(record);
  }

  findRefreshToken(tokenHash: string): Promise<RefreshTokenRecord | undefined> {
    return this.tables.users.findRefreshToken(tokenHash);
  }

  markRefreshTokenUsed(tokenHash: string, at: number): Promise<boolean> {
    return this.tables.users.markRefreshTokenUsed(tokenHash, at);
  }

  revokeRefreshFamily(familyId: string, at: number): Promise<void> {
    return this.tables.users.revokeRefreshFamily(familyId, at);
  }

  isSessionRevoked(familyId: string): Promise<boolean> {
    return this.tables.users.isSessionRevoked(familyId);
  }

  // ---- groups ----

  async createGroup(group: NewGroup): Promise<GroupEvent> {
    this.names.group(group.id); // rejects an id that cannot be a subject token before anything is written
    // Not serialised with the owner's other joins (see GroupStore): concurrent ones may pass together.
    const maxGroups = group.maxOwnerGroups;
    if (maxGroups !== undefined && (await this.tables.groups.countMemberships(group.owner.id, maxGroups)) >= maxGroups) {
      throw tooManyGroups(undefined, maxGroups);
    }
    const event = await this.tables.groups.createGroup(group);
    const msgId = this.names.msgId(group.id, 1);
    const counts = { memberCount: 1, ownerCount: 1 };
    let cause: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const outcome = await this.sequencer.append(event, 0, msgId, { counts });
      switch (outcome.status) {
        case "appended":
          return event;
        case "duplicate":
          return outcome.original.event;
        case "conflict": {
          const last = await this.sequencer.last(group.id);
          if (last?.groupSeq === 1 && last.msgId === msgId) return last.event;
          throw new ChatError("AlreadyExists", `group ${group.id} already has events`);
        }
        case "unknown":
          cause = outcome.cause;
          await new Promise((r) => setTimeout(r, 100 * (attempt + 1)));
          break;
      }
    }
    // The group is durable in Cassandra already; its seq-1 publish is only
    // a hint (sends on an empty subject take head_seq from Cassandra, and the
    // owner's streams replay from the store). Failing here would make a
    // retrying client create a second group.
    void cause;
    return event;
  }


  getMember(groupId: string, userId: string): Promise<Member | undefined> {
    return this.tables.groups.getMember(groupId, userId);
  }

  listMembers(groupId: string, afterUserId: string, limit: number): Promise<Member[]> {
    return this.tables.groups.listMembers(groupId, afterUserId, limit);
  }

  listMemberships(userId: string, afterGroupId: string, limit: number): Promise<Membership[]> {
    return this.tables.groups.listMemberships(userId, afterGroupId, limit);
  }

  listGroupIdsOf(userId: string, afterGroupId: string, limit: number): Promise<string[]> {
    return this.tables.groups.listGroupIdsOf(userId, afterGroupId, limit);
  }

  countMemberships(userId: string, upTo: number): Promise<number> {
    return this.tables.groups.countMemberships(userId, upTo);
  }

  async changeGroup(
    groupId: string,
    userIds: readonly string[],
    actor: UserRef,
    at: number,
    decide: (snapshot: GroupSnapshot) => GroupChange,
  ): Promise<GroupEvent> {
    this.names.group(groupId);
    // One key per call: a retry after a lost ack is recognised as this call's own event.
    const msgId = `chg:${groupId}:${randomUUID()}`;
    const asked = new Set(userIds);
    const propose = async (tail: Tail | undefined): Promise<Proposal> => {
      // fresh: the sequencer read the last event from the stream, so it is a whole SequencedEvent.
      const last = tail as SequencedEvent | undefined;
      if (last && !("event" in last)) throw new ChatError("Internal", "a change was proposed on a remembered tail");
      await this.settle(groupId);
      // Catch up first, then read: a snapshot read before the check could miss a change another writer
      // finished writing in between (the check would then find it written and the decision use stale counts).
      await this.catchUp(groupId, last);
      const state = await this.tables.groups.getGroupState(groupId);
      if (!state) throw groupNotFound(groupId);
      const head = Math.max(last?.groupSeq ?? 0, state.group.headSeq);
      const members = await this.tables.groups.getMembers(groupId, [...asked]);
      const snapshot: GroupSnapshot = {
        group: { ...state.group, headSeq: head },
        members,
        ownerCount: state.ownerCount,
      };
      const change = decide(snapshot);
      const memberOf = async (id: string) => (asked.has(id) ? members.get(id) : await this.tables.groups.getMember(groupId, id));
      const { body, counts } = await applyChange(change, state, memberOf, (userId, upTo) => this.tables.groups.countMemberships(userId, upTo));
      return { event: { groupId, seq: head + 1, at, actor, body }, msgId, counts };
    };
    // fresh: decide (and the preconditions) may reject, so they must see the group's real last event.
    const { stored } = await this.sequencer.sequence(groupId, propose, undefined, { fresh: true, floor: () => this.headFloor(groupId) });
    await this.persist(groupId, stored);
    return stored.event;
  }

  async appendMessage(draft: MessageDraft): Promise<AppendResult> {
    const { groupId, sender, clientMessageId } = draft;
    this.names.group(groupId);
    // The one membership check of a send (reused while the group's latest change stays the same). Nothing is
    // written to Cassandra: the timeline stream's ack is the send's durability, the persister writes history.
    const first = await this.memberAsOf(groupId, sender.id, this.sequencer.tailOf(groupId)?.change);
    if (!first) throw groupNotFound(groupId);
    let checkedAt = first;
    const baseMsgId = messageMsgId(groupId, sender.id, clientMessageId);
    let msgId = baseMsgId;
    const result = await this.sequencer.sequence(
      groupId,
      async (last, floor) => {
        // The check must hold at the event's place in the timeline: if a change was sequenced since, check again.
        if (!sameChange(checkedAt.change, last?.change)) {
          const again = await this.memberAsOf(groupId, sender.id, last?.change);
          if (!again) throw groupNotFound(groupId);
          checkedAt = again;
        }
        return { event: messageEvent(draft, Math.max(last?.groupSeq ?? 0, floor) + 1), msgId };
      },
      (original) => {
        const b = original.event.body;
        if (b.type !== "message" || b.message.sender.id !== sender.id || b.message.clientMessageId !== clientMessageId) {
          throw new ChatError("Internal", `Nats-Msg-Id ${msgId} names another event (${groupId}/${original.groupSeq})`);
        }
        if (original.event.at >= this.cutoff()) return true;
        // The original is past retention: this is a new message, under a key of its own.
        msgId = `${baseMsgId}:${original.streamSeq}`;
        return false;
      },
      // head_seq is read (alongside the stream's last event) whenever the sequencer has no tail of the group:
      // it is the seq when the subject is empty, and a floor should JetStream ever have lost acknowledged
      // events Cassandra holds (that also breaks a remembered tail's compare-and-set, forcing this read).
      { floor: () => this.headFloor(groupId) },
    );
    return { event: result.stored.event as MessageEvent, duplicate: result.duplicate };
  }

  /**
   * readEvents reads Cassandra and fills what it does not hold yet (the
   * persister's lag, or a Cassandra outage) from the timeline stream: the
   * stream's newest event bounds the range, so an event acknowledged before
   * the read started is in it.
   */
  async readEvents(groupId: string, afterSeq: number, limit: number): Promise<GroupEvent[]> {
    const stored = await this.tables.events.readEvents(groupId, afterSeq, limit);
    const n = Math.max(0, limit);
    if (n === 0) return stored;
    // Cassandra's newest seq here is one the stream stored: the stream's newer events are found from it.
    const head = await this.logHead(groupId, stored.at(-1)?.seq ?? 0, afterSeq + n);
    const top = stored.length >= n ? (stored.at(-1)?.seq ?? afterSeq) : Math.max(head?.seq ?? 0, stored.at(-1)?.seq ?? 0);
    const merged = await this.fillFromLog(groupId, stored, afterSeq + 1, Math.min(top, afterSeq + n), head);
    return merged.slice(0, n);
  }

  /** listMessages pages Cassandra's messages merged with the timeline stream's not-yet-persisted ones (see readEvents). */
  async listMessages(groupId: string, anchor: { beforeSeq?: number; afterSeq?: number }, limit: number): Promise<MessagePage> {
    const page = await this.tables.events.listMessages(groupId, anchor, limit);
    const head = await this.logHead(groupId, page.messages.at(-1)?.seq ?? 0, (anchor.beforeSeq ?? Number.MAX_SAFE_INTEGER) - 1);
    if (!head) return page;
    const n = Math.max(0, limit);
    const before = anchor.beforeSeq ?? Number.MAX_SAFE_INTEGER;
    const full = page.messages.length >= n;
    const forward = anchor.afterSeq !== undefined;
    // The seq range the page covers once merged: between the anchor and the page's far end (or the stream's head).
    const lo = forward ? (anchor.afterSeq ?? 0) + 1 : full ? (page.messages[0]?.seq ?? 1) : 1;
    const hi = Math.min(before - 1, forward && full ? (page.messages.at(-1)?.seq ?? head.seq) : head.seq);
    if (hi < lo) return page;
    const events = page.messages.map((m) => messageEvent(m, m.seq));
    const merged = (await this.fillFromLog(groupId, events, lo, hi, head)).filter((e) => e.body.type === "message" && e.seq < before);
    if (merged.length === page.messages.length) return page;
    const all = merged.map((e) => (e.body.type === "message" ? e.body.message : undefined)).filter((m): m is ChatMessage => m !== undefined);
    const messages = forward ? all.slice(0, n) : all.slice(Math.max(0, all.length - n));
    return { messages, hasMore: page.hasMore || all.length > n };
  }

  /** firstRetained is Cassandra's oldest retained event, or else the timeline stream's oldest (not persisted yet). */
  async firstRetained(groupId: string): Promise<RetainedEdge | undefined> {
    const edge = await this.tables.events.firstRetained(groupId);
    const first = await this.logOldestBelow(groupId, edge?.seq);
    if (!first || (edge && edge.seq <= first.seq)) return edge;
    // The stream may hold retained events below Cassandra's oldest (not persisted yet): the first of them is the edge.
    const cutoff = this.cutoff();
    let e: GroupEvent | undefined = first;
    for (let i = 0; e && i < MAX_EDGE_SCAN && (!edge || e.seq < edge.seq); i++) {
      if (e.at >= cutoff) return { seq: e.seq, retainedUntil: e.at + this.retentionMs };
      e = await this.sequencer.readLog(groupId, e.seq + 1);
    }
    return edge;
  }

  /**
   * logOldestBelow is the timeline stream's oldest event of the group below
   * `edge`, Cassandra's oldest retained seq (undefined: Cassandra holds none),
   * by exact slot reads instead of a `next_by_subj` on the group's wildcard
   * from stream seq 1, which nats-server answers by walking the stream from its
   * start: a group's slots are dense and expire oldest first, so if the slot
   * right below the edge is gone every older one is, and otherwise the oldest
   * is bisected for (JetStreamSequencer.readOldestFrom). undefined if the
   * stream holds none.
   */
  private async logOldestBelow(groupId: string, edge: number | undefined): Promise<GroupEvent | undefined> {
    if (edge !== undefined) {
      if (edge <= 1 || !(await this.sequencer.readLog(groupId, edge - 1))) return undefined;
      return this.sequencer.readOldestFrom(groupId, 1, edge - 1);
    }
    const newest = await this.logHead(groupId, 0, Number.MAX_SAFE_INTEGER);
    return newest ? this.sequencer.readOldestFrom(groupId, 1, newest.seq) : undefined;
  }

  /** getGroup is Cassandra's group with its head_seq raised to the timeline stream's newest event. */
  async getGroup(groupId: string): Promise<Group | undefined> {
    const group = await this.tables.groups.getGroup(groupId);
    if (!group) return undefined;
    const head = await this.sequencer.readNewest(groupId, group.headSeq, Number.MAX_SAFE_INTEGER, true);
    return head && head.seq > group.headSeq ? { ...group, headSeq: head.seq } : group;
  }

  /**
   * logHead is the timeline stream's newest event of the group (at most
   * `cap`), found from `floor`, a seq Cassandra returned (so one the stream
   * stored), or, when Cassandra returned none or the stream no longer holds
   * it, from the group's head_seq in Cassandra (JetStreamSequencer.readNewest).
   * undefined if the stream holds nothing newer than Cassandra.
   */
  private async logHead(groupId: string, floor: number, cap: number): Promise<GroupEvent | undefined> {
    const fromFloor = floor > 0 ? await this.sequencer.readNewest(groupId, floor, cap) : undefined;
    if (fromFloor) return fromFloor;
    const headSeq = (await this.tables.groups.getGroup(groupId))?.headSeq ?? 0;
    return this.sequencer.readNewest(groupId, Math.max(headSeq, floor), cap, true);
  }

  ackMember(groupId: string, userId: string, seq: number): Promise<void> {
    return this.tables.groups.ackMember(groupId, userId, seq);
  }

  // ---- read state, devices, push ledger ----

  markRead(groupId: string, userId: string, seq: number): Promise<number | undefined> {
    return this.tables.readStates.markRead(groupId, userId, seq);
  }

  readStates(groupId: string, userIds: readonly string[]): Promise<Map<string, MemberReadState>> {
    return this.tables.readStates.readStates(groupId, userIds);
  }

  readStatesOfUser(userId: string, groupIds: readonly string[]): Promise<Map<string, MemberReadState>> {
    return this.tables.readStates.readStatesOfUser(userId, groupIds);
  }

  setNotify(groupId: string, userId: string, notify: NotifySetting): Promise<boolean> {
    return this.tables.readStates.setNotify(groupId, userId, notify);
  }

  /**
   * countUnread pages readEvents (Cassandra merged with the timeline stream's
   * not yet persisted tail, so a message counts as soon as its append
   * returned) from afterSeq, each page asking for what is left to count (at
   * least UNREAD_MIN_PAGE, at most UNREAD_PAGE events), until `cap` messages
   * of others were counted or the events end.
   */
  async countUnread(groupId: string, userId: string, afterSeq: number, cap: number): Promise<number> {
    const n = Number.isFinite(cap) ? Math.floor(cap) : 0;
    let counted = 0;
    let after = afterSeq;
    while (counted < n) {
      const want = Math.min(UNREAD_PAGE, Math.max(n - counted, UNREAD_MIN_PAGE));
      const page = await this.readEvents(groupId, after, want);
      for (const e of page) if (e.body.type === "message" && e.actor.id !== userId && counted < n) counted++;
      const last = page.at(-1);
      if (page.length < want || !last || last.seq <= after) break;
      after = last.seq;
    }
    return counted;
  }

  registerDevice(device: Device, maxDevices: number): Promise<Device> {
    return this.tables.devices.registerDevice(device, maxDevices);
  }

  unregisterDevice(userId: string, deviceId: string): Promise<boolean> {
    return this.tables.devices.unregisterDevice(userId, deviceId);
  }

  listDevices(userId: string): Promise<Device[]> {
    return this.tables.devices.listDevices(userId);
  }

  removeDeviceToken(userId: string, deviceId: string, token: string): Promise<void> {
    return this.tables.devices.removeDeviceToken(userId, deviceId, token);
  }

  claimPush(deviceId: string, groupId: string, newestSeq: number, ttlMs: number): Promise<boolean> {
    return this.tables.pushLedger.claimPush(deviceId, groupId, newestSeq, ttlMs);
  }

  /** purgeExpired deletes nothing: the tables' TTL expires events (reads already hide them). Returns 0. */
  async purgeExpired(): Promise<number> {
    return 0;
  }

  /** close waits for this store's pending writes, then releases its connections. Idempotent. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        for (;;) {
          const pending = [...this.writing.values()].flatMap((s) => [...s]);
          if (pending.length === 0) break;
          await Promise.allSettled(pending);
        }
        this.sequencer.close();
        await this.release();
      })();
    }
    return this.closing;
  }

  // ---- internals ----

  private cutoff(): number {
    return this.clock.now() - this.retentionMs;
  }

  /**
   * memberAsOf checks that the user is a member of the group as of `change`,
   * the group's latest membership event or rename (from the sequencer's tail
   * of the group; undefined if none is known). A check this process made for
   * the same change in the last MEMBER_CHECK_TTL_MS is reused: membership
   * only changes with a change event, and an append proposed on a tail whose
   * latest change is `change` lands right after that tail (compare-and-set),
   * so the check holds at the event's place in the timeline. Otherwise reads
   * the member row, and (if `change` is known) the group's change stamp, to
   * keep the check only if Cassandra holds that change already. Returns
   * undefined for a non-member.
   */
  private async memberAsOf(groupId: string, userId: string, change: ChangeRef | undefined): Promise<MemberCheck | undefined> {
    const key = `${groupId}/${userId}`;
    const now = Date.now();
    const known = this.memberChecks.get(key);
    if (known && sameChange(known.change, change) && now - known.at < (change ? MEMBER_CHECK_TTL_MS : UNANCHORED_CHECK_TTL_MS)) return known;
    const [member, stamp] = await Promise.all([
      this.tables.groups.getMember(groupId, userId),
      change ? this.tables.groups.changeStamp(groupId) : undefined,
    ]);
    if (!member) {
      this.memberChecks.delete(key);
      return undefined;
    }
    const check: MemberCheck = { change, at: now };
    // A change published but not stored yet (its writer is between the two, or died) may not be in the
    // member row: the check then counts for this append only, as the store's read before sequencing always did.
    if (change === undefined || (stamp !== undefined && stamp >= change.groupSeq)) {
      this.memberChecks.delete(key);
      this.memberChecks.set(key, check);
      if (this.memberChecks.size > MEMBER_CHECKS) {
        const oldest = this.memberChecks.keys().next().value;
        if (oldest !== undefined) this.memberChecks.delete(oldest);
      }
    }
    return check;
  }

  /** headFloor is the group's head_seq in Cassandra; NotFound if the group does not exist. */
  private async headFloor(groupId: string): Promise<number> {
    const head = await this.tables.groups.headSeq(groupId);
    if (head === undefined) throw groupNotFound(groupId);
    return head;
  }

  /** persist writes a sequenced event to Cassandra, tracked so that changes of the group wait for it. */
  private async persist(groupId: string, stored: SequencedEvent): Promise<void> {
    const write = persistEvent(this.tables, stored);
    let set = this.writing.get(groupId);
    if (!set) {
      set = new Set();
      this.writing.set(groupId, set);
    }
    const tracked = write.catch(() => {});
    set.add(tracked);
    try {
      await write;
    } finally {
      set.delete(tracked);
      if (set.size === 0 && this.writing.get(groupId) === set) this.writing.delete(groupId);
    }
  }

  /** settle waits for this process's in-flight writes of the group (failures are the writers' to report). */
  private async settle(groupId: string): Promise<void> {
    const set = this.writing.get(groupId);
    if (set) await Promise.allSettled([...set]);
  }

  /**
   * fillFromLog merges `stored` (events read from Cassandra, ascending) with
   * the events of seqs in [lo, hi] that Cassandra does not hold yet, read
   * from the timeline stream (only seqs the stream still holds: at or above
   * its oldest event of the group; at most MAX_LOG_FILL). Ascending, no
   * repeats. `head` is the stream's newest event of the group, if known.
   */
  private async fillFromLog(groupId: string, stored: readonly GroupEvent[], lo: number, hi: number, head: GroupEvent | undefined): Promise<GroupEvent[]> {
    if (!head || hi < lo) return [...stored];
    const have = new Set(stored.map((e) => e.seq));
    const top = Math.min(hi, head.seq);
    let missing: number[] = [];
    for (let seq = top; seq >= lo && missing.length < MAX_LOG_FILL; seq--) if (!have.has(seq)) missing.push(seq);
    if (missing.length === 0) return [...stored];
    // Below the stream's oldest event of the group nothing can be filled (retention, or the stream's max_age).
    const lowest = missing.at(-1) ?? lo;
    if (lowest < head.seq) {
      const first = await this.sequencer.readOldestFrom(groupId, lowest, head.seq);
      const floor = first?.seq ?? head.seq;
      missing = missing.filter((seq) => seq >= floor);
    }
    const found = await mapLimit(missing, 32, (seq) => (seq === head.seq ? Promise.resolve(head) : this.sequencer.readLog(groupId, seq)));
    const cutoff = this.cutoff();
    const out = [...stored];
    for (const e of found) if (e && e.at >= cutoff) out.push(e);
    out.sort((a, b) => a.seq - b.seq);
    return out;
  }

  /**
   * catchUp makes Cassandra hold what a change must decide on, given the
   * group's last event in JetStream: every membership event and rename up
   * to it (messages do not matter to a change's snapshot; the persister
   * writes them). A change's writer writes it right after sequencing, having
   * caught up the same way before deciding, so the changes Cassandra lacks
   * are the newest ones after its change stamp: they are found by walking the
   * change chain back (Chat-Change) from the latest, and written oldest
   * first. Returns true if it wrote anything.
   */
  private async catchUp(groupId: string, last: SequencedEvent | undefined): Promise<boolean> {
    let ref = last?.change;
    if (!ref || !last) return false;
    const stamp = (await this.tables.groups.changeStamp(groupId)) ?? 0;
    const missing: SequencedEvent[] = [];
    while (ref && ref.groupSeq > stamp) {
      const e: SequencedEvent | undefined = ref.groupSeq === last.groupSeq ? last : await this.sequencer.get(groupId, ref.streamSeq);
      if (e?.groupSeq !== ref.groupSeq) {
        // Deciding on a partial snapshot would write wrong state for good: let the persister catch up first.
        throw new ChatError("Unavailable", `group ${groupId} is catching up on its timeline; retry`);
      }
      missing.push(e);
      ref = e.prevChange;
      if (missing.length > MAX_CATCH_UP) throw new ChatError("Unavailable", `group ${groupId} is catching up on its timeline; retry`);
    }
    for (const e of missing.reverse()) await persistEvent(this.tables, e);
    return missing.length > 0;
  }
}

/** messageEvent builds the message event of a draft at `seq`. */
function messageEvent(d: MessageDraft, seq: number): MessageEvent {
  const message: ChatMessage = {
    id: d.id,
    groupId: d.groupId,
    seq,
    sender: d.sender,
    text: d.text,
    sentAt: d.sentAt,
    clientMessageId: d.clientMessageId,
  };
  return { groupId: d.groupId, seq, at: d.sentAt, actor: d.sender, body: { type: "message", message } };
}

/**
 * applyChange checks a change's own preconditions against the snapshot
 * ("add": AlreadyExists if a member; "remove"/"set_role": NotFound if not)
 * and returns its event body and the group's counts after it (undefined
 * for a rename, which changes none).
 */
async function applyChange(
  change: GroupChange,
  state: GroupState,
  memberOf: (userId: string) => Promise<Member | undefined>,
  groupsOf: (userId: string, upTo: number) => Promise<number>,
): Promise<{ body: EventBody; counts: GroupCounts | undefined }> {
  const members = state.group.memberCount;
  const owners = state.ownerCount;
  const owner = (role: string | undefined) => (role === "owner" ? 1 : 0);
  switch (change.type) {
    case "add": {
      if (await memberOf(change.member.id)) {
        throw new ChatError("AlreadyExists", `user ${change.member.username} is already a member`);
      }
      // Read, not serialised with the user's joins to other groups (see GroupStore): concurrent ones may pass together.
      if (change.maxGroups !== undefined && (await groupsOf(change.member.id, change.maxGroups)) >= change.maxGroups) {
        throw tooManyGroups(change.member, change.maxGroups);
      }
      return {
        body: { type: "member_added", member: change.member, role: change.role },
        counts: { memberCount: members + 1, ownerCount: owners + owner(change.role) },
      };
    }
    case "remove": {
      const m = await requireMember(change.member, state.group.id, memberOf);
      return {
        body: { type: "member_removed", member: change.member },
        counts: { memberCount: members - 1, ownerCount: owners - owner(m.role) },
      };
    }
    case "set_role": {
      const m = await requireMember(change.member, state.group.id, memberOf);
      return {
        body: { type: "member_role_changed", member: change.member, role: change.role },
        counts: { memberCount: members, ownerCount: owners - owner(m.role) + owner(change.role) },
      };
    }
    case "rename":
      return { body: { type: "group_renamed", name: change.name }, counts: undefined };
  }
}

async function requireMember(
  user: UserRef,
  groupId: string,
  memberOf: (userId: string) => Promise<Member | undefined>,
): Promise<Member> {
  const m = await memberOf(user.id);
  if (!m) throw new ChatError("NotFound", `user ${user.username} is not a member of group ${groupId}`);
  return m;
}

/**
 * createCassandraStore connects to Cassandra (creating the keyspace and
 * migrating it first if `migrate`) and to NATS (unless given a connection),
 * ensures the timeline stream unless told not to, and returns the store.
 * Rejects (closing what it opened) if any of that fails.
 */
export async function createCassandraStore(opts: CassandraStoreOptions): Promise<CassandraStore> {
  const url = parseCassandraUrl(opts.url);
  const names = new NatsNames(opts.prefix);
  const releases: (() => Promise<void>)[] = [];
  const releaseAll = async () => {
    for (const r of releases.reverse()) await r().catch(() => {});
    releases.length = 0;
  };
  try {
    const client = new cassandra.Client(cassandraClientOptions(url));
    releases.push(() => client.shutdown());
    await client.connect();
    if (opts.migrate) {
      await createKeyspace(client, url.keyspace, url.replication);
      await migrate(client, url.keyspace, { retentionMs: opts.retentionMs });
    }
    const tables = createCassandraTables(client, { keyspace: url.keyspace, retentionMs: opts.retentionMs, refreshTtlMs: opts.refreshTtlMs, clock: opts.clock });
    let nc: NatsConnection;
    if ("connection" in opts.nats) {
      nc = opts.nats.connection;
    } else {
      const servers =
        typeof opts.nats.servers === "string"
          ? opts.nats.servers.split(",").map((s) => s.trim()).filter((s) => s !== "")
          : [...opts.nats.servers];
      const own = await connect({
        servers,
        name: opts.nats.name ?? `chat-store-${names.prefix}`,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 1000,
        pingInterval: 10_000,
        maxPingOut: 3,
      });
      releases.push(async () => {
        await own.drain().catch(() => own.close());
      });
      nc = own;
    }
    const jsm = await jetstreamManager(nc, { timeout: opts.sequencer?.requestTimeoutMs ?? 5000 });
    if (opts.ensureStream ?? true) await ensureTimelineStream(jsm, names, opts.timeline);
    const sequencer = new JetStreamSequencer({ nc, jsm, names }, opts.sequencer);
    return new CassandraStore({
      tables,
      sequencer,
      nc,
      client,
      clock: opts.clock,
      retentionMs: opts.retentionMs,
      release: releaseAll,
    });
  } catch (e) {
    await releaseAll();
    throw e;
  }
}

/**
 * migrateCassandra creates the keyspace of `url` if missing and applies
 * pending migrations (tables' TTL from `retentionMs`); for `npm run migrate`
 * and MIGRATE=true. Safe to run from several processes at once.
 */
export async function migrateCassandra(urlText: string, retentionMs: number): Promise<MigrateResult> {
  const url = parseCassandraUrl(urlText);
  const client = new cassandra.Client(cassandraClientOptions(url));
  try {
    await client.connect();
    await createKeyspace(client, url.keyspace, url.replication);
    return await migrate(client, url.keyspace, { retentionMs });
  } finally {
    await client.shutdown();
  }
}
