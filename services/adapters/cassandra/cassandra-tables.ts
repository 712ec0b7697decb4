/**
 * CassandraTables: the data-access layer the production Store is built on
 * (docs/production.md, "Storage"). It stores and reads rows; it does not
 * decide anything and it does not assign seqs: events arrive with their seq
 * already assigned (by the JetStream compare-and-set sequencer) and are
 * written idempotently, so the persister may replay them in any order.
 *
 * Rules every method keeps:
 * - Prepared statements only (`{ prepare: true }`); absent values are bound as
 *   `unset`, never null, so no write leaves a tombstone behind.
 * - LWT only for username uniqueness and refresh-token rotation.
 * - Every write to `groups`, `members_by_group` and `groups_by_user` carries
 *   `USING TIMESTAMP <seq>` of the event it comes from (1 for the group's
 *   creation). Cassandra keeps the cell with the highest timestamp, so the
 *   state converges on "after the highest seq" whatever the write order:
 *   head_seq never goes down, a replayed old add cannot undo a later removal,
 *   and an ack (written with timestamp = the acked seq) never lowers acked_seq.
 *   Nothing may ever write those tables with a wall-clock timestamp: one such
 *   cell would win over every later seq-stamped write.
 * - `group_buckets.first_seq` is written with timestamp MAX - seq (the smallest
 *   seq wins) and `last_seq` with timestamp seq (the largest wins), so the
 *   index is exact without reading it first.
 * - Retention: table TTLs delete expired rows; reads also hide every event
 *   with `at < clock.now() - retentionMs` (the injected clock), exactly as the
 *   SQLite store does, so a fake clock can expire events in tests.
 */
import cassandra from "cassandra-driver";
import type { Client, types } from "cassandra-driver";
import { ChatError } from "../../core/errors.js";
import type {
  ChatMessage,
  Group,
  GroupEvent,
  Member,
  Membership,
  RefreshTokenRecord,
  Role,
  User,
  UserCredentials,
} from "../../core/model.js";
import type { Clock, MessagePage, NewGroup, RetainedEdge } from "../../core/ports.js";
import { isCqlIdentifier } from "./cassandra-url.js";
import { EVENT_COLUMN_NAMES, decodeEvent, encodeEvent } from "./event-codec.js";
import type { EventColumns } from "./event-codec.js";
import { MAX_TTL_SECONDS } from "./migrations.js";
import { mapLimit } from "../../core/map-limit.js";

/** DAY_MS is the width of one event bucket. */
export const DAY_MS = 86_400_000;

/** bucketOf is the bucket of an event at `at` ms: its UTC day number (days since 1970-01-01). */
export function bucketOf(at: number): number {
  return Math.floor(at / DAY_MS);
}

/**
 * REFRESH_TOKEN_GRACE_SECONDS is how long a refresh token row outlives its
 * expiry, so presenting an expired-but-known token is still recognised (and
 * reuse still detected) for a day.
 */
export const REFRESH_TOKEN_GRACE_SECONDS = 86_400;

/** FIRST_SEQ_TIMESTAMP_BASE - seq is the write timestamp of group_buckets.first_seq. */
const FIRST_SEQ_TIMESTAMP_BASE = Number.MAX_SAFE_INTEGER;

/** Largest number of rows one query asks for. */
const MAX_CHUNK = 1000;

/** Concurrency of per-row lookups (memberships' groups, a family's tokens). */
const LOOKUP_CONCURRENCY = 32;

/** CassandraTablesOptions configures CassandraTables. */
export interface CassandraTablesOptions {
  /** Keyspace holding the migrated tables (a lower-case plain identifier). */
  readonly keyspace: string;
  /** Events with `at < clock.now() - retentionMs` are invisible to reads. Should not exceed the tables' TTL. */
  readonly retentionMs: number;
  /** Source of "now" for retention and token TTLs. */
  readonly clock: Clock;
  /**
   * Lifetime of the refresh tokens the services issue (REFRESH_TOKEN_TTL): a
   * session's revocation mark lives at least this long (plus a day) after
   * the revocation, since a refresh racing it may insert a token the
   * revocation never saw.
   */
  readonly refreshTtlMs: number;
}

/** GroupCounts are a group's member and owner counts after an event. */
export interface GroupCounts {
  readonly memberCount: number;
  readonly ownerCount: number;
}

/** GroupState is a group with its owner count: what a membership decision is made on. */
export interface GroupState {
  readonly group: Group;
  readonly ownerCount: number;
}

/** MessageEvent is a GroupEvent whose body is a message. */
export type MessageEvent = GroupEvent & { readonly body: { readonly type: "message"; readonly message: ChatMessage } };

/** One stored event row as read, before decoding. */
interface StoredEvent {
  readonly seq: number;
  readonly cols: EventColumns;
}

/** One row of group_buckets. */
interface BucketInfo {
  readonly bucket: number;
  /** Smallest seq in the bucket (0 if unknown: conservative). */
  readonly firstSeq: number;
  /** Largest seq in the bucket (MAX_SAFE_INTEGER if unknown: conservative). */
  readonly lastSeq: number;
}

type Direction = "asc" | "desc";

type Params = unknown[];

const { unset } = cassandra.types;
const CL_LOCAL_QUORUM = cassandra.types.consistencies.localQuorum;
const CL_LOCAL_SERIAL = cassandra.types.consistencies.localSerial;

/**
 * CassandraTables reads and writes the store's tables (see the module
 * comment for the rules). Methods throw ChatError for domain outcomes
 * (AlreadyExists on a taken username, Internal on a corrupt row) and
 * ChatError Unavailable for driver failures (timeouts, no host), with the
 * driver's error as cause.
 */
export class CassandraTables {
  private readonly ks: string;
  private readonly q: ReturnType<typeof statements>;

  /** constructor takes a connected client (default encoding: numbers for bigint). Throws on a bad keyspace or retention. */
  constructor(
    private readonly client: Client,
    private readonly opts: CassandraTablesOptions,
  ) {
    if (!isCqlIdentifier(opts.keyspace) || opts.keyspace !== opts.keyspace.toLowerCase()) {
      throw new Error(`invalid keyspace ${JSON.stringify(opts.keyspace)}`);
    }
    if (!(opts.retentionMs > 0)) throw new Error(`invalid retention ${opts.retentionMs}`);
    if (!(opts.refreshTtlMs > 0)) throw new Error(`invalid refresh token lifetime ${opts.refreshTtlMs}`);
    const driverOptions = (client as unknown as { options?: { encoding?: { useBigIntAsLong?: boolean } } }).options;
    if (driverOptions?.encoding?.useBigIntAsLong) {
      throw new Error("CassandraTables needs the driver's default encoding (encoding.useBigIntAsLong off)");
    }
    this.ks = opts.keyspace;
    this.q = statements(this.ks);
  }

