/**
 * Where a client keeps what must outlive it: the session (tokens) and the per-group cursors. Memory and
 * localStorage stores are here; file stores (Node) are in `@chat/client/node`.
 */
import { type LockManagerLike, type StorageLike, globalLocalStorage, globalLocks } from "./web.js";

/** Cursor is the client's position in one group: the last seq handed to the app, and the epoch it belongs to. */
export interface Cursor {
  readonly seq: bigint;
  readonly epoch: string;
}

/**
 * CursorStore keeps cursors per user and group. `set` is called after the app's handler returned for an event,
 * so a store that has persisted a cursor never makes a later client skip an event the app did not see.
 * `null` deletes the group's cursor (the user left the group).
 */
export interface CursorStore {
  /** load returns the user's cursors, keyed by group id (empty when there are none). */
  load(userId: string): Promise<Map<string, Cursor>> | Map<string, Cursor>;
  /** set records one cursor; it may persist later, but before `flush` resolves. */
  set(userId: string, groupId: string, cursor: Cursor | null): Promise<void> | void;
  /** flush resolves once every `set` so far is persisted. */
  flush?(): Promise<void>;
}

/** StoredSession is a logged-in session: the user, the server it belongs to, and the current token pair. */
export interface StoredSession {
  /** server is the baseUrl the session was made with; a session for another server is not restored. */
  readonly server: string;
  readonly userId: string;
  readonly username: string;
  readonly accessToken: string;
  /** accessTokenExpiresAt is in ms since the epoch. */
  readonly accessTokenExpiresAt: number;
  readonly refreshToken: string;
  /** refreshTokenExpiresAt is in ms since the epoch. */
  readonly refreshTokenExpiresAt: number;
}

/**
 * TokenStore keeps the session. Refresh tokens rotate: each can be used once, and presenting one twice revokes
 * the whole session. A store shared between processes (a file) therefore offers `withLock`, under which the
 * client rereads the session before refreshing and adopts a pair another process rotated meanwhile.
 */
export interface TokenStore {
  /** load returns the stored session, or undefined. */
  load(): Promise<StoredSession | undefined> | StoredSession | undefined;
  /** save stores the session; undefined forgets it (logout, revoked session). */
  save(session: StoredSession | undefined): Promise<void> | void;
  /** withLock runs `fn` holding a lock shared by every client of the same store (optional). */
  withLock?<T>(fn: () => Promise<T>): Promise<T>;
}

/** MemoryCursorStore keeps cursors in memory: they live as long as the object (share it between clients to resume). */
export class MemoryCursorStore implements CursorStore {
  private readonly users = new Map<string, Map<string, Cursor>>();

  load(userId: string): Map<string, Cursor> {
    return new Map(this.users.get(userId));
  }

  set(userId: string, groupId: string, cursor: Cursor | null): void {
    let m = this.users.get(userId);
    if (!m) this.users.set(userId, (m = new Map()));
    if (cursor === null) m.delete(groupId);
    else m.set(groupId, cursor);
  }
}

/** MemoryTokenStore keeps the session in memory (lost with the object). */
export class MemoryTokenStore implements TokenStore {
  private session: StoredSession | undefined;

  load(): StoredSession | undefined {
    return this.session;
  }

  save(session: StoredSession | undefined): void {
    this.session = session;
  }
}

/** encodeCursors / decodeCursors: the JSON form of a user's cursors ({ groupId: { seq: "12", epoch } }), shared by the stores. */
export function encodeCursors(cursors: ReadonlyMap<string, Cursor>): Record<string, { seq: string; epoch: string }> {
  const out: Record<string, { seq: string; epoch: string }> = {};
  for (const [id, c] of cursors) out[id] = { seq: c.seq.toString(), epoch: c.epoch };
  return out;
}

