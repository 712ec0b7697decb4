/**
 * ReadStateTables: members' read markers and push settings, kept on the
 * membership rows in both directions (`members_by_group`, `groups_by_user`;
 * columns `last_read_seq` and `notify`, schema version 3), so they live and
 * die with the membership. It keeps GroupTables' rule: every write carries
 * `USING TIMESTAMP` in seq units, never a wall-clock timestamp, so the
 * removal (a delete stamped with its seq) drops the state, and a re-add
 * (stamped with its later seq) starts afresh.
 *
 * - The join seq of a member is WRITETIME(joined_at): member_added writes the
 *   row with its seq as timestamp and nothing rewrites joined_at. A row from
 *   before version 3 (no last_read_seq) reads its marker as that join seq.
 * - last_read_seq = s is written with timestamp s, so the highest seq any
 *   call wrote wins whatever the order of the writes (as GroupTables.ackMember).
 * - notify (the push setting) is written with timestamp = the member's join
 *   seq, so the membership's removal deletes it and a stale call of an
 *   earlier membership is shadowed by that removal. All settings of one
 *   membership share that timestamp; Cassandra then keeps the greater value,
 *   so the value starts with a wall-clock stamp (microseconds, zero-padded,
 *   increasing within the process): the last write wins, as with wall-clock
 *   cell timestamps, and no wall-clock timestamp enters the table.
 */
import type { types } from "cassandra-driver";
import { mapLimit } from "../../core/map-limit.js";
import { DEFAULT_NOTIFY } from "../../core/model.js";
import type { MemberReadState, NotifySetting } from "../../core/model.js";
import { LOOKUP_CONCURRENCY, isRole, optNum, optStr, str } from "./cassandra-session.js";
import type { CassandraSession } from "./cassandra-session.js";

/** How many keys one `IN` read asks for. */
const IN_CHUNK = 100;

/** MemberRow is a membership row's read state with the facts it is derived from. */
interface MemberRow {
  readonly joinSeq: number;
  readonly state: MemberReadState;
}

/**
 * ReadStateTables reads and writes read state on the membership rows (see
 * the module comment). Methods throw ChatError Internal on a corrupt row and
 * ChatError Unavailable for driver failures.
 */
export class ReadStateTables {
  private readonly q: ReturnType<typeof statements>;

  /** constructor takes the shared session. */
  constructor(private readonly db: CassandraSession) {
    this.q = statements(db.keyspace);
  }

  /**
   * markRead raises the member's read marker to `seq` in both directions
   * (one logged batch) and returns the marker after the call: the current
   * one when it is at or above `seq` (nothing written), else `seq` (a
   * concurrent call may have raised it further). Undefined, writing nothing,
   * for a non-member. Never lowers the marker, also under concurrent or
   * reordered calls from several processes (timestamp = seq).
   */
  async markRead(groupId: string, userId: string, seq: number): Promise<number | undefined> {
    const row = await this.member(groupId, userId);
    if (!row) return undefined;
    const current = row.state.lastReadSeq;
    const s = Number.isFinite(seq) ? Math.floor(seq) : 0;
    if (s <= current) return current;
    await this.db.batch(
      [
        [this.q.markByGroup, [s, s, groupId, userId]],
        [this.q.markByUser, [s, s, userId, groupId]],
      ],
      true,
    );
    return s;
  }

  /** readStates returns the state of each of `userIds` that is a member of the group (absent = not a member). */
  async readStates(groupId: string, userIds: readonly string[]): Promise<Map<string, MemberReadState>> {
    return this.readIn(this.q.statesInGroup, groupId, userIds, "user_id");
  }

  /** readStatesOfUser returns the user's state in each of `groupIds` it is a member of (absent = not a member). */
  async readStatesOfUser(userId: string, groupIds: readonly string[]): Promise<Map<string, MemberReadState>> {
    return this.readIn(this.q.statesOfUser, userId, groupIds, "group_id");
  }

  /**
   * setNotify replaces the member's push setting in both directions (one
   * logged batch); false, writing nothing, for a non-member. The last write
   * wins (see the module comment).
   */
  async setNotify(groupId: string, userId: string, notify: NotifySetting): Promise<boolean> {
    const row = await this.member(groupId, userId);
    if (!row) return false;
    const value = encodeNotify(notify);
    await this.db.batch(
      [
        [this.q.notifyByGroup, [row.joinSeq, value, groupId, userId]],
        [this.q.notifyByUser, [row.joinSeq, value, userId, groupId]],
      ],
      true,
    );
    return true;
  }