  // ------------------------------------------------------------------ users

  /**
   * createUser stores the user. The username is claimed with an LWT
   * (`users_by_name ... IF NOT EXISTS`): of concurrent creates with one
   * username exactly one succeeds; the others throw ChatError AlreadyExists
   * and leave nothing behind. Repeating a create that succeeded (same id and
   * username, e.g. after a timeout) succeeds again. Ids must be fresh.
   */
  async createUser(u: UserCredentials): Promise<void> {
    await this.run(this.q.insertUser, [u.id, u.username, u.createdAt], true);
    let owner: string | null;
    try {
      const claim = await this.run(this.q.claimUsername, [u.username, u.id, u.passwordHash, u.createdAt], false);
      owner = claim.wasApplied() ? u.id : optStr(claim.rows[0], "user_id");
    } catch (e) {
      // An LWT that timed out (e.g. under contention) may or may not have
      // been applied: a SERIAL read tells, because it completes any Paxos
      // round in flight.
      owner = optStr((await this.run(this.q.userByName, [u.username], true, CL_LOCAL_SERIAL)).rows[0], "user_id");
      if (owner === null) throw e;
    }
    if (owner === u.id) return;
    await this.run(this.q.deleteUser, [u.id], true);
    throw new ChatError("AlreadyExists", `username ${u.username} is taken`);
  }

  /** findUserByName returns the user with its password hash, or undefined. */
  async findUserByName(username: string): Promise<UserCredentials | undefined> {
    const row = (await this.run(this.q.userByName, [username], true)).rows[0];
    const id = optStr(row, "user_id");
    if (!row || id === null) return undefined;
    return { id, username, passwordHash: str(row, "password_hash"), createdAt: num(row, "created_at") };
  }

  /** getUser returns the user (without secrets), or undefined. */
  async getUser(userId: string): Promise<User | undefined> {
    const row = (await this.run(this.q.userById, [userId], true)).rows[0];
    const username = optStr(row, "username");
    if (!row || username === null) return undefined;
    return { id: userId, username, createdAt: num(row, "created_at") };
  }

  // --------------------------------------------------------- refresh tokens

  /**
   * insertRefreshToken stores the token and its family index in one logged
   * batch, both expiring REFRESH_TOKEN_GRACE_SECONDS after `expiresAt`.
   */
  async insertRefreshToken(r: RefreshTokenRecord): Promise<void> {
    const ttl = this.tokenTtl(r.expiresAt);
    await this.batch(
      [
        [this.q.insertToken, [r.tokenHash, r.userId, r.familyId, r.expiresAt, r.usedAt ?? unset, r.revokedAt ?? unset, ttl]],
        [this.q.insertTokenByFamily, [r.familyId, r.tokenHash, r.expiresAt, ttl]],
      ],
      true,
    );
  }

  /** findRefreshToken returns the record for a token hash, or undefined (unknown or past its TTL). */
  async findRefreshToken(tokenHash: string): Promise<RefreshTokenRecord | undefined> {
    const row = (await this.run(this.q.tokenByHash, [tokenHash], true)).rows[0];
    const userId = optStr(row, "user_id");
    if (!row || userId === null) return undefined;
    return {
      tokenHash,
      userId,
      familyId: str(row, "family_id"),
      expiresAt: num(row, "expires_at"),
      usedAt: optNum(row, "used_at"),
      revokedAt: optNum(row, "revoked_at"),
    };
  }

  /**
   * markRefreshTokenUsed sets used_at to `at` if the token exists and is
   * unused, by LWT (`IF user_id != null AND used_at = null`): of concurrent
   * calls at most one returns true. Returns false for unknown or used tokens.
   */
  async markRefreshTokenUsed(tokenHash: string, at: number): Promise<boolean> {
    const current = await this.findRefreshToken(tokenHash);
    if (!current || current.usedAt !== null) return false;
    const r = await this.run(this.q.markTokenUsed, [this.tokenTtl(current.expiresAt), at, tokenHash], false);
    return r.wasApplied();
  }

  /**
   * revokeRefreshFamily marks the session revoked (revoked_sessions), then
   * sets revoked_at = `at` on every token of the family that is not revoked
   * yet (a token revoked before keeps its time, unless two revocations race:
   * then one of their times wins). Idempotent; no-op for an unknown family.
   *
   * The mark is what isSessionRevoked and AuthService.refresh trust, so it
   * outlives every token the family can have: its TTL is a day past the
   * later of the last known token's expiry and now + the refresh TTL. The
   * second term covers a token that a refresh racing this revocation
   * inserts after the family was read here (issued no later than now, so it
   * expires by now + the refresh TTL), and tokens left unrevoked by a
   * revocation cut short after the mark.
   */
  async revokeRefreshFamily(familyId: string, at: number): Promise<void> {
    const rows = await this.fetch(this.q.tokensOfFamily, [familyId], Number.MAX_SAFE_INTEGER);
    if (rows.length > 0) {
      // The session mark goes first: a revocation cut short still revokes the session.
      const lastExpiry = Math.max(...rows.map((row) => num(row, "expires_at")), this.opts.clock.now() + this.opts.refreshTtlMs);
      await this.run(this.q.revokeSession, [familyId, at, this.tokenTtl(lastExpiry)], true);
    }
    await mapLimit(rows, LOOKUP_CONCURRENCY, async (row) => {
      const token = await this.findRefreshToken(str(row, "token_hash"));
      if (!token || token.revokedAt !== null) return;
      await this.run(this.q.revokeToken, [this.tokenTtl(token.expiresAt), at, token.tokenHash], true);
    });
  }

  /**
   * isSessionRevoked reads the family's row in revoked_sessions (one read at
   * LOCAL_QUORUM, as revokeRefreshFamily writes it, so a revocation that has
   * returned is seen by every later call on any client). The row lives a day
   * past the later of the family's last token expiry and the revocation
   * time + the refresh TTL (see revokeRefreshFamily).
   */
  async isSessionRevoked(familyId: string): Promise<boolean> {
    const row = (await this.run(this.q.sessionRevoked, [familyId], true)).rows[0];
    return row !== undefined && optNum(row, "revoked_at") !== null;
  }