/** decodeCursors reads what encodeCursors wrote, skipping malformed entries. */
export function decodeCursors(value: unknown): Map<string, Cursor> {
  const out = new Map<string, Cursor>();
  if (typeof value !== "object" || value === null) return out;
  for (const [id, c] of Object.entries(value as Record<string, unknown>)) {
    const cc = c as { seq?: unknown; epoch?: unknown } | null;
    if (cc && typeof cc.seq === "string" && /^\d+$/.test(cc.seq) && typeof cc.epoch === "string") out.set(id, { seq: BigInt(cc.seq), epoch: cc.epoch });
  }
  return out;
}

/** decodeSession checks the shape of a stored session; undefined when it is not one. */
export function decodeSession(value: unknown): StoredSession | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const o = value as Record<string, unknown>;
  const strings = [o.server, o.userId, o.username, o.accessToken, o.refreshToken];
  if (!strings.every((s) => typeof s === "string")) return undefined;
  if (typeof o.accessTokenExpiresAt !== "number" || typeof o.refreshTokenExpiresAt !== "number") return undefined;
  return o as unknown as StoredSession;
}

function requireStorage(storage: StorageLike | undefined): StorageLike {
  const s = storage ?? globalLocalStorage();
  if (!s) throw new Error("localStorage is not available here; pass a storage or use a memory or file store");
  return s;
}

/**
 * LocalStorageCursorStore keeps cursors in localStorage under `<prefix><userId>`, so a page reload resumes where
 * the last page stopped. Tabs of one origin share it: each tab is a client of its own, and the one that writes
 * last wins (a tab never skips events because of that: it only resumes further back).
 */
export class LocalStorageCursorStore implements CursorStore {
  private readonly storage: StorageLike;
  private readonly prefix: string;

  /** The constructor throws when there is no usable localStorage and no `storage` is given. */
  constructor(opts: { storage?: StorageLike; prefix?: string } = {}) {
    this.storage = requireStorage(opts.storage);
    this.prefix = opts.prefix ?? "chat.cursors.";
  }

  load(userId: string): Map<string, Cursor> {
    const text = this.storage.getItem(this.prefix + userId);
    if (text === null) return new Map();
    try {
      return decodeCursors(JSON.parse(text));
    } catch {
      return new Map();
    }
  }

  set(userId: string, groupId: string, cursor: Cursor | null): void {
    const all = this.load(userId);
    if (cursor === null) all.delete(groupId);
    else all.set(groupId, cursor);
    this.storage.setItem(this.prefix + userId, JSON.stringify(encodeCursors(all)));
  }
}

/**
 * LocalStorageTokenStore keeps the session in localStorage under `key` (default "chat.session"), so a page reload
 * restores it. Anything that runs script on the origin can read it: that is the usual trade-off of tokens in web
 * storage; use a MemoryTokenStore where that is not acceptable.
 *
 * Tabs of one origin share the session: `withLock` holds the Web Lock named `key` (`navigator.locks`, or `locks`
 * if given), so only one tab refreshes at a time and the others adopt the pair it saved. Without Web Locks the
 * client still rereads the store before each refresh, which covers refreshes that do not overlap.
 */
export class LocalStorageTokenStore implements TokenStore {
  private readonly storage: StorageLike;
  private readonly key: string;
  private readonly locks: LockManagerLike | undefined;

  constructor(opts: { storage?: StorageLike; key?: string; locks?: LockManagerLike } = {}) {
    this.storage = requireStorage(opts.storage);
    this.key = opts.key ?? "chat.session";
    this.locks = opts.locks ?? globalLocks();
  }

  withLock<T>(fn: () => Promise<T>): Promise<T> {
    return this.locks ? this.locks.request(this.key, fn) : fn();
  }

  load(): StoredSession | undefined {
    const text = this.storage.getItem(this.key);
    if (text === null) return undefined;
    try {
      return decodeSession(JSON.parse(text));
    } catch {
      return undefined;
    }
  }

  save(session: StoredSession | undefined): void {
    if (session === undefined) this.storage.removeItem(this.key);
    else this.storage.setItem(this.key, JSON.stringify(session));
  }
}
