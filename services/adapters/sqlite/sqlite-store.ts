/**
 * SqliteStore: the embedded Store on better-sqlite3 (one file, WAL).
 *
 * better-sqlite3 is synchronous, so within one process every call runs to
 * completion before the next starts; writes still use IMMEDIATE transactions
 * so that another connection on the same file cannot interleave. With
 * journal_mode=WAL and synchronous=FULL a commit is on disk before the
 * method's promise resolves.
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { Database as Db } from "better-sqlite3";
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
  Role,
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
import { migrate } from "./schema.js";
import { SqliteDevices } from "./sqlite-devices.js";
import { SqlitePushLedger } from "./sqlite-push-ledger.js";
import { SqliteReadStates } from "./sqlite-read-state.js";
import { WalCheckpointer } from "./wal-checkpointer.js";

/** SqliteStoreOptions configures createSqliteStore. */
export interface SqliteStoreOptions {
  /** File path (its directory is created if missing) or ":memory:". */
  readonly path: string;
  /** Events with `at` older than now - retentionMs are invisible to reads and removed by purgeExpired. */
  readonly retentionMs: number;
  /** Source of "now" for retention. */
  readonly clock: Clock;
  /** onBackgroundError hears failures of the store's background work (the WAL checkpoint worker); the store carries on. */
  readonly onBackgroundError?: (e: Error) => void;
  /**
   * onCommit hears how long each group commit of appended messages took (seconds, one transaction with its WAL
   * fsync, on the event loop): a slow disk shows here first.
   */
  readonly onCommit?: (seconds: number) => void;
  /**
   * commitWindowMs (default DEFAULT_COMMIT_WINDOW_MS for a file, 0 in memory) caps the group commit's window: after
   * a commit, the next one waits as long as that commit took (its fsync included), at most commitWindowMs, so that
   * it takes every append of that time. The event loop then spends at most about half its time in commits, and an
   * append waits only when commits are slow: after a commit shorter than 1 ms (a fast disk), or after a quiet
   * spell, it commits at the end of its event-loop turn, as with 0, where every turn commits its own appends.
   * Either way a caller hears of its append only after the commit that holds it.
   */
  readonly commitWindowMs?: number;
}

/**
 * DEFAULT_COMMIT_WINDOW_MS is SqliteStoreOptions.commitWindowMs's default: measured with
 * bench/tools/commit-window.ts (docs/performance.md, issue 16.2).
 */
export const DEFAULT_COMMIT_WINDOW_MS = 4;

interface UserRow {
  id: string;
  username: string;
  password_hash: string;
  created_at: number;
}

interface TokenRow {
  token_hash: string;
  user_id: string;
  family_id: string;
  expires_at: number;
  used_at: number | null;
  revoked_at: number | null;
}

interface GroupRow {
  id: string;
  name: string;
  epoch: string;
  created_at: number;
  head_seq: number;
  member_count: number;
}

interface MemberRow {
  group_id: string;
  user_id: string;
  username: string;
  role: string;
  joined_at: number;
  acked_seq: number;
}

type MembershipRow = GroupRow & { role: string; acked_seq: number };

/** EventRow is one row of `events` as read with EVENT_COLUMNS (also by SqliteEventFeed). */
export interface EventRow {
  group_id: string;
  seq: number;
  at: number;
  actor_id: string;
  actor_name: string;
  type: string;
  payload: string | null;
  message_id: string | null;
  text: string | null;
  client_message_id: string | null;
}

type MessageEvent = AppendResult["event"];

/** EVENT_COLUMNS are the `events` columns an EventRow holds, in select order. */
export const EVENT_COLUMNS = "group_id, seq, at, actor_id, actor_name, type, payload, message_id, text, client_message_id";
const GROUP_COLUMNS = "g.id, g.name, g.epoch, g.created_at, g.head_seq, g.member_count";