  // ----------------------------------------------------------------- groups

  /**
   * createGroup writes, in one logged batch, the group row (head_seq 1, one
   * member, one owner), the owner's membership in both directions and the
   * event member_added(owner) as seq 1, which it returns. Idempotent for the
   * same NewGroup; group ids must be fresh (no uniqueness check).
   */
  async createGroup(g: NewGroup): Promise<GroupEvent> {
    const event: GroupEvent = {
      groupId: g.id,
      seq: 1,
      at: g.createdAt,
      actor: g.owner,
      body: { type: "member_added", member: g.owner, role: "owner" },
    };
    await this.batch(
      [
        [this.q.insertGroup, [g.id, g.name, g.epoch, g.createdAt, 1, 1, 1, 1]],
        ...this.membershipWrites(event, { memberCount: 1, ownerCount: 1 }),
      ],
      true,
    );
    return event;
  }

  /** getGroup returns the group, or undefined if it was never created. */
  async getGroup(groupId: string): Promise<Group | undefined> {
    return (await this.getGroupState(groupId))?.group;
  }

  /** getGroupState returns the group with its owner count, or undefined. */
  async getGroupState(groupId: string): Promise<GroupState | undefined> {
    const row = (await this.run(this.q.groupById, [groupId], true)).rows[0];
    const epoch = optStr(row, "epoch");
    if (!row || epoch === null) return undefined;
    const group: Group = {
      id: groupId,
      name: str(row, "name"),
      createdAt: num(row, "created_at"),
      epoch,
      headSeq: optNum(row, "head_seq") ?? 0,
      memberCount: optNum(row, "member_count") ?? 0,
    };
    return { group, ownerCount: optNum(row, "owner_count") ?? 0 };
  }

  /**
   * changeStamp returns the seq of the latest membership event or rename
   * stored for the group (the write timestamps of member_count and name,
   * which those events stamp with their seq; 1 for the creation), or
   * undefined if the group does not exist. Changes are stored in seq order
   * (each is decided on a snapshot that holds the one before), so every
   * change up to the stamp is stored.
   */
  async changeStamp(groupId: string): Promise<number | undefined> {
    const row = (await this.run(this.q.groupChangeStamp, [groupId], true)).rows[0];
    if (!row) return undefined;
    const counts = optNum(row, "counts_at");
    const name = optNum(row, "name_at");
    if (counts === null && name === null) return undefined;
    return Math.max(counts ?? 0, name ?? 0);
  }

  /** headSeq returns the group's head_seq (the highest seq written), or undefined if the group does not exist. */
  async headSeq(groupId: string): Promise<number | undefined> {
    return (await this.getGroup(groupId))?.headSeq;
  }

  // ------------------------------------------------------------ memberships

  /** getMember returns the membership, or undefined if the user is not a member. */
  async getMember(groupId: string, userId: string): Promise<Member | undefined> {
    const row = (await this.run(this.q.member, [groupId, userId], true)).rows[0];
    return row && toMember(groupId, row);
  }

  /** getMembers returns the members among `userIds` (absent = not a member), read in parallel. */
  async getMembers(groupId: string, userIds: readonly string[]): Promise<Map<string, Member>> {
    const found = await mapLimit([...new Set(userIds)], LOOKUP_CONCURRENCY, (id) => this.getMember(groupId, id));
    const out = new Map<string, Member>();
    for (const m of found) if (m) out.set(m.user.id, m);
    return out;
  }

  /** listMembers returns up to `limit` members with user id > afterUserId ("" = from the start), by user id. */
  async listMembers(groupId: string, afterUserId: string, limit: number): Promise<Member[]> {
    const rows = await this.pageLive(this.q.membersPage, groupId, afterUserId, "user_id", limit, (r) =>
      toMember(groupId, r),
    );
    return rows;
  }

  /**
   * listMemberships returns up to `limit` of the user's groups with group id
   * > afterGroupId ("" = from the start), by group id, each with its group
   * row (read in parallel; a membership whose group row is missing is skipped).
   */
  async listMemberships(userId: string, afterGroupId: string, limit: number): Promise<Membership[]> {
    const entries = await this.pageLive(this.q.membershipsPage, userId, afterGroupId, "group_id", limit, (r) => {
      const role = optStr(r, "role");
      if (!isRole(role) || optNum(r, "joined_at") === null) return undefined;
      return { groupId: str(r, "group_id"), role, ackedSeq: optNum(r, "acked_seq") ?? 0 };
    });
    const groups = await mapLimit(entries, LOOKUP_CONCURRENCY, (e) => this.getGroup(e.groupId));
    const out: Membership[] = [];
    entries.forEach((e, i) => {
      const group = groups[i];
      if (group) out.push({ group, role: e.role, ackedSeq: e.ackedSeq });
    });
    return out;
  }

  /**
   * countMemberships is how many groups the user is in (rows of their
   * groups_by_user partition with a role and join time, as listMemberships
   * counts them), counted up to `upTo`: one partition read of at most that
   * many live rows.
   */
  async countMemberships(userId: string, upTo: number): Promise<number> {
    const rows = await this.fetch(this.q.membershipRoles, [userId], upTo);
    return rows.filter((r) => isRole(optStr(r, "role")) && optNum(r, "joined_at") !== null).length;
  }

  /**
   * countMembers derives the group's counts by reading its whole
   * members_by_group partition (O(members)): for repairs and for a persister
   * that replays membership events in seq order and has no counts at hand.
   */
  async countMembers(groupId: string): Promise<GroupCounts> {
    const rows = await this.fetch(this.q.memberRoles, [groupId], Number.MAX_SAFE_INTEGER);
    let memberCount = 0;
    let ownerCount = 0;
    for (const r of rows) {
      const role = optStr(r, "role");
      if (!isRole(role) || optNum(r, "joined_at") === null) continue;
      memberCount++;
      if (role === "owner") ownerCount++;
    }
    return { memberCount, ownerCount };
  }

  /**
   * ackMember raises the member's acked seq to `seq` in both directions; it
   * never lowers it, even under concurrent or reordered acks (read-check,
   * then a write with timestamp = seq). No-op for non-members and for
   * seq <= the current ack. An ack below the member's latest join seq after a
   * remove/re-add is shadowed by the removal and reads as 0.
   */
  async ackMember(groupId: string, userId: string, seq: number): Promise<void> {
    if (!Number.isSafeInteger(seq) || seq < 1) return;
    const m = await this.getMember(groupId, userId);
    if (!m || m.ackedSeq >= seq) return;
    await Promise.all([
      this.run(this.q.ackByGroup, [seq, seq, groupId, userId], true),
      this.run(this.q.ackByUser, [seq, seq, userId, groupId], true),
    ]);
  }