  // ---------------------------------------------------------------- private

  /** member reads the member's row in members_by_group; undefined for a non-member (or a partial row). */
  private async member(groupId: string, userId: string): Promise<MemberRow | undefined> {
    const row = (await this.db.run(this.q.stateInGroup, [groupId, userId], true)).rows[0];
    return row && toMemberRow(row);
  }

  /** readIn reads the rows of `keys` (deduplicated, in chunks) of one partition and maps the members' states by key. */
  private async readIn(cql: string, partition: string, keys: readonly string[], keyColumn: string): Promise<Map<string, MemberReadState>> {
    const unique = [...new Set(keys)];
    const chunks: string[][] = [];
    for (let i = 0; i < unique.length; i += IN_CHUNK) chunks.push(unique.slice(i, i + IN_CHUNK));
    const pages = await mapLimit(chunks, LOOKUP_CONCURRENCY, (chunk) => this.db.fetch(cql, [partition, chunk], chunk.length));
    const out = new Map<string, MemberReadState>();
    for (const rows of pages) {
      for (const r of rows) {
        const m = toMemberRow(r);
        if (m) out.set(str(r, keyColumn), m.state);
      }
    }
    return out;
  }
}

/** The width of the zero-padded microsecond stamp that starts a stored setting. */
const STAMP_DIGITS = 17;

let lastStamp = 0;

/** nextStamp is the wall clock in microseconds, strictly increasing within the process. */
function nextStamp(): number {
  const t = Date.now() * 1000;
  lastStamp = t > lastStamp ? t : lastStamp + 1;
  return lastStamp;
}

/** encodeNotify stores a setting as `<stamp>|<level>|<mutedUntil>` (see the module comment). */
export function encodeNotify(n: NotifySetting): string {
  return `${String(nextStamp()).padStart(STAMP_DIGITS, "0")}|${n.level}|${Math.max(0, Math.floor(n.mutedUntil))}`;
}

/** decodeNotify reads a stored setting; DEFAULT_NOTIFY for none or one it cannot read. */
export function decodeNotify(value: string | null): NotifySetting {
  if (value === null) return DEFAULT_NOTIFY;
  const [, level, muted] = value.split("|");
  const mutedUntil = Number(muted);
  if ((level !== "all" && level !== "none") || !Number.isSafeInteger(mutedUntil)) return DEFAULT_NOTIFY;
  if (level === DEFAULT_NOTIFY.level && mutedUntil === DEFAULT_NOTIFY.mutedUntil) return DEFAULT_NOTIFY;
  return { level, mutedUntil };
}

/** toMemberRow maps a membership row; undefined for a partial row (no role or joined_at: not a member). */
function toMemberRow(r: types.Row): MemberRow | undefined {
  const joinSeq = optNum(r, "join_seq");
  if (!isRole(optStr(r, "role")) || optNum(r, "joined_at") === null || joinSeq === null) return undefined;
  // The marker starts at the join seq (also for rows from before it was stored) and only moves forward.
  const lastReadSeq = Math.max(optNum(r, "last_read_seq") ?? 0, joinSeq);
  return { joinSeq, state: { lastReadSeq, notify: decodeNotify(optStr(r, "notify")) } };
}

/** statements builds the family's CQL strings once per keyspace; the driver prepares each on first use. */
function statements(ks: string) {
  const cols = "role, joined_at, WRITETIME(joined_at) AS join_seq, last_read_seq, notify";
  return {
    stateInGroup: `SELECT ${cols} FROM ${ks}.members_by_group WHERE group_id = ? AND user_id = ?`,
    statesInGroup: `SELECT user_id, ${cols} FROM ${ks}.members_by_group WHERE group_id = ? AND user_id IN ?`,
    statesOfUser: `SELECT group_id, ${cols} FROM ${ks}.groups_by_user WHERE user_id = ? AND group_id IN ?`,
    markByGroup: `UPDATE ${ks}.members_by_group USING TIMESTAMP ? SET last_read_seq = ? WHERE group_id = ? AND user_id = ?`,
    markByUser: `UPDATE ${ks}.groups_by_user USING TIMESTAMP ? SET last_read_seq = ? WHERE user_id = ? AND group_id = ?`,
    notifyByGroup: `UPDATE ${ks}.members_by_group USING TIMESTAMP ? SET notify = ? WHERE group_id = ? AND user_id = ?`,
    notifyByUser: `UPDATE ${ks}.groups_by_user USING TIMESTAMP ? SET notify = ? WHERE user_id = ? AND group_id = ?`,
  };
}
