/**
 * The session file: who is logged in where, the current token pair and the
 * tail cursors. It is JSON, mode 0600 in a 0700 directory, replaced
 * atomically (write a temporary file, rename), and every read-modify-write
 * runs under a lock file so that two client processes sharing a session
 * (say `tail` in one terminal, `send` in another) neither lose each other's
 * updates nor both rotate the same refresh token, which the server would
 * take as token theft and answer by revoking the whole session.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { CliError } from "./errors.js";

/** StoredTokens is a token pair with its expiry times (ISO 8601). */
export interface StoredTokens {
  accessToken: string;
  accessTokenExpiresAt: string;
  refreshToken: string;
  refreshTokenExpiresAt: string;
}

/** StoredCursor is the last seq seen of a group (uint64 as a decimal string) and its epoch. */
export interface StoredCursor {
  seq: string;
  epoch: string;
}

/** Session is the content of the session file. */
export interface Session {
  version: 1;
  /** server is the normalized server URL the session belongs to. */
  server: string;
  userId: string;
  username: string;
  tokens: StoredTokens;
  /** cursors maps group id to the position `tail` resumes after. */
  cursors: Record<string, StoredCursor>;
}

/** LOCK_STALE_MS is the age after which a lock file is taken to be left over by a crashed process. */
const LOCK_STALE_MS = 10_000;
/** LOCK_WAIT_MS is how long to wait for a lock before giving up. */
const LOCK_WAIT_MS = 15_000;

/** defaultSessionPath is $XDG_CONFIG_HOME/chat-cli/session.json, or ~/.config/chat-cli/session.json. */
export function defaultSessionPath(env: Readonly<Record<string, string | undefined>>): string {
  const base = env.XDG_CONFIG_HOME || join(homedir(), ".config");
  return join(base, "chat-cli", "session.json");
}

/** SessionStore reads and writes one session file. */
export class SessionStore {
  constructor(readonly path: string) {}

  /** read returns the session, or undefined when there is none. A malformed file is an error. */
  async read(): Promise<Session | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (e) {
      if (errno(e) === "ENOENT") return undefined;
      throw new CliError("failed_precondition", `cannot read session file ${this.path}: ${String(e)}`);
    }
    const session = parseSession(text);
    if (!session) {
      throw new CliError("failed_precondition", `session file ${this.path} is malformed; delete it and log in again`);
    }
    return session;
  }

  /** update applies `change` to the current session under the lock; undefined deletes the file. Returns what was stored. */
  update(change: (current: Session | undefined) => Session | undefined): Promise<Session | undefined> {
    return this.withLock(async () => {
      const next = change(await this.read());
      if (next === undefined) await unlink(this.path).catch((e: unknown) => (errno(e) === "ENOENT" ? undefined : Promise.reject(e)));
      else await this.write(next);
      return next;
    });
  }

  /** withLock runs `fn` while holding `<path>.lock`; a lock older than 10 s is broken. */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const lock = `${this.path}.lock`;
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        const handle = await open(lock, "wx", 0o600);
        await handle.writeFile(`${process.pid}\n`);
        await handle.close();
        break;
      } catch (e) {
        if (errno(e) !== "EEXIST") throw e;
        const age = await stat(lock).then(
          (s) => Date.now() - s.mtimeMs,
          () => 0,
        );
        if (age > LOCK_STALE_MS) {
          await unlink(lock).catch(() => undefined);
          continue;
        }
        if (Date.now() > deadline) throw new CliError("unavailable", `session file ${this.path} is locked (remove ${lock} if no chat command is running)`);
        await new Promise((resolve) => setTimeout(resolve, 25 + Math.random() * 50));
      }
    }
    try {
      return await fn();
    } finally {
      await unlink(lock).catch(() => undefined);
    }
  }

  /** write replaces the file atomically (mode 0600); the caller must hold the lock (see withLock). */
  async write(session: Session): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    try {
      await writeFile(tmp, `${JSON.stringify(session, null, 2)}\n`, { mode: 0o600, flag: "wx" });
      await rename(tmp, this.path);
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
  }
}

function errno(e: unknown): string | undefined {
  return typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined;
}

function isString(v: unknown): v is string {
  return typeof v === "string";
}

/** parseSession validates the file's shape; undefined if it is not a session. */
function parseSession(text: string): Session | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const t = o.tokens as Record<string, unknown> | undefined;
  if (o.version !== 1 || !isString(o.server) || !isString(o.userId) || !isString(o.username)) return undefined;
  if (typeof t !== "object" || t === null) return undefined;
  if (![t.accessToken, t.accessTokenExpiresAt, t.refreshToken, t.refreshTokenExpiresAt].every(isString)) return undefined;
  const cursors: Record<string, StoredCursor> = {};
  if (typeof o.cursors === "object" && o.cursors !== null) {
    for (const [id, c] of Object.entries(o.cursors as Record<string, unknown>)) {
      const cc = c as Record<string, unknown> | null;
      if (cc && isString(cc.seq) && /^\d+$/.test(cc.seq) && isString(cc.epoch)) cursors[id] = { seq: cc.seq, epoch: cc.epoch };
    }
  }
  return {
    version: 1,
    server: o.server,
    userId: o.userId,
    username: o.username,
    tokens: t as unknown as StoredTokens,
    cursors,
  };
}