  // ----------------------------------------------------------------- events

  /**
   * writeEvent stores an event whose seq is already assigned, idempotently
   * (writing it again, or replaying older events after it, changes nothing).
   *
   * - A message: its message_ids row, its group_buckets entry, the event
   *   row and head_seq in one unlogged batch (one request, four partitions:
   *   on the send path every round trip costs as much CPU as the write).
   *   When this resolves, head_seq >= seq and the event is readable. A text
   *   too long for a small batch (see SMALL_BATCH_BYTES) has its event row
   *   written on its own, after the other rows and before head_seq. A batch
   *   that failed half-way may have written some rows without the others:
   *   writing the event again repairs it (a retried send, the persister, see
   *   repairIndex), as with a membership event's logged batch, which holds
   *   head_seq too.
   * - A membership event or rename: one logged batch with the event row, the
   *   bucket entry, head_seq, the membership rows in both directions
   *   (member_added inserts with joined_at = at, member_removed deletes,
   *   member_role_changed sets the role), the counts (`counts`, required for
   *   member_* events: the writer knows them from its snapshot) and the name.
   *
   * Throws ChatError Internal for a member_* event without counts or a
   * message that disagrees with its event.
   */
  async writeEvent(event: GroupEvent, counts?: GroupCounts): Promise<void> {
    if (event.body.type === "message") {
      const m = event.body.message;
      const cols = encodeEvent(event);
      const bucket = bucketOf(event.at);
      const rows: [string, Params][] = [
        [this.q.insertMessageId, [event.groupId, m.sender.id, m.clientMessageId, event.seq, bucket, event.at, event.seq]],
        ...this.bucketWrites(event.groupId, bucket, event.seq),
        [this.q.setHead, [event.seq, event.seq, event.groupId]],
      ];
      const eventRow: [string, Params] = [this.q.insertEvent, this.eventParams(event, cols)];
      if (isSmall(m.text)) {
        await this.batch([eventRow, ...rows], true, false);
      } else {
        // Cassandra warns about (and past 50 KiB refuses) large batches: the big row goes on its own, after the
        // rows that find it (an event row is only ever stored with or after them) and before head_seq.
        const head = rows.pop() as [string, Params];
        await this.batch(rows, true, false);
        await this.run(eventRow[0], eventRow[1], true);
        await this.run(head[0], head[1], true);
      }
      return;
    }
    const type = event.body.type;
    if (type !== "group_renamed" && counts === undefined) {
      throw new ChatError("Internal", `${type} event ${event.groupId}/${event.seq} written without group counts`);
    }
    await this.batch(this.membershipWrites(event, counts), true);
  }

  /**
   * writeMessages stores message events of one group whose seqs are already
   * assigned, idempotently, batched per partition: the events of one bucket
   * go out as unlogged batches (their event rows and message_ids rows, the
   * bucket's first and last seq, and head_seq; at most MESSAGES_BATCH_BYTES
   * of text per batch, a long text in a batch of its own), the buckets in
   * parallel. For the persister, the one writer of messages: it resolves
   * once every row is written. A batch that failed half-way left rows that
   * writing the same events again completes (idempotent, seq-stamped).
   * Throws ChatError Internal for an event of another group or not a message.
   */
  async writeMessages(groupId: string, events: readonly GroupEvent[]): Promise<void> {
    const byBucket = new Map<number, GroupEvent[]>();
    for (const e of events) {
      if (e.groupId !== groupId || e.body.type !== "message") {
        throw new ChatError("Internal", `writeMessages(${groupId}) was given ${e.body.type} event ${e.groupId}/${e.seq}`);
      }
      const b = bucketOf(e.at);
      const list = byBucket.get(b);
      if (list) list.push(e);
      else byBucket.set(b, [e]);
    }
    const q = this.q;
    const writes: Promise<unknown>[] = [];
    for (const [bucket, list] of byBucket) {
      let rows: [string, Params][] = [];
      let bytes = 0;
      let lo = Number.POSITIVE_INFINITY;
      let hi = 0;
      const send = () => {
        if (rows.length === 0) return;
        rows.push(...this.bucketWrites(groupId, bucket, lo), [q.bucketLast, [hi, hi, groupId, bucket]], [q.setHead, [hi, hi, groupId]]);
        writes.push(this.batch(rows, true, false));
        rows = [];
        bytes = 0;
        lo = Number.POSITIVE_INFINITY;
        hi = 0;
      };
      for (const e of list) {
        if (e.body.type !== "message") continue;
        const m = e.body.message;
        const size = isSmall(m.text) ? m.text.length + ROW_OVERHEAD_BYTES : MESSAGES_BATCH_BYTES;
        if (bytes > 0 && bytes + size > MESSAGES_BATCH_BYTES) send();
        rows.push(
          [q.insertEvent, this.eventParams(e, encodeEvent(e))],
          [q.insertMessageId, [groupId, m.sender.id, m.clientMessageId, e.seq, bucket, e.at, e.seq]],
        );
        bytes += size;
        lo = Math.min(lo, e.seq);
        hi = Math.max(hi, e.seq);
      }
      send();
    }
    await Promise.all(writes);
  }

  /**
   * repairIndex writes what finds the stored message events of one bucket
   * with seqs in [fromSeq, toSeq], whose rows are known to exist: the
   * bucket's first and last seq, and head_seq. For the persister, which
   * checks the events other processes wrote instead of writing them again:
   * a writer whose batch was applied only in part (or whose long text was
   * written row by row) may have died before these. One batch, idempotent
   * (seq-stamped).
   */
  async repairIndex(groupId: string, bucket: number, fromSeq: number, toSeq: number): Promise<void> {
    const q = this.q;
    await this.batch(
      [
        [q.bucketFirst, [FIRST_SEQ_TIMESTAMP_BASE - fromSeq, fromSeq, groupId, bucket]],
        [q.bucketLast, [toSeq, toSeq, groupId, bucket]],
        [q.setHead, [toSeq, toSeq, groupId]],
      ],
      true,
      false,
    );
  }

