/**
 * SqliteReadStates: the ReadStateStore part of the embedded store. Read
 * state lives on the `members` row (schema version 4), so it is written and
 * dropped with the membership: SqliteStore inserts a member with
 * last_read_seq = the seq of its member_added event and the default push
 * setting, and a removal deletes the row.
 */
import type { Database as Db } from "better-sqlite3";
import { DEFAULT_NOTIFY } from "../../core/model.js";
import type { MemberReadState, NotifyLevel, NotifySetting } from "../../core/model.js";
import type { ReadStateStore } from "../../core/ports.js";

interface ReadStateRow {
  key: string;
  last_read_seq: number;
  notify_level: string;
  muted_until: number;
}

/**
 * SqliteReadStates implements ReadStateStore on the `members` table of one
 * database. Each method is one statement (atomic on its own, also against
 * other connections to the file); markRead raises the marker with
 * `MAX(last_read_seq, ?)`, so it never goes down whatever the order of calls.
 */
export class SqliteReadStates implements ReadStateStore {
  private readonly q: ReturnType<typeof statements>;

  /** constructor prepares the statements; `cutoff()` is the retention edge (events with `at` below it are not retained). */
  constructor(
    db: Db,
    private readonly cutoff: () => number,
  ) {
    this.q = statements(db);
  }

  async markRead(groupId: string, userId: string, seq: number): Promise<number | undefined> {
    return this.q.markRead.get(Number.isFinite(seq) ? Math.floor(seq) : 0, groupId, userId);
  }

  async readStates(groupId: string, userIds: readonly string[]): Promise<Map<string, MemberReadState>> {
    return toStates(userIds.length === 0 ? [] : this.q.statesInGroup.all(groupId, JSON.stringify(userIds)));
  }

  async readStatesOfUser(userId: string, groupIds: readonly string[]): Promise<Map<string, MemberReadState>> {
    return toStates(groupIds.length === 0 ? [] : this.q.statesOfUser.all(userId, JSON.stringify(groupIds)));
  }

  async setNotify(groupId: string, userId: string, notify: NotifySetting): Promise<boolean> {
    return this.q.setNotify.run(notify.level, notify.mutedUntil, groupId, userId).changes === 1;
  }

  /** countUnread walks the events' primary key from afterSeq, stopping after `cap` matches. */
  async countUnread(groupId: string, userId: string, afterSeq: number, cap: number): Promise<number> {
    const n = Number.isFinite(cap) ? Math.floor(cap) : 0;
    if (n <= 0) return 0;
    return this.q.countUnread.get(groupId, afterSeq, userId, this.cutoff(), n) ?? 0;
  }
}

/** statements prepares the read-state statements once per store. */
function statements(db: Db) {
  return {
    markRead: db
      .prepare<[number, string, string], number>(
        "UPDATE members SET last_read_seq = MAX(last_read_seq, ?) WHERE group_id = ? AND user_id = ? RETURNING last_read_seq",
      )
      .pluck(),
    statesInGroup: db.prepare<[string, string], ReadStateRow>(
      `SELECT user_id AS key, last_read_seq, notify_level, muted_until FROM members
       WHERE group_id = ? AND user_id IN (SELECT value FROM json_each(?))`,
    ),
    statesOfUser: db.prepare<[string, string], ReadStateRow>(
      `SELECT group_id AS key, last_read_seq, notify_level, muted_until FROM members
       WHERE user_id = ? AND group_id IN (SELECT value FROM json_each(?))`,
    ),
    setNotify: db.prepare<[string, number, string, string]>(
      "UPDATE members SET notify_level = ?, muted_until = ? WHERE group_id = ? AND user_id = ?",
    ),
    countUnread: db
      .prepare<[string, number, string, number, number], number>(
        `SELECT COUNT(*) FROM (SELECT 1 FROM events
         WHERE group_id = ? AND seq > ? AND type = 'message' AND actor_id != ? AND at >= ? LIMIT ?)`,
      )
      .pluck(),
  };
}

function toStates(rows: readonly ReadStateRow[]): Map<string, MemberReadState> {
  const out = new Map<string, MemberReadState>();
  for (const r of rows) out.set(r.key, { lastReadSeq: r.last_read_seq, notify: toNotify(r) });
  return out;
}

function toNotify(r: ReadStateRow): NotifySetting {
  const level = r.notify_level as NotifyLevel;
  if (level === DEFAULT_NOTIFY.level && r.muted_until === DEFAULT_NOTIFY.mutedUntil) return DEFAULT_NOTIFY;
  return { level, mutedUntil: r.muted_until };
}
