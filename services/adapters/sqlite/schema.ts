/**
 * Versioned schema migrations for the embedded SQLite store.
 *
 * Each migration has a version number and runs at most once, inside its own
 * IMMEDIATE transaction, which also records it in `schema_migrations`; two
 * processes opening one file at the same time cannot both apply it. Never
 * edit a released migration: append a new one.
 */
import type { Database } from "better-sqlite3";

/** Migration is one schema step: `version` is unique and increasing. */
export interface Migration {
  readonly version: number;
  readonly description: string;
  readonly sql: string;
}

/**
 * MIGRATIONS lists every schema step in version order.
 *
 * Layout notes:
 * - `events` holds every timeline entry (PK group_id, seq). Messages keep
 *   their fields in columns (`message_id`, `text`, `client_message_id`; the
 *   sender is the actor, `at` is the sent time); other events keep their body
 *   in `payload` (JSON).
 * - `events_dedupe` makes (group, sender, client message id) unique among
 *   message events. History paging over messages walks the primary key
 *   (group_id, seq) and skips other events' rows (version 2 dropped a
 *   separate index for it).
 * - `events_at` serves the retention purge.
 * - `members` is keyed (group_id, user_id) and indexed (user_id, group_id),
 *   so membership is readable in both directions from one write. It also
 *   holds the member's read marker and push setting (version 4).
 * - `devices` (version 5): push targets, one row per (kind, token).
 * - `push_ledger` (version 5): claimed pushes per (device, group, newest seq).
 * - `feed_positions` (version 6): the embedded event feed's acknowledged positions.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: "users, refresh tokens, groups, members, events",
    sql: `
      CREATE TABLE users (
        id            TEXT PRIMARY KEY,
        username      TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        user_id    TEXT NOT NULL,
        family_id  TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER,
        revoked_at INTEGER
      ) STRICT;
      CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

      CREATE TABLE groups (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        epoch        TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        head_seq     INTEGER NOT NULL,
        member_count INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE members (
        group_id  TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        user_id   TEXT NOT NULL,
        username  TEXT NOT NULL,
        role      TEXT NOT NULL CHECK (role IN ('member', 'admin', 'owner')),
        joined_at INTEGER NOT NULL,
        acked_seq INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (group_id, user_id)
      ) STRICT;
      CREATE INDEX members_by_user ON members (user_id, group_id);

      CREATE TABLE events (
        group_id          TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        seq               INTEGER NOT NULL,
        at                INTEGER NOT NULL,
        actor_id          TEXT NOT NULL,
        actor_name        TEXT NOT NULL,
        type              TEXT NOT NULL,
        payload           TEXT,
        message_id        TEXT,
        text              TEXT,
        client_message_id TEXT,
        PRIMARY KEY (group_id, seq)
      ) STRICT;
      CREATE UNIQUE INDEX events_dedupe ON events (group_id, actor_id, client_message_id)
        WHERE type = 'message';
      CREATE INDEX events_messages ON events (group_id, seq) WHERE type = 'message';
      CREATE INDEX events_at ON events (at);
    `,
  },
  {
    version: 2,
    // events_messages repeated the primary key (group_id, seq) for message
    // events only. Every append paid for it: one more B-tree page in each
    // commit's WAL (7.8 → 6.5 frames for a one-message commit, ~25 µs of CPU),
    // while history pages read the rows anyway and non-message events are few.
    description: "drop events_messages: history pages walk the primary key",
    sql: "DROP INDEX IF EXISTS events_messages;",
  },
  {
    version: 3,
    // Every stream opening asks whether its session was revoked (a token of
    // the family with revoked_at set). A family gains a token per refresh, so
    // the lookup seeks (family_id, revoked_at) instead of reading each row of
    // the family; the new index also serves revokeRefreshFamily, so the old
    // one goes.
    description: "index refresh tokens by (family, revocation) for the per-stream session check",
    sql: `
      CREATE INDEX IF NOT EXISTS refresh_tokens_family_revoked ON refresh_tokens (family_id, revoked_at);
      DROP INDEX IF EXISTS refresh_tokens_family;
    `,
  },
  {
    version: 4,
    // Read state lives on the member row, so a removal drops it and a re-add
    // starts afresh. New members get last_read_seq = the seq of their
    // member_added event; rows from before this version do not know it and
    // start at 0 (their join seq is not stored).
    description: "read markers and push settings on members (issue 14)",
    sql: `
      ALTER TABLE members ADD COLUMN last_read_seq INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE members ADD COLUMN notify_level TEXT NOT NULL DEFAULT 'all' CHECK (notify_level IN ('all', 'none'));
      ALTER TABLE members ADD COLUMN muted_until INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 5,
    // A (kind, token) belongs to one device row; a user's devices are listed
    // oldest first from devices_by_user. push_ledger records each claimed
    // (device, group, newest seq) until expires_at; push_ledger_expiry serves
    // the purge.
    description: "push devices and the push ledger (issue 14)",
    sql: `
      CREATE TABLE devices (
        id         TEXT PRIMARY KEY,
        user_id    TEXT NOT NULL,
        kind       TEXT NOT NULL CHECK (kind IN ('web_push', 'fcm', 'apns')),
        token      TEXT NOT NULL,
        p256dh     TEXT NOT NULL,
        auth       TEXT NOT NULL,
        topic      TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (kind, token)
      ) STRICT;
      CREATE INDEX devices_by_user ON devices (user_id, created_at, id);

      CREATE TABLE push_ledger (
        device_id  TEXT NOT NULL,
        group_id   TEXT NOT NULL,
        newest_seq INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (device_id, group_id, newest_seq)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX push_ledger_expiry ON push_ledger (expires_at);
    `,
  },
  {
    version: 6,
    // The embedded EventFeed's followers: the last position each name acknowledged.
    description: "event feed positions (issue 14)",
    sql: "CREATE TABLE feed_positions (name TEXT PRIMARY KEY, position INTEGER NOT NULL) STRICT;",
  },
];

/**
 * migrate applies every migration in MIGRATIONS not yet recorded in
 * `schema_migrations`, in version order. Idempotent: running it again (or
 * concurrently from another connection) applies nothing twice. Returns the
 * versions it applied.
 */
export function migrate(db: Database, migrations: readonly Migration[] = MIGRATIONS): number[] {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at INTEGER NOT NULL
  ) STRICT`);
  const isApplied = db.prepare<[number], { version: number }>("SELECT version FROM schema_migrations WHERE version = ?");
  const record = db.prepare<[number, number]>("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)");
  const applied: number[] = [];
  const applyOne = db.transaction((m: Migration): void => {
    if (isApplied.get(m.version) !== undefined) return;
    db.exec(m.sql);
    record.run(m.version, Date.now());
    applied.push(m.version);
  });
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) applyOne.immediate(m);
  return applied;
}