  /**
   * storedSeqs returns which seqs in [fromSeq, toSeq] have an event row in
   * the group's bucket `bucket` (expired rows do not count). One
   * single-partition read; for the persister, which checks what the writers
   * already stored instead of writing it again.
   */
  async storedSeqs(groupId: string, bucket: number, fromSeq: number, toSeq: number): Promise<Set<number>> {
    const out = new Set<number>();
    if (toSeq < fromSeq) return out;
    const rows = await this.fetch(this.q.seqsInRange, [groupId, bucket, fromSeq, toSeq], toSeq - fromSeq + 1);
    for (const r of rows) out.add(num(r, "seq"));
    return out;
  }

  /** readEvents returns up to `limit` retained events with seq > afterSeq, ascending, across buckets. */
  async readEvents(groupId: string, afterSeq: number, limit: number): Promise<GroupEvent[]> {
    const n = clampLimit(limit);
    const out: GroupEvent[] = [];
    if (n === 0) return out;
    for await (const e of this.scan(groupId, "asc", afterSeq, Math.min(n, MAX_CHUNK))) {
      out.push(decodeEvent(groupId, e.seq, e.cols));
      if (out.length >= n) break;
    }
    return out;
  }

  /**
   * listMessages returns up to `limit` retained messages, ascending: with
   * `afterSeq`, the oldest with seq > afterSeq (and < beforeSeq if given);
   * with only `beforeSeq`, the newest with seq < beforeSeq; with neither, the
   * newest. `hasMore` tells whether more retained messages lie further in the
   * paging direction. Non-message events are skipped.
   */
  async listMessages(
    groupId: string,
    anchor: { beforeSeq?: number; afterSeq?: number },
    limit: number,
  ): Promise<MessagePage> {
    const n = clampLimit(limit);
    const chunk = Math.min(n + 1 + 16, MAX_CHUNK);
    const found: ChatMessage[] = [];
    const before = anchor.beforeSeq ?? Number.MAX_SAFE_INTEGER;
    const forward = anchor.afterSeq !== undefined;
    const from = anchor.afterSeq ?? before;
    for await (const e of this.scan(groupId, forward ? "asc" : "desc", from, chunk)) {
      if (forward && e.seq >= before) break;
      if (e.cols.kind !== "message") continue;
      const ev = decodeEvent(groupId, e.seq, e.cols);
      if (ev.body.type === "message") found.push(ev.body.message);
      if (found.length > n) break;
    }
    const messages = found.slice(0, n);
    if (!forward) messages.reverse();
    return { messages, hasMore: found.length > n };
  }

  /** firstRetained returns the oldest retained event's seq and when it leaves retention, or undefined if none is retained. */
  async firstRetained(groupId: string): Promise<RetainedEdge | undefined> {
    for await (const e of this.scan(groupId, "asc", 0, 1)) return { seq: e.seq, retainedUntil: e.cols.at + this.opts.retentionMs };
    return undefined;
  }

  /**
   * findMessageByClientId returns the retained message event that
   * (groupId, senderId, clientMessageId) maps to, or undefined (never sent,
   * or older than the retention period by the injected clock). If two events
   * were ever stored for one key, the one with the higher seq wins.
   */
  async findMessageByClientId(
    groupId: string,
    senderId: string,
    clientMessageId: string,
  ): Promise<MessageEvent | undefined> {
    const idRow = (await this.run(this.q.messageId, [groupId, senderId, clientMessageId], true)).rows[0];
    const seq = optNum(idRow, "seq");
    if (!idRow || seq === null || num(idRow, "at") < this.cutoff()) return undefined;
    const row = (await this.run(this.q.eventAt, [groupId, num(idRow, "bucket"), seq], true)).rows[0];
    if (!row) return undefined;
    const event = decodeEvent(groupId, seq, eventColumns(row));
    if (event.body.type !== "message" || event.body.message.clientMessageId !== clientMessageId) return undefined;
    return event as MessageEvent;
  }

  // ---------------------------------------------------------------- private

  private cutoff(): number {
    return this.opts.clock.now() - this.opts.retentionMs;
  }

  private tokenTtl(expiresAt: number): number {
    const remaining = Math.max(0, Math.ceil((expiresAt - this.opts.clock.now()) / 1000));
    return Math.min(remaining + REFRESH_TOKEN_GRACE_SECONDS, MAX_TTL_SECONDS);
  }

  private eventParams(e: GroupEvent, cols: EventColumns): Params {
    return [e.groupId, bucketOf(e.at), e.seq, ...EVENT_COLUMN_NAMES.map((c) => cols[c] ?? unset)];
  }

  private bucketWrites(groupId: string, bucket: number, seq: number): [string, Params][] {
    return [
      [this.q.bucketFirst, [FIRST_SEQ_TIMESTAMP_BASE - seq, seq, groupId, bucket]],
      [this.q.bucketLast, [seq, seq, groupId, bucket]],
    ];
  }

  /** membershipWrites are the statements of a non-message event (see writeEvent). */
  private membershipWrites(e: GroupEvent, counts: GroupCounts | undefined): [string, Params][] {
    const q = this.q;
    const s = e.seq;
    const out: [string, Params][] = [
      [q.insertEvent, this.eventParams(e, encodeEvent(e))],
      ...this.bucketWrites(e.groupId, bucketOf(e.at), s),
      [q.setHead, [s, s, e.groupId]],
    ];
    const b = e.body;
    switch (b.type) {
      case "member_added":
        out.push([q.insertMember, [e.groupId, b.member.id, b.member.username, b.role, e.at, s]]);
        out.push([q.insertMembership, [b.member.id, e.groupId, b.role, e.at, s]]);
        break;
      case "member_removed":
        out.push([q.deleteMember, [s, e.groupId, b.member.id]]);
        out.push([q.deleteMembership, [s, b.member.id, e.groupId]]);
        break;
      case "member_role_changed":
        out.push([q.setMemberRole, [s, b.role, e.groupId, b.member.id]]);
        out.push([q.setMembershipRole, [s, b.role, b.member.id, e.groupId]]);
        break;
      case "group_renamed":
        out.push([q.renameGroup, [s, b.name, e.groupId]]);
        break;
      case "message":
        throw new ChatError("Internal", "a message is not a membership event");
    }
    if (counts && b.type !== "group_renamed") {
      out.push([q.setCounts, [s, counts.memberCount, counts.ownerCount, e.groupId]]);
    }
    return out;
  }

