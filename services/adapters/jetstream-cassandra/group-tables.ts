/**
 * GroupTables: the groups and memberships family of the production Store's
 * tables (docs/production.md, "Storage"): `groups`, `members_by_group` and
 * `groups_by_user`. It writes the rows a group's creation, a membership event
 * or a rename changes (with the event itself: EventTables.eventWrites) and
 * reads them back; it decides nothing (the Store does) and assigns no seqs.
 *
 * Rules every method keeps (besides CassandraSession's):
 * - Every write to `groups`, `members_by_group` and `groups_by_user` carries
 *   `USING TIMESTAMP <seq>` of the event it comes from (1 for the group's
 *   creation). Cassandra keeps the cell with the highest timestamp, so the
 *   state converges on "after the highest seq" whatever the write order:
 *   head_seq never goes down, a replayed old add cannot undo a later removal,
 *   and an ack (written with timestamp = the acked seq) never lowers acked_seq.
 *   Nothing may ever write those tables with a wall-clock timestamp: one such
 *   cell would win over every later seq-stamped write. The read state on the
 *   membership rows (ReadStateTables, read-state-tables.ts) keeps this rule:
 *   member_added writes last_read_seq = its seq here.
 * - Counts are stored: `member_count` and `owner_count` are written with the
 *   event that changes them (its writer knows them from the snapshot it
 *   decided on); countMembers derives them for repairs.
 */
import type { types } from "cassandra-driver";
import { ChatError } from "../../core/errors.js";
import { mapLimit } from "../../core/map-limit.js";
import type { Group, GroupEvent, Member, Membership } from "../../core/model.js";
import type { NewGroup } from "../../core/ports.js";
import { LOOKUP_CONCURRENCY, isRole, num, optNum, optStr, str } from "./cassandra-session.js";
import type { CassandraSession, Statement } from "./cassandra-session.js";
import type { EventTables } from "./event-tables.js";

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

/**
 * GroupTables reads and writes groups and memberships (see the module
 * comment for the rules). Methods throw ChatError Internal on a corrupt row
 * or a call that breaks their contract, and ChatError Unavailable for driver
 * failures.
 */
export class GroupTables {
  private readonly q: ReturnType<typeof statements>;