/** Statements are prepared once per store; names say what each does. */
function prepareStatements(db: Db) {
  return {
    insertUser: db.prepare<[string, string, string, number]>(
      "INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)",
    ),
    userByName: db.prepare<[string], UserRow>("SELECT * FROM users WHERE username = ?"),
    userById: db.prepare<[string], UserRow>("SELECT * FROM users WHERE id = ?"),
    insertToken: db.prepare<[string, string, string, number, number | null, number | null]>(
      `INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, used_at, revoked_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ),
    tokenByHash: db.prepare<[string], TokenRow>("SELECT * FROM refresh_tokens WHERE token_hash = ?"),
    markTokenUsed: db.prepare<[number, string]>(
      "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
    ),
    revokeFamily: db.prepare<[number, string]>(
      "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
    ),
    familyRevoked: db.prepare<[string], number>(
      "SELECT 1 FROM refresh_tokens WHERE family_id = ? AND revoked_at IS NOT NULL LIMIT 1",
    ).pluck(),
    insertGroup: db.prepare<[string, string, string, number]>(
      "INSERT INTO groups (id, name, epoch, created_at, head_seq, member_count) VALUES (?, ?, ?, ?, 1, 1)",
    ),
    groupById: db.prepare<[string], GroupRow>(`SELECT ${GROUP_COLUMNS} FROM groups g WHERE g.id = ?`),
    setGroupHead: db.prepare<[number, string]>("UPDATE groups SET head_seq = ? WHERE id = ?"),
    setGroupHeadAndCount: db.prepare<[number, number, string]>(
      "UPDATE groups SET head_seq = ?, member_count = member_count + ? WHERE id = ?",
    ),
    renameGroup: db.prepare<[string, string]>("UPDATE groups SET name = ? WHERE id = ?"),
    // A new member's read marker starts at its member_added event (the last argument); its push setting at the default.
    insertMember: db.prepare<[string, string, string, string, number, number]>(
      "INSERT INTO members (group_id, user_id, username, role, joined_at, acked_seq, last_read_seq) VALUES (?, ?, ?, ?, ?, 0, ?)",
    ),
    deleteMember: db.prepare<[string, string]>("DELETE FROM members WHERE group_id = ? AND user_id = ?"),
    setMemberRole: db.prepare<[string, string, string]>(
      "UPDATE members SET role = ? WHERE group_id = ? AND user_id = ?",
    ),
    ackMember: db.prepare<[number, string, string]>(
      "UPDATE members SET acked_seq = MAX(acked_seq, ?) WHERE group_id = ? AND user_id = ?",
    ),
    member: db.prepare<[string, string], MemberRow>("SELECT * FROM members WHERE group_id = ? AND user_id = ?"),
    // The group's head, if the user is a member of it (an append's one check): two primary-key seeks.
    memberGroupHead: db
      .prepare<[string, string], number>(
        "SELECT g.head_seq FROM members m JOIN groups g ON g.id = m.group_id WHERE m.group_id = ? AND m.user_id = ?",
      )
      .pluck(),
    groupsOfUser: db
      .prepare<[string, number], number>("SELECT COUNT(*) FROM (SELECT 1 FROM members WHERE user_id = ? LIMIT ?)")
      .pluck(),
    ownerCount: db
      .prepare<[string], number>("SELECT COUNT(*) FROM members WHERE group_id = ? AND role = 'owner'")
      .pluck(),
    membersPage: db.prepare<[string, string, number], MemberRow>(
      "SELECT * FROM members WHERE group_id = ? AND user_id > ? ORDER BY user_id LIMIT ?",
    ),
    membershipsPage: db.prepare<[string, string, number], MembershipRow>(
      `SELECT ${GROUP_COLUMNS}, m.role, m.acked_seq
       FROM members m JOIN groups g ON g.id = m.group_id
       WHERE m.user_id = ? AND m.group_id > ? ORDER BY m.group_id LIMIT ?`,
    ),
    groupIdsPage: db.prepare<[string, string, number], { group_id: string }>(
      "SELECT group_id FROM members WHERE user_id = ? AND group_id > ? ORDER BY group_id LIMIT ?",
    ),
    insertEvent: db.prepare<
      [string, number, number, string, string, string, string | null, string | null, string | null, string | null]
    >(`INSERT INTO events (${EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
    messageByClientId: db.prepare<[string, string, string], EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM events
       WHERE group_id = ? AND actor_id = ? AND client_message_id = ? AND type = 'message'`,
    ),
    deleteEvent: db.prepare<[string, number]>("DELETE FROM events WHERE group_id = ? AND seq = ?"),
    eventsAfter: db.prepare<[string, number, number, number], EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM events WHERE group_id = ? AND seq > ? AND at >= ? ORDER BY seq LIMIT ?`,
    ),
    messagesNewest: db.prepare<[string, number, number, number], EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM events
       WHERE group_id = ? AND type = 'message' AND seq < ? AND at >= ? ORDER BY seq DESC LIMIT ?`,
    ),
    messagesOldest: db.prepare<[string, number, number, number, number], EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM events
       WHERE group_id = ? AND type = 'message' AND seq > ? AND seq < ? AND at >= ? ORDER BY seq LIMIT ?`,
    ),
    firstRetained: db.prepare<[string, number], { seq: number; at: number }>(
      "SELECT seq, at FROM events WHERE group_id = ? AND at >= ? ORDER BY seq LIMIT 1",
    ),
    purge: db.prepare<[number]>("DELETE FROM events WHERE at < ?"),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/**
 * SqliteStore implements Store on one SQLite database.
 *
 * Guarantees (beyond the Store contract): every write commits in an
 * IMMEDIATE transaction and is fsynced (WAL + synchronous=FULL) before its
 * promise resolves; within one process, writes are applied in call order.
 *
 * Group commit: appendMessage calls made in one event-loop turn are applied
 * together in one transaction, so a burst of sends pays one fsync (which
 * blocks the event loop) instead of one each; when commits are slow, those
 * of a commit window as long as the previous commit are
 * (SqliteStoreOptions.commitWindowMs). A call that is refused
 * (NotFound) writes nothing; the others commit. Each call settles only after
 * the commit that holds it. A group change or creation first applies the
 * appends queued before it, so writes keep their call order.
 *
 * Read state (SqliteReadStates), devices (SqliteDevices) and the push ledger
 * (SqlitePushLedger) are written at once, outside the group commit: none of
 * them appends an event.
 */
export class SqliteStore implements Store {
  private readonly stmts: Statements;
  private readonly readStateTable: SqliteReadStates;
  private readonly devices: SqliteDevices;
  private readonly ledger: SqlitePushLedger;
  private readonly createGroupTx: (group: NewGroup) => GroupEvent;
  private readonly changeGroupTx: (
    groupId: string,
    userIds: readonly string[],
    actor: UserRef,
    at: number,
    decide: (snapshot: GroupSnapshot) => GroupChange,
  ) => GroupEvent;
  private readonly appendBatchTx: (drafts: readonly MessageDraft[]) => (AppendResult | ChatError)[];
  /** Appends waiting for the end of this event-loop turn (group commit). */
  private pending: { draft: MessageDraft; resolve: (r: AppendResult) => void; reject: (e: unknown) => void }[] = [];
  /** The flush of `pending` at the end of this turn, or (flushTimer) at the end of the commit window; at most one is set. */
  private flushImmediate: NodeJS.Immediate | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  /** When the last group commit ended (performance.now()) and how long it took, ms: the commit window. */
  private lastCommitEnd = -Infinity;
  private lastCommitMs = 0;

  /** constructor takes an open, migrated database; prefer createSqliteStore. */
  constructor(
    /** db is the store's connection; an in-memory database is reachable only through it (SqliteEventFeed shares it then). */
    readonly db: Db,
    private readonly retentionMs: number,
    private readonly clock: Clock,
    /** Checkpoints the WAL off the event loop; closed with the store. */
    private readonly checkpointer?: WalCheckpointer,
    /** Hears the duration of each group commit (SqliteStoreOptions.onCommit). */
    private readonly onCommit?: (seconds: number) => void,
    /** SqliteStoreOptions.commitWindowMs. */
    private readonly commitWindowMs = DEFAULT_COMMIT_WINDOW_MS,
  ) {
    this.stmts = prepareStatements(db);
    this.readStateTable = new SqliteReadStates(db, () => this.cutoff());
    this.devices = new SqliteDevices(db);
    this.ledger = new SqlitePushLedger(db, clock);
    const createGroup = db.transaction((g: NewGroup) => this.createGroupInTx(g));
    const changeGroup = db.transaction(
      (
        groupId: string,
        userIds: readonly string[],
        actor: UserRef,
        at: number,
        decide: (snapshot: GroupSnapshot) => GroupChange,
      ) => this.changeGroupInTx(groupId, userIds, actor, at, decide),
    );
    // An append that is refused (ChatError) has written nothing (appendInTx checks before it writes), so the
    // others of its batch commit without it, and no append needs a savepoint of its own.
    const appendBatch = db.transaction((drafts: readonly MessageDraft[]) =>
      drafts.map((d) => {
        try {
          return this.appendInTx(d);
        } catch (e) {
          if (e instanceof ChatError) return e;
          throw e;
        }
      }),
    );
    this.createGroupTx = (g) => {
      this.flushAppends();
      return createGroup.immediate(g);
    };
    this.changeGroupTx = (...args) => {
      this.flushAppends();
      return changeGroup.immediate(...args);
    };
    this.appendBatchTx = (drafts) => appendBatch.immediate(drafts);
  }

  // ---- users ----

  async createUser(user: UserCredentials): Promise<void> {
    try {
      this.stmts.insertUser.run(user.id, user.username, user.passwordHash, user.createdAt);
    } catch (e) {
      if (isConstraint(e, "users.username")) {
        throw new ChatError("AlreadyExists", `username ${user.username} is taken`, { cause: e });
      }
      if (isConstraint(e, "users.id")) {
        throw new ChatError("AlreadyExists", `user ${user.id} already exists`, { cause: e });
      }
      throw e;
    }
  }

  async findUserByName(username: string): Promise<UserCredentials | undefined> {
    const row = this.stmts.userByName.get(username);
    return row && { ...toUser(row), passwordHash: row.password_hash };
  }

  async getUser(userId: string): Promise<User | undefined> {
    const row = this.stmts.userById.get(userId);
    return row && toUser(row);
  }

  // ---- refresh tokens ----

  async insertRefreshToken(r: RefreshTokenRecord): Promise<void> {
    this.stmts.insertToken.run(r.tokenHash, r.userId, r.familyId, r.expiresAt, r.usedAt, r.revokedAt);
  }

  async findRefreshToken(tokenHash: string): Promise<RefreshTokenRecord | undefined> {
    const row = this.stmts.tokenByHash.get(tokenHash);
    return row && toToken(row);
  }

  async markRefreshTokenUsed(tokenHash: string, at: number): Promise<boolean> {
    return this.stmts.markTokenUsed.run(at, tokenHash).changes === 1;
  }

  async revokeRefreshFamily(familyId: string, at: number): Promise<void> {
    this.stmts.revokeFamily.run(at, familyId);
  }

  /** isSessionRevoked seeks the (family_id, revoked_at) index (refresh_tokens_family_revoked): one indexed lookup. */
  async isSessionRevoked(familyId: string): Promise<boolean> {
    return this.stmts.familyRevoked.get(familyId) !== undefined;
  }

  // ---- groups ----

  async createGroup(group: NewGroup): Promise<GroupEvent> {
    return this.createGroupTx(group);
  }

  async getGroup(groupId: string): Promise<Group | undefined> {
    const row = this.stmts.groupById.get(groupId);
    return row && toGroup(row);
  }

  async getMember(groupId: string, userId: string): Promise<Member | undefined> {
    const row = this.stmts.member.get(groupId, userId);
    return row && toMember(row);
  }

  async listMembers(groupId: string, afterUserId: string, limit: number): Promise<Member[]> {
    return this.stmts.membersPage.all(groupId, afterUserId, clampLimit(limit)).map(toMember);
  }

  async listMemberships(userId: string, afterGroupId: string, limit: number): Promise<Membership[]> {
    return this.stmts.membershipsPage.all(userId, afterGroupId, clampLimit(limit)).map(toMembership);
  }

  async listGroupIdsOf(userId: string, afterGroupId: string, limit: number): Promise<string[]> {
    return this.stmts.groupIdsPage.all(userId, afterGroupId, clampLimit(limit)).map((r) => r.group_id);
  }

  async countMemberships(userId: string, upTo: number): Promise<number> {
    return this.groupCount(userId, upTo);
  }

  async changeGroup(
    groupId: string,
    userIds: readonly string[],
    actor: UserRef,
    at: number,
    decide: (snapshot: GroupSnapshot) => GroupChange,
  ): Promise<GroupEvent> {
    return this.changeGroupTx(groupId, userIds, actor, at, decide);
  }

  appendMessage(draft: MessageDraft): Promise<AppendResult> {
    return new Promise((resolve, reject) => {
      this.pending.push({ draft, resolve, reject });
      if (this.flushImmediate !== undefined || this.flushTimer !== undefined) return;
      const wait = this.lastCommitEnd + Math.min(this.commitWindowMs, this.lastCommitMs) - performance.now();
      if (wait >= 1) this.flushTimer = setTimeout(this.flushAppends, wait);
      else this.flushImmediate = setImmediate(this.flushAppends);
    });
  }

  /** flushAppends applies the queued appends in one transaction and settles their promises. */
  private readonly flushAppends = (): void => {
    clearImmediate(this.flushImmediate);
    clearTimeout(this.flushTimer);
    this.flushImmediate = undefined;
    this.flushTimer = undefined;
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    let results: (AppendResult | ChatError)[];
    const started = performance.now();
    try {
      results = this.appendBatchTx(batch.map((p) => p.draft));
    } catch (e) {
      for (const p of batch) p.reject(e);
      return;
    } finally {
      this.lastCommitEnd = performance.now();
      this.lastCommitMs = this.lastCommitEnd - started;
      this.onCommit?.(this.lastCommitMs / 1000);
    }
    batch.forEach((p, i) => {
      const r = results[i]!;
      if (r instanceof ChatError) p.reject(r);
      else p.resolve(r);
    });
  };

  async readEvents(groupId: string, afterSeq: number, limit: number): Promise<GroupEvent[]> {
    return this.stmts.eventsAfter.all(groupId, afterSeq, this.cutoff(), clampLimit(limit)).map(toEvent);
  }

  async listMessages(
    groupId: string,
    anchor: { beforeSeq?: number; afterSeq?: number },
    limit: number,
  ): Promise<MessagePage> {
    const n = clampLimit(limit);
    if (anchor.afterSeq !== undefined) {
      const before = anchor.beforeSeq ?? Number.MAX_SAFE_INTEGER;
      const rows = this.stmts.messagesOldest.all(groupId, anchor.afterSeq, before, this.cutoff(), n + 1);
      return { messages: rows.slice(0, n).map(toMessage), hasMore: rows.length > n };
    }
    const before = anchor.beforeSeq ?? Number.MAX_SAFE_INTEGER;
    const rows = this.stmts.messagesNewest.all(groupId, before, this.cutoff(), n + 1);
    return { messages: rows.slice(0, n).reverse().map(toMessage), hasMore: rows.length > n };
  }

  async firstRetained(groupId: string): Promise<RetainedEdge | undefined> {
    const row = this.stmts.firstRetained.get(groupId, this.cutoff());
    return row && { seq: row.seq, retainedUntil: row.at + this.retentionMs };
  }

  async ackMember(groupId: string, userId: string, seq: number): Promise<void> {
    this.stmts.ackMember.run(seq, groupId, userId);
  }

  /** purgeExpired also deletes expired push ledger records (not counted: it returns the number of events). */
  async purgeExpired(): Promise<number> {
    this.ledger.purgeExpired();
    return this.stmts.purge.run(this.cutoff()).changes;
  }

  // ---- read state, devices, push ledger ----

  markRead(groupId: string, userId: string, seq: number): Promise<number | undefined> {
    return this.readStateTable.markRead(groupId, userId, seq);
  }

  readStates(groupId: string, userIds: readonly string[]): Promise<Map<string, MemberReadState>> {
    return this.readStateTable.readStates(groupId, userIds);
  }

  readStatesOfUser(userId: string, groupIds: readonly string[]): Promise<Map<string, MemberReadState>> {
    return this.readStateTable.readStatesOfUser(userId, groupIds);
  }

  setNotify(groupId: string, userId: string, notify: NotifySetting): Promise<boolean> {
    return this.readStateTable.setNotify(groupId, userId, notify);
  }

  countUnread(groupId: string, userId: string, afterSeq: number, cap: number): Promise<number> {
    return this.readStateTable.countUnread(groupId, userId, afterSeq, cap);
  }

  registerDevice(device: Device, maxDevices: number): Promise<Device> {
    return this.devices.registerDevice(device, maxDevices);
  }

  unregisterDevice(userId: string, deviceId: string): Promise<boolean> {
    return this.devices.unregisterDevice(userId, deviceId);
  }

  listDevices(userId: string): Promise<Device[]> {
    return this.devices.listDevices(userId);
  }

  removeDeviceToken(userId: string, deviceId: string, token: string): Promise<void> {
    return this.devices.removeDeviceToken(userId, deviceId, token);
  }

  claimPush(deviceId: string, groupId: string, newestSeq: number, ttlMs: number): Promise<boolean> {
    return this.ledger.claimPush(deviceId, groupId, newestSeq, ttlMs);
  }

  async close(): Promise<void> {
    if (this.db.open) this.flushAppends();
    await this.checkpointer?.stop();
    if (this.db.open) this.db.close();
  }

  // ---- transaction bodies (run inside IMMEDIATE transactions) ----

  private createGroupInTx(g: NewGroup): GroupEvent {
    if (g.maxOwnerGroups !== undefined && this.groupCount(g.owner.id, g.maxOwnerGroups) >= g.maxOwnerGroups) {
      throw tooManyGroups(undefined, g.maxOwnerGroups);
    }
    try {
      this.stmts.insertGroup.run(g.id, g.name, g.epoch, g.createdAt);
    } catch (e) {
      if (isConstraint(e, "groups.id")) throw new ChatError("AlreadyExists", `group ${g.id} already exists`, { cause: e });
      throw e;
    }
    this.stmts.insertMember.run(g.id, g.owner.id, g.owner.username, "owner", g.createdAt, 1);
    const event: GroupEvent = {
      groupId: g.id,
      seq: 1,
      at: g.createdAt,
      actor: g.owner,
      body: { type: "member_added", member: g.owner, role: "owner" },
    };
    this.insertEvent(event);
    return event;
  }

  private changeGroupInTx(
    groupId: string,
    userIds: readonly string[],
    actor: UserRef,
    at: number,
    decide: (snapshot: GroupSnapshot) => GroupChange,
  ): GroupEvent {
    const snapshot = this.snapshot(groupId, userIds);
    const change = decide(snapshot);
    const seq = snapshot.group.headSeq + 1;
    const { body, countDelta } = this.applyChange(groupId, change, at, seq);
    const event: GroupEvent = { groupId, seq, at, actor, body };
    this.insertEvent(event);
    this.stmts.setGroupHeadAndCount.run(event.seq, countDelta, groupId);
    return event;
  }

  /** groupCount is how many groups the user is in, counted up to `upTo` (inside the caller's write transaction). */
  private groupCount(userId: string, upTo: number): number {
    return this.stmts.groupsOfUser.get(userId, upTo) ?? 0;
  }

  private snapshot(groupId: string, userIds: readonly string[]): GroupSnapshot {
    const row = this.stmts.groupById.get(groupId);
    if (!row) throw groupNotFound(groupId);
    const members = new Map<string, Member>();
    for (const userId of userIds) {
      const m = this.stmts.member.get(groupId, userId);
      if (m) members.set(userId, toMember(m));
    }
    return { group: toGroup(row), members, ownerCount: this.stmts.ownerCount.get(groupId) ?? 0 };
  }

  /** applyChange writes the change's state (as of its event `seq`) and returns its event body and member-count delta. */
  private applyChange(groupId: string, change: GroupChange, at: number, seq: number): { body: EventBody; countDelta: number } {
    switch (change.type) {
      case "add": {
        if (this.stmts.member.get(groupId, change.member.id)) {
          throw new ChatError("AlreadyExists", `user ${change.member.username} is already a member`);
        }
        if (change.maxGroups !== undefined && this.groupCount(change.member.id, change.maxGroups) >= change.maxGroups) {
          throw tooManyGroups(change.member, change.maxGroups);
        }
        this.stmts.insertMember.run(groupId, change.member.id, change.member.username, change.role, at, seq);
        return { body: { type: "member_added", member: change.member, role: change.role }, countDelta: 1 };
      }
      case "remove": {
        this.requireMember(groupId, change.member);
        this.stmts.deleteMember.run(groupId, change.member.id);
        return { body: { type: "member_removed", member: change.member }, countDelta: -1 };
      }
      case "set_role": {
        this.requireMember(groupId, change.member);
        this.stmts.setMemberRole.run(change.role, groupId, change.member.id);
        return { body: { type: "member_role_changed", member: change.member, role: change.role }, countDelta: 0 };
      }
      case "rename": {
        this.stmts.renameGroup.run(change.name, groupId);
        return { body: { type: "group_renamed", name: change.name }, countDelta: 0 };
      }
    }
  }

  private requireMember(groupId: string, user: UserRef): void {
    if (!this.stmts.member.get(groupId, user.id)) {
      throw new ChatError("NotFound", `user ${user.username} is not a member of group ${groupId}`);
    }
  }

  /**
   * appendInTx appends one message inside the group commit's transaction. Every check that can refuse it
   * (ChatError) comes before its first write, so a refused append leaves the transaction as it found it.
   */
  private appendInTx(d: MessageDraft): AppendResult {
    const previous = this.stmts.messageByClientId.get(d.groupId, d.sender.id, d.clientMessageId);
    if (previous && previous.at >= this.cutoff()) {
      return { event: toEvent(previous) as MessageEvent, duplicate: true };
    }
    const head = this.stmts.memberGroupHead.get(d.groupId, d.sender.id);
    if (head === undefined) throw groupNotFound(d.groupId);
    // An expired original no longer counts; drop it so the unique index admits the new one.
    if (previous) this.stmts.deleteEvent.run(previous.group_id, previous.seq);
    const message: ChatMessage = {
      id: d.id,
      groupId: d.groupId,
      seq: head + 1,
      sender: d.sender,
      text: d.text,
      sentAt: d.sentAt,
      clientMessageId: d.clientMessageId,
    };
    const event: MessageEvent = {
      groupId: d.groupId,
      seq: message.seq,
      at: d.sentAt,
      actor: d.sender,
      body: { type: "message", message },
    };
    this.insertEvent(event);
    this.stmts.setGroupHead.run(message.seq, d.groupId);
    return { event, duplicate: false };
  }

  private insertEvent(e: GroupEvent): void {
    const b = e.body;
    const isMessage = b.type === "message";
    this.stmts.insertEvent.run(
      e.groupId,
      e.seq,
      e.at,
      e.actor.id,
      e.actor.username,
      b.type,
      isMessage ? null : JSON.stringify(b),
      isMessage ? b.message.id : null,
      isMessage ? b.message.text : null,
      isMessage ? b.message.clientMessageId : null,
    );
  }

  private cutoff(): number {
    return this.clock.now() - this.retentionMs;
  }
}

/**
 * createSqliteStore opens (creating if missing, with its parent directory)
 * the database at `opts.path`, sets WAL, synchronous=FULL, foreign_keys=ON
 * and busy_timeout=5000, applies pending migrations and returns the store.
 * A file database checkpoints its WAL from a worker thread (WalCheckpointer).
 * Throws if the file cannot be opened or migrated.
 */
export function createSqliteStore(opts: SqliteStoreOptions): SqliteStore {
  if (opts.path !== ":memory:" && opts.path !== "") mkdirSync(dirname(opts.path), { recursive: true });
  const db = new Database(opts.path);
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    db.pragma("busy_timeout = 5000");
    migrate(db);
    if (opts.path === ":memory:" || opts.path === "") {
      // In memory there is no fsync to share: no window unless asked for.
      return new SqliteStore(db, opts.retentionMs, opts.clock, undefined, undefined, opts.commitWindowMs ?? 0);
    }
    const checkpointer = new WalCheckpointer(db, opts.path, opts.onBackgroundError ? { onFailure: opts.onBackgroundError } : {});
    try {
      return new SqliteStore(db, opts.retentionMs, opts.clock, checkpointer, opts.onCommit, opts.commitWindowMs);
    } catch (e) {
      void checkpointer.stop();
      throw e;
    }
  } catch (e) {
    db.close();
    throw e;
  }
}

// ---- row mapping ----

function clampLimit(limit: number): number {
  return Number.isFinite(limit) ? Math.max(0, Math.floor(limit)) : 0;
}

/** isConstraint tells whether e is a SQLite UNIQUE/PRIMARY KEY violation on `column` ("table.column"). */
function isConstraint(e: unknown, column: string): boolean {
  return (
    e instanceof Database.SqliteError &&
    (e.code === "SQLITE_CONSTRAINT_UNIQUE" || e.code === "SQLITE_CONSTRAINT_PRIMARYKEY") &&
    e.message.includes(column)
  );
}

function toUser(r: UserRow): User {
  return { id: r.id, username: r.username, createdAt: r.created_at };
}

function toToken(r: TokenRow): RefreshTokenRecord {
  return {
    tokenHash: r.token_hash,
    userId: r.user_id,
    familyId: r.family_id,
    expiresAt: r.expires_at,
    usedAt: r.used_at,
    revokedAt: r.revoked_at,
  };
}

function toGroup(r: GroupRow): Group {
  return {
    id: r.id,
    name: r.name,
    createdAt: r.created_at,
    epoch: r.epoch,
    headSeq: r.head_seq,
    memberCount: r.member_count,
  };
}

function toMember(r: MemberRow): Member {
  return {
    groupId: r.group_id,
    user: { id: r.user_id, username: r.username },
    role: r.role as Role,
    joinedAt: r.joined_at,
    ackedSeq: r.acked_seq,
  };
}

function toMembership(r: MembershipRow): Membership {
  return { group: toGroup(r), role: r.role as Role, ackedSeq: r.acked_seq };
}

function toMessage(r: EventRow): ChatMessage {
  return {
    id: r.message_id ?? "",
    groupId: r.group_id,
    seq: r.seq,
    sender: { id: r.actor_id, username: r.actor_name },
    text: r.text ?? "",
    sentAt: r.at,
    clientMessageId: r.client_message_id ?? "",
  };
}

/** toEvent decodes an `events` row into the GroupEvent it stores (also used by SqliteEventFeed). */
export function toEvent(r: EventRow): GroupEvent {
  const body: EventBody =
    r.type === "message" ? { type: "message", message: toMessage(r) } : (JSON.parse(r.payload ?? "null") as EventBody);
  return { groupId: r.group_id, seq: r.seq, at: r.at, actor: { id: r.actor_id, username: r.actor_name }, body };
}