  /** bucketsOf lists the group's buckets that may hold events at or after `cutoff`. */
  private async bucketsOf(groupId: string, cutoff: number): Promise<BucketInfo[]> {
    const rows = await this.fetch(this.q.buckets, [groupId], Number.MAX_SAFE_INTEGER);
    return rows
      .map((r) => ({
        bucket: num(r, "bucket"),
        firstSeq: optNum(r, "first_seq") ?? 0,
        lastSeq: optNum(r, "last_seq") ?? Number.MAX_SAFE_INTEGER,
      }))
      .filter((b) => (b.bucket + 1) * DAY_MS > cutoff);
  }

  /**
   * scan yields the group's retained events strictly after `from` (asc) or
   * strictly before it (desc), in seq order, reading `chunk` rows at a time.
   *
   * Buckets are days of `at`, and writers' clocks differ, so neighbouring
   * buckets may overlap in seq near midnight. scan is therefore a lazy k-way
   * merge: a bucket is opened only once it could hold the next event (its
   * first_seq, or last_seq going down, is past the best open head), so the
   * common case reads one bucket at a time and never a bucket it does not need.
   */
  private async *scan(groupId: string, dir: Direction, from: number, chunk: number): AsyncGenerator<StoredEvent> {
    const cutoff = this.cutoff();
    const asc = dir === "asc";
    const pending = (await this.bucketsOf(groupId, cutoff))
      .filter((b) => (asc ? b.lastSeq > from : b.firstSeq < from))
      .sort((a, b) => (asc ? a.firstSeq - b.firstSeq : b.lastSeq - a.lastSeq));
    const open: BucketCursor[] = [];
    const better = (a: number, b: number) => (asc ? a < b : a > b);
    let lastYielded: number | undefined;
    for (;;) {
      let best = pickBest(open, better);
      for (let next = pending[0]; next; next = pending[0]) {
        if (best && !better(asc ? next.firstSeq : next.lastSeq, best.head.seq)) break;
        pending.shift();
        const bucket = next.bucket;
        const since = bucket * DAY_MS < cutoff ? cutoff : undefined;
        const cursor = new BucketCursor(from, chunk, (bound, n) => this.readBucket(groupId, bucket, dir, bound, n, since));
        if (await cursor.advance()) open.push(cursor);
        best = pickBest(open, better);
      }
      if (!best) return;
      const e = best.head;
      if (e.seq !== lastYielded) yield e;
      lastYielded = e.seq;
      if (!(await best.advance())) open.splice(open.indexOf(best), 1);
    }
  }

  /** readBucket reads up to `limit` rows of one bucket past `from` in `dir` order, with `at >= cutoff` if given. */
  private async readBucket(
    groupId: string,
    bucket: number,
    dir: Direction,
    from: number,
    limit: number,
    cutoff: number | undefined,
  ): Promise<StoredEvent[]> {
    const q = this.q;
    const [cql, params]: [string, Params] =
      cutoff === undefined
        ? [dir === "asc" ? q.eventsAsc : q.eventsDesc, [groupId, bucket, from, limit]]
        : [dir === "asc" ? q.eventsAscSince : q.eventsDescSince, [groupId, bucket, from, cutoff, limit]];
    const rows = await this.fetch(cql, params, limit);
    return rows.map((r) => ({ seq: num(r, "seq"), cols: eventColumns(r) }));
  }

  /**
   * pageLive pages a clustering range (`key > after`) of one partition and
   * maps each row, skipping rows `map` rejects (partial rows left by a write
   * that raced a removal), until `limit` mapped rows or the end.
   */
  private async pageLive<T>(
    cql: string,
    partition: string,
    after: string,
    keyColumn: string,
    limit: number,
    map: (row: types.Row) => T | undefined,
  ): Promise<T[]> {
    const n = clampLimit(limit);
    const out: T[] = [];
    let cursor = after;
    while (out.length < n) {
      const want = Math.min(n - out.length, MAX_CHUNK);
      const rows = await this.fetch(cql, [partition, cursor, want], want);
      for (const r of rows) {
        const v = map(r);
        if (v !== undefined) out.push(v);
      }
      const last = rows.at(-1);
      if (rows.length < want || !last) break;
      cursor = str(last, keyColumn);
    }
    return out;
  }

  /** run executes one prepared statement at LOCAL_QUORUM (LWTs: LOCAL_SERIAL for their Paxos phase). */
  /**
   * Requests made during one turn of the event loop are sent together, in
   * the check phase (setImmediate), so the driver writes them to the socket
   * with one syscall: it coalesces only what is queued before its own
   * nextTick, which under load is one request per HTTP request callback. On
   * this machine a socket write to Cassandra costs about as much CPU as the
   * driver's own work for the request (issue 4).
   */
  private readonly deferred: (() => void)[] = [];
  private deferScheduled = false;
  private readonly flushDeferred = (): void => {
    this.deferScheduled = false;
    for (const send of this.deferred.splice(0)) send();
  };

  /** soon runs `call` in this turn's check phase, with every other request of the turn. */
  private soon<T>(call: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.deferred.push(() => void call().then(resolve, reject));
      if (!this.deferScheduled) {
        this.deferScheduled = true;
        setImmediate(this.flushDeferred);
      }
    });
  }

  /** run executes one prepared statement at LOCAL_QUORUM (LWTs: LOCAL_SERIAL for their Paxos phase). */
  private run(cql: string, params: Params, idempotent: boolean, consistency = CL_LOCAL_QUORUM): Promise<types.ResultSet> {
    return this.soon(() => this.execute(cql, params, idempotent, consistency));
  }

  private execute(cql: string, params: Params, idempotent: boolean, consistency: number): Promise<types.ResultSet> {
    return this.client
      .execute(cql, params, {
        prepare: true,
        isIdempotent: idempotent,
        consistency,
        serialConsistency: CL_LOCAL_SERIAL,
      })
      .catch(unavailable);
  }

  /** batch executes prepared statements as one batch at LOCAL_QUORUM (logged unless told otherwise). */
  private batch(queries: [string, Params][], idempotent: boolean, logged = true): Promise<types.ResultSet> {
    return this.soon(() => this.sendBatch(queries, idempotent, logged));
  }

  private sendBatch(queries: [string, Params][], idempotent: boolean, logged: boolean): Promise<types.ResultSet> {
    return this.client
      .batch(
        queries.map(([query, params]) => ({ query, params })),
        { prepare: true, logged, isIdempotent: idempotent, consistency: CL_LOCAL_QUORUM },
      )
      .catch(unavailable);
  }

  /** fetch returns up to `max` rows of a query, following pages (filtered queries may return short pages). */
  private async fetch(cql: string, params: Params, max: number): Promise<types.Row[]> {
    const out: types.Row[] = [];
    let pageState: string | undefined;
    do {
      const rs: types.ResultSet = await this.client
        .execute(cql, params, {
          prepare: true,
          isIdempotent: true,
          consistency: CL_LOCAL_QUORUM,
          fetchSize: Math.min(Math.max(max - out.length, 1), 5000),
          ...(pageState === undefined ? {} : { pageState }),
        })
        .catch(unavailable);
      out.push(...rs.rows);
      pageState = rs.pageState ?? undefined;
    } while (pageState !== undefined && out.length < max);
    return out.length > max ? out.slice(0, max) : out;
  }
}

