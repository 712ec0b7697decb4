/**
 * @chat/client/node: stores for Node that keep the session and the cursors in files, so that the next run of a
 * program (the `chat` CLI) restores the session and resumes where the last run stopped. Several processes may
 * share the files: every change is a locked read-modify-write, and token refreshes run under the lock (see
 * TokenStore.withLock), so two processes never present the same refresh token.
 */
import type { Cursor, CursorStore, StoredSession, TokenStore } from "./stores.js";
import { decodeCursors, encodeCursors } from "./stores.js";
import { readJson, withFileLock, writeJson } from "./json-file.js";

export * from "./index.js";

/** SessionFields are a FileTokenStore's fields of the file (times in ISO 8601); other fields (cursors) are kept. */
interface SessionFields {
  version: 1;
  server: string;
  userId: string;
  username: string;
  tokens: { accessToken: string; accessTokenExpiresAt: string; refreshToken: string; refreshTokenExpiresAt: string };
}

const SESSION_KEYS = ["server", "userId", "username", "tokens"] as const;

function toFields(s: StoredSession): SessionFields {
  return {
    version: 1,
    server: s.server,
    userId: s.userId,
    username: s.username,
    tokens: {
      accessToken: s.accessToken,
      accessTokenExpiresAt: new Date(s.accessTokenExpiresAt).toISOString(),
      refreshToken: s.refreshToken,
      refreshTokenExpiresAt: new Date(Math.min(s.refreshTokenExpiresAt, 8.64e15)).toISOString(),
    },
  };
}

function asObject(v: unknown): Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? { ...(v as Record<string, unknown>) } : {};
}

function fromFields(v: unknown, path: string): StoredSession | undefined {
  const o = asObject(v) as Partial<SessionFields>;
  if (o.tokens === undefined && o.userId === undefined) return undefined; // no session (perhaps cursors only)
  const t = o.tokens;
  const ok =
    typeof o.server === "string" &&
    typeof o.userId === "string" &&
    typeof o.username === "string" &&
    t !== undefined &&
    [t.accessToken, t.accessTokenExpiresAt, t.refreshToken, t.refreshTokenExpiresAt].every((x) => typeof x === "string");
  if (!ok || !t) throw new Error(`session file ${path} is malformed; delete it and log in again`);
  return {
    server: o.server as string,
    userId: o.userId as string,
    username: o.username as string,
    accessToken: t.accessToken,
    accessTokenExpiresAt: Date.parse(t.accessTokenExpiresAt),
    refreshToken: t.refreshToken,
    refreshTokenExpiresAt: Date.parse(t.refreshTokenExpiresAt),
  };
}

/** cursorsByUser reads the `cursors` field; a CLI session file of before the SDK kept one user's cursors there (by group id). */
function cursorsByUser(file: Record<string, unknown>): Record<string, unknown> {
  const c = asObject(file.cursors);
  const legacy = Object.values(c).some((v) => typeof asObject(v).seq === "string");
  if (!legacy) return c;
  return typeof file.userId === "string" ? { [file.userId]: c } : {};
}

/**
 * FileTokenStore keeps the session in a JSON file (mode 0600, replaced atomically; it holds tokens: keep it
 * private): `{ version, server, userId, username, tokens: { accessToken, accessTokenExpiresAt, ... } }`. It may
 * share the file with a FileCursorStore: each changes only its own fields, under the same lock.
 */
export class FileTokenStore implements TokenStore {
  private locked = 0;

  constructor(readonly path: string) {}

  async load(): Promise<StoredSession | undefined> {
    return fromFields(await readJson(this.path), this.path);
  }

  async save(session: StoredSession | undefined): Promise<void> {
    const write = async () => {
      const file = asObject(await readJson(this.path));
      for (const k of SESSION_KEYS) delete file[k];
      const next = session === undefined ? file : { ...file, ...toFields(session) };
      const empty = Object.keys(next).every((k) => k === "version");
      await writeJson(this.path, empty ? undefined : { ...next, version: 1 });
    };
    if (this.locked > 0) return write();
    return this.withLock(write);
  }

  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    return withFileLock(this.path, async () => {
      this.locked++;
      try {
        return await fn();
      } finally {
        this.locked--;
      }
    });
  }
}

/**
 * FileCursorStore keeps cursors in a JSON file, in its field `cursors`: { userId: { groupId: { seq, epoch } } } (the
 * file may be a FileTokenStore's too; other fields are kept). `set` updates
 * memory at once and the file soon after (one write at a time, merged under the lock with what other processes
 * wrote); `flush` waits for the file. A crash between `set` and the write makes the next run resume a little
 * further back: events may then be handed to the app again, never skipped. `set` returns the promise of the write
 * that carries the change: when the write fails (a full disk, a path that cannot be created) it rejects (the live
 * connection reports that as an `error` event), the changes stay pending, and the next `set` or `flush` retries
 * them; `flush` rejects when they still cannot be written.
 */
export class FileCursorStore implements CursorStore {
  private readonly dirty = new Map<string, Map<string, Cursor | null>>();
  private writing: Promise<void> | undefined;

  constructor(readonly path: string) {}

  private async readAll(): Promise<Record<string, unknown>> {
    return cursorsByUser(asObject(await readJson(this.path)));
  }

  async load(userId: string): Promise<Map<string, Cursor>> {
    await this.flush();
    return decodeCursors((await this.readAll())[userId]);
  }

  set(userId: string, groupId: string, cursor: Cursor | null): Promise<void> {
    let m = this.dirty.get(userId);
    if (!m) this.dirty.set(userId, (m = new Map()));
    m.set(groupId, cursor);
    return this.write();
  }

  /** write starts a write unless one runs; the promise is marked handled, so a caller that ignores it does not crash the process. */
  private write(): Promise<void> {
    if (!this.writing) {
      this.writing = this.writeSoon();
      this.writing.catch(() => undefined);
    }
    return this.writing;
  }

  private async writeSoon(): Promise<void> {
    try {
      while (this.dirty.size > 0) {
        const changes = new Map(this.dirty);
        this.dirty.clear();
        try {
          await this.writeChanges(changes);
        } catch (e) {
          // Keep the changes pending, under any newer ones made meanwhile.
          for (const [userId, groups] of changes) {
            let m = this.dirty.get(userId);
            if (!m) this.dirty.set(userId, (m = new Map()));
            for (const [groupId, c] of groups) if (!m.has(groupId)) m.set(groupId, c);
          }
          throw e;
        }
      }
    } finally {
      this.writing = undefined;
    }
  }

  private async writeChanges(changes: Map<string, Map<string, Cursor | null>>): Promise<void> {
    await withFileLock(this.path, async () => {
      const file = asObject(await readJson(this.path));
      const users = cursorsByUser(file);
      for (const [userId, groups] of changes) {
        const cursors = decodeCursors(users[userId]);
        for (const [groupId, c] of groups) {
          if (c === null) cursors.delete(groupId);
          else cursors.set(groupId, c);
        }
        users[userId] = encodeCursors(cursors);
      }
      await writeJson(this.path, { ...file, version: 1, cursors: users });
    });
  }

  async flush(): Promise<void> {
    while (this.writing || this.dirty.size > 0) await this.write();
  }
}