  /** constructor takes the shared session and the events family (a change's batch holds its event). */
  constructor(
    private readonly db: CassandraSession,
    private readonly events: EventTables,
  ) {
    this.q = statements(db.keyspace);
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
    await this.db.batch(
      [
        [this.q.insertGroup, [g.id, g.name, g.epoch, g.createdAt, 1, 1, 1, 1]],
        ...this.changeWrites(event, { memberCount: 1, ownerCount: 1 }),
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
    const row = (await this.db.run(this.q.groupById, [groupId], true)).rows[0];
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
    const row = (await this.db.run(this.q.groupChangeStamp, [groupId], true)).rows[0];
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

  /**
   * writeChange stores a membership event or rename whose seq is already
   * assigned, idempotently (writing it again, or replaying older events after
   * it, changes nothing): one logged batch with the event row, the bucket
   * entry, head_seq (EventTables.eventWrites), the membership rows in both
   * directions (member_added inserts with joined_at = at, member_removed
   * deletes, member_role_changed sets the role), the counts (`counts`,
   * required for member_* events: the writer knows them from its snapshot)
   * and the name.
   *
   * Throws ChatError Internal for a member_* event without counts or a
   * message (EventTables writes messages).
   */
  async writeChange(event: GroupEvent, counts?: GroupCounts): Promise<void> {
    const type = event.body.type;
    if (type !== "group_renamed" && counts === undefined) {
      throw new ChatError("Internal", `${type} event ${event.groupId}/${event.seq} written without group counts`);
    }
    await this.db.batch(this.changeWrites(event, counts), true);
  }

  // ------------------------------------------------------------ memberships

  /** getMember returns the membership, or undefined if the user is not a member. */
  async getMember(groupId: string, userId: string): Promise<Member | undefined> {
    const row = (await this.db.run(this.q.member, [groupId, userId], true)).rows[0];
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
    const rows = await this.db.pageLive(this.q.membersPage, groupId, afterUserId, "user_id", limit, (r) =>
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
    const entries = await this.db.pageLive(this.q.membershipsPage, userId, afterGroupId, "group_id", limit, (r) => {
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
   * listGroupIdsOf pages the ids of the user's groups as listMemberships
   * does (the same live rows), without reading the group rows: one
   * partition read.
   */
  listGroupIdsOf(userId: string, afterGroupId: string, limit: number): Promise<string[]> {
    return this.db.pageLive(this.q.membershipsPage, userId, afterGroupId, "group_id", limit, (r) =>
      isRole(optStr(r, "role")) && optNum(r, "joined_at") !== null ? str(r, "group_id") : undefined,
    );
  }

  /**
   * countMemberships is how many groups the user is in (rows of their
   * groups_by_user partition with a role and join time, as listMemberships
   * counts them), counted up to `upTo`: one partition read of at most that
   * many live rows.
   */
  async countMemberships(userId: string, upTo: number): Promise<number> {
    const rows = await this.db.fetch(this.q.membershipRoles, [userId], upTo);
    return rows.filter((r) => isRole(optStr(r, "role")) && optNum(r, "joined_at") !== null).length;
  }

  /**
   * countMembers derives the group's counts by reading its whole
   * members_by_group partition (O(members)): for repairs and for a persister
   * that replays membership events in seq order and has no counts at hand.
   */
  async countMembers(groupId: string): Promise<GroupCounts> {
    const rows = await this.db.fetch(this.q.memberRoles, [groupId], Number.MAX_SAFE_INTEGER);
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
      this.db.run(this.q.ackByGroup, [seq, seq, groupId, userId], true),
      this.db.run(this.q.ackByUser, [seq, seq, userId, groupId], true),
    ]);
  }

  // ---------------------------------------------------------------- private

  /** changeWrites are the statements of a non-message event (see writeChange). */
  private changeWrites(e: GroupEvent, counts: GroupCounts | undefined): Statement[] {
    const q = this.q;
    const s = e.seq;
    const out: Statement[] = this.events.eventWrites(e);
    const b = e.body;
    switch (b.type) {
      case "member_added":
        // The read marker starts at the member_added event; the push setting is absent (the default).
        out.push([q.insertMember, [e.groupId, b.member.id, b.member.username, b.role, e.at, s, s]]);
        out.push([q.insertMembership, [b.member.id, e.groupId, b.role, e.at, s, s]]);
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
}

/** toMember maps a members_by_group row; undefined for a partial row (no role or joined_at). */
function toMember(groupId: string, r: types.Row): Member | undefined {
  const role = optStr(r, "role");
  const joinedAt = optNum(r, "joined_at");
  const username = optStr(r, "username");
  if (!isRole(role) || joinedAt === null || username === null) return undefined;
  return { groupId, user: { id: str(r, "user_id"), username }, role, joinedAt, ackedSeq: optNum(r, "acked_seq") ?? 0 };
}

/** statements builds the family's CQL strings once per keyspace; the driver prepares each on first use. */
function statements(ks: string) {
  return {
    insertGroup: `INSERT INTO ${ks}.groups (group_id, name, epoch, created_at, head_seq, member_count, owner_count)
      VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?`,
    groupById: `SELECT name, epoch, created_at, head_seq, member_count, owner_count FROM ${ks}.groups WHERE group_id = ?`,
    groupChangeStamp: `SELECT WRITETIME(member_count) AS counts_at, WRITETIME(name) AS name_at FROM ${ks}.groups WHERE group_id = ?`,
    setCounts: `UPDATE ${ks}.groups USING TIMESTAMP ? SET member_count = ?, owner_count = ? WHERE group_id = ?`,
    renameGroup: `UPDATE ${ks}.groups USING TIMESTAMP ? SET name = ? WHERE group_id = ?`,

    insertMember: `INSERT INTO ${ks}.members_by_group (group_id, user_id, username, role, joined_at, last_read_seq)
      VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?`,
    insertMembership: `INSERT INTO ${ks}.groups_by_user (user_id, group_id, role, joined_at, last_read_seq)
      VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?`,
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
  };
}