/**
 * unavailable turns a driver failure (no host, timeouts, overload) into
 * ChatError Unavailable, which clients retry; the original stays as cause.
 * A ChatError (a decision, not a failure) passes through.
 */
function unavailable(e: unknown): never {
  if (e instanceof ChatError) throw e;
  throw new ChatError("Unavailable", "the database is unavailable; retry", { cause: e });
}

/** BucketCursor walks one bucket of a group's events in chunks. */
class BucketCursor {
  private buffer: StoredEvent[] = [];
  private exhausted = false;
  private bound: number;
  private current: StoredEvent | undefined;

  /** `read(bound, n)` returns up to n rows strictly past `bound`, in the scan's order. */
  constructor(
    from: number,
    private readonly chunk: number,
    private readonly read: (bound: number, n: number) => Promise<StoredEvent[]>,
  ) {
    this.bound = from;
  }

  /** head is the cursor's current event; valid after advance() returned true. */
  get head(): StoredEvent {
    if (!this.current) throw new Error("BucketCursor.head before advance");
    return this.current;
  }

  /** advance moves to the next event; false when the bucket has no more. */
  async advance(): Promise<boolean> {
    if (this.buffer.length === 0 && !this.exhausted) {
      const rows = await this.read(this.bound, this.chunk);
      this.exhausted = rows.length < this.chunk;
      const last = rows.at(-1);
      if (last) this.bound = last.seq;
      this.buffer = rows;
    }
    this.current = this.buffer.shift();
    return this.current !== undefined;
  }
}

function pickBest(open: readonly BucketCursor[], better: (a: number, b: number) => boolean): BucketCursor | undefined {
  let best: BucketCursor | undefined;
  for (const c of open) if (!best || better(c.head.seq, best.head.seq)) best = c;
  return best;
}

/** statements builds every CQL string once per keyspace; the driver prepares each on first use. */
function statements(ks: string) {
  const ev = EVENT_COLUMN_NAMES.join(", ");
  const evMarks = EVENT_COLUMN_NAMES.map(() => "?").join(", ");
  return {
    insertUser: `INSERT INTO ${ks}.users (user_id, username, created_at) VALUES (?, ?, ?)`,
    deleteUser: `DELETE FROM ${ks}.users WHERE user_id = ?`,
    claimUsername: `INSERT INTO ${ks}.users_by_name (username, user_id, password_hash, created_at) VALUES (?, ?, ?, ?) IF NOT EXISTS`,
    userByName: `SELECT user_id, password_hash, created_at FROM ${ks}.users_by_name WHERE username = ?`,
    userById: `SELECT username, created_at FROM ${ks}.users WHERE user_id = ?`,

    insertToken: `INSERT INTO ${ks}.refresh_tokens (token_hash, user_id, family_id, expires_at, used_at, revoked_at)
      VALUES (?, ?, ?, ?, ?, ?) USING TTL ?`,
    insertTokenByFamily: `INSERT INTO ${ks}.refresh_tokens_by_family (family_id, token_hash, expires_at) VALUES (?, ?, ?) USING TTL ?`,
    tokenByHash: `SELECT user_id, family_id, expires_at, used_at, revoked_at FROM ${ks}.refresh_tokens WHERE token_hash = ?`,
    markTokenUsed: `UPDATE ${ks}.refresh_tokens USING TTL ? SET used_at = ? WHERE token_hash = ? IF user_id != null AND used_at = null`,
    tokensOfFamily: `SELECT token_hash, expires_at FROM ${ks}.refresh_tokens_by_family WHERE family_id = ?`,
    revokeSession: `INSERT INTO ${ks}.revoked_sessions (family_id, revoked_at) VALUES (?, ?) USING TTL ?`,
    sessionRevoked: `SELECT revoked_at FROM ${ks}.revoked_sessions WHERE family_id = ?`,
    revokeToken: `UPDATE ${ks}.refresh_tokens USING TTL ? SET revoked_at = ? WHERE token_hash = ?`,

    insertGroup: `INSERT INTO ${ks}.groups (group_id, name, epoch, created_at, head_seq, member_count, owner_count)
      VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?`,
    groupById: `SELECT name, epoch, created_at, head_seq, member_count, owner_count FROM ${ks}.groups WHERE group_id = ?`,
    groupChangeStamp: `SELECT WRITETIME(member_count) AS counts_at, WRITETIME(name) AS name_at FROM ${ks}.groups WHERE group_id = ?`,
    setHead: `UPDATE ${ks}.groups USING TIMESTAMP ? SET head_seq = ? WHERE group_id = ?`,
    setCounts: `UPDATE ${ks}.groups USING TIMESTAMP ? SET member_count = ?, owner_count = ? WHERE group_id = ?`,
    renameGroup: `UPDATE ${ks}.groups USING TIMESTAMP ? SET name = ? WHERE group_id = ?`,

    insertMember: `INSERT INTO ${ks}.members_by_group (group_id, user_id, username, role, joined_at)
      VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?`,
    insertMembership: `INSERT INTO ${ks}.groups_by_user (user_id, group_id, role, joined_at) VALUES (?, ?, ?, ?) USING TIMESTAMP ?`,
    deleteMember: `DELETE FROM ${ks}.members_by_group USING TIMESTAMP ? WHERE group_id = ? AND user_id = ?`,
    deleteMembership: `DELETE FROM ${ks}.groups_by_user USING TIMESTAMP ? WHERE user_id = ? AND group_id = ?`,
    setMemberRole: `UPDATE ${ks}.members_by_group USING TIMESTAMP ? SET role = ? WHERE group_id = ? AND user_id = ?`,
    setMembershipRole: `UPDATE ${ks}.groups_by_user USING TIMESTAMP ? SET role = ? WHERE user_id = ? AND group_id = ?`,
    ackByGroup: `UPDATE ${ks}.members_by_group USING TIMESTAMP ? SET acked_seq = ? WHERE group_id = ? AND user_id = ?`,
    ackByUser: `UPDATE ${ks}.groups_by_user USING TIMESTAMP ? SET acked_seq = ? WHERE user_id = ? AND group_id = ?`,
    member: `SELECT user_id, username, role, joined_at, acked_seq FROM ${ks}.members_by_group WHERE group_id = ? AND user_id = ?`,
    membersPage: `SELECT user_id, username, role, joined_at, acked_seq FROM ${ks}.members_by_group
      WHERE group_id = ? AND user_id > ? LIMIT ?`,
    memberRoles: `SELECT role, joined_at FROM ${ks}.members_by_group WHERE group_id = ?`,
    membershipsPage: `SELECT group_id, role, joined_at, acked_seq FROM ${ks}.groups_by_user
      WHERE user_id = ? AND group_id > ? LIMIT ?`,
    membershipRoles: `SELECT role, joined_at FROM ${ks}.groups_by_user WHERE user_id = ?`,

    insertEvent: `INSERT INTO ${ks}.events_by_group (group_id, bucket, seq, ${ev}) VALUES (?, ?, ?, ${evMarks})`,
    eventAt: `SELECT seq, ${ev} FROM ${ks}.events_by_group WHERE group_id = ? AND bucket = ? AND seq = ?`,
    seqsInRange: `SELECT seq FROM ${ks}.events_by_group WHERE group_id = ? AND bucket = ? AND seq >= ? AND seq <= ?`,
    eventsAsc: `SELECT seq, ${ev} FROM ${ks}.events_by_group
      WHERE group_id = ? AND bucket = ? AND seq > ? ORDER BY seq ASC LIMIT ?`,
    eventsDesc: `SELECT seq, ${ev} FROM ${ks}.events_by_group
      WHERE group_id = ? AND bucket = ? AND seq < ? ORDER BY seq DESC LIMIT ?`,
    // Single-partition filtering on `at`, only for the bucket that straddles the retention cutoff.
    eventsAscSince: `SELECT seq, ${ev} FROM ${ks}.events_by_group
      WHERE group_id = ? AND bucket = ? AND seq > ? AND at >= ? ORDER BY seq ASC LIMIT ? ALLOW FILTERING`,
    eventsDescSince: `SELECT seq, ${ev} FROM ${ks}.events_by_group
      WHERE group_id = ? AND bucket = ? AND seq < ? AND at >= ? ORDER BY seq DESC LIMIT ? ALLOW FILTERING`,
    bucketFirst: `UPDATE ${ks}.group_buckets USING TIMESTAMP ? SET first_seq = ? WHERE group_id = ? AND bucket = ?`,
    bucketLast: `UPDATE ${ks}.group_buckets USING TIMESTAMP ? SET last_seq = ? WHERE group_id = ? AND bucket = ?`,
    buckets: `SELECT bucket, first_seq, last_seq FROM ${ks}.group_buckets WHERE group_id = ?`,
    insertMessageId: `INSERT INTO ${ks}.message_ids (group_id, sender_id, client_message_id, seq, bucket, at)
      VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?`,
    messageId: `SELECT seq, bucket, at FROM ${ks}.message_ids WHERE group_id = ? AND sender_id = ? AND client_message_id = ?`,
  };
}

// ------------------------------------------------------------ row helpers

/**
 * SMALL_BATCH_BYTES bounds the text of a message whose event row goes into
 * the message's batch: Cassandra logs a warning for every batch above
 * `batch_size_warn_threshold` (5 KiB by default) and refuses one above 50 KiB.
 */
const SMALL_BATCH_BYTES = 3072;

/**
 * MESSAGES_BATCH_BYTES bounds what writeMessages puts in one batch (each
 * message counted as its text's length plus ROW_OVERHEAD_BYTES for its other
 * columns and its message_ids row), near Cassandra's 5 KiB batch-size
 * warning; a text longer than SMALL_BATCH_BYTES goes alone.
 */
const MESSAGES_BATCH_BYTES = 4096;
const ROW_OVERHEAD_BYTES = 256;

/** isSmall tells whether a text's UTF-8 length is at most SMALL_BATCH_BYTES (without encoding short ones). */
function isSmall(text: string): boolean {
  if (text.length * 3 <= SMALL_BATCH_BYTES) return true;
  return text.length <= SMALL_BATCH_BYTES && Buffer.byteLength(text, "utf8") <= SMALL_BATCH_BYTES;
}

function clampLimit(limit: number): number {
  return Number.isFinite(limit) ? Math.max(0, Math.floor(limit)) : 0;
}

function isRole(v: unknown): v is Role {
  return v === "member" || v === "admin" || v === "owner";
}

/** toMember maps a members_by_group row; undefined for a partial row (no role or joined_at). */
function toMember(groupId: string, r: types.Row): Member | undefined {
  const role = optStr(r, "role");
  const joinedAt = optNum(r, "joined_at");
  const username = optStr(r, "username");
  if (!isRole(role) || joinedAt === null || username === null) return undefined;
  return { groupId, user: { id: str(r, "user_id"), username }, role, joinedAt, ackedSeq: optNum(r, "acked_seq") ?? 0 };
}

function eventColumns(r: types.Row): EventColumns {
  return {
    kind: str(r, "kind") as EventColumns["kind"],
    at: num(r, "at"),
    actor_id: str(r, "actor_id"),
    actor_name: str(r, "actor_name"),
    message_id: optStr(r, "message_id"),
    message_text: optStr(r, "message_text"),
    client_message_id: optStr(r, "client_message_id"),
    payload: optStr(r, "payload"),
  };
}

function optStr(r: types.Row | undefined, col: string): string | null {
  const v: unknown = r?.get(col);
  return typeof v === "string" ? v : null;
}

function str(r: types.Row | undefined, col: string): string {
  const v = optStr(r, col);
  if (v === null) throw new ChatError("Internal", `column ${col} is missing`);
  return v;
}

/** optNum reads an int or bigint column (the driver gives Long for bigint) as a number, or null. */
function optNum(r: types.Row | undefined, col: string): number | null {
  const v: unknown = r?.get(col);
  if (v === null || v === undefined) return null;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  if (v instanceof cassandra.types.Long) return v.toNumber();
  throw new ChatError("Internal", `column ${col} is not a number`);
}

function num(r: types.Row | undefined, col: string): number {
  const v = optNum(r, col);
  if (v === null) throw new ChatError("Internal", `column ${col} is missing`);
  return v;
}

