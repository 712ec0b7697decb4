/**
 * UserTables: the users and sessions family of the production Store's
 * tables (docs/production.md, "Storage"): `users`, `users_by_name`,
 * `refresh_tokens`, `refresh_tokens_by_family` and `revoked_sessions`.
 *
 * Rules every method keeps (besides CassandraSession's):
 * - LWT only for username uniqueness (`users_by_name ... IF NOT EXISTS`) and
 *   refresh-token rotation (`IF user_id != null AND used_at = null`).
 * - Token rows and revocation marks expire by TTL, computed from the
 *   injected clock (see tokenTtl); nothing deletes them.
 */
import cassandra from "cassandra-driver";
import { ChatError } from "../../core/errors.js";
import { mapLimit } from "../../core/map-limit.js";
import type { RefreshTokenRecord, User, UserCredentials } from "../../core/model.js";
import type { Clock } from "../../core/ports.js";
import { CL_LOCAL_SERIAL, LOOKUP_CONCURRENCY, num, optNum, optStr, str } from "./cassandra-session.js";
import type { CassandraSession } from "./cassandra-session.js";
import { MAX_TTL_SECONDS } from "./migrations.js";

/**
 * REFRESH_TOKEN_GRACE_SECONDS is how long a refresh token row outlives its
 * expiry, so presenting an expired-but-known token is still recognised (and
 * reuse still detected) for a day.
 */
export const REFRESH_TOKEN_GRACE_SECONDS = 86_400;

const { unset } = cassandra.types;

/** UserTablesOptions configures UserTables. */
export interface UserTablesOptions {
  /** Source of "now" for token TTLs. */
  readonly clock: Clock;
  /**
   * Lifetime of the refresh tokens the services issue (REFRESH_TOKEN_TTL): a
   * session's revocation mark lives at least this long (plus a day) after
   * the revocation, since a refresh racing it may insert a token the
   * revocation never saw.
   */
  readonly refreshTtlMs: number;
}

/**
 * UserTables reads and writes users, refresh tokens and revoked sessions
 * (see the module comment for the rules). Methods throw ChatError for domain
 * outcomes (AlreadyExists on a taken username, Internal on a corrupt row)
 * and ChatError Unavailable for driver failures.
 */
export class UserTables {
  private readonly q: ReturnType<typeof statements>;

  /** constructor takes the shared session. Throws on a refresh token lifetime that is not positive. */
  constructor(
    private readonly db: CassandraSession,
    private readonly opts: UserTablesOptions,
  ) {
    if (!(opts.refreshTtlMs > 0)) throw new Error(`invalid refresh token lifetime ${opts.refreshTtlMs}`);
    this.q = statements(db.keyspace);
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
    await this.db.run(this.q.insertUser, [u.id, u.username, u.createdAt], true);
    let owner: string | null;
    try {
      const claim = await this.db.run(this.q.claimUsername, [u.username, u.id, u.passwordHash, u.createdAt], false);
      owner = claim.wasApplied() ? u.id : optStr(claim.rows[0], "user_id");
    } catch (e) {
      // An LWT that timed out (e.g. under contention) may or may not have
      // been applied: a SERIAL read tells, because it completes any Paxos
      // round in flight.
      owner = optStr((await this.db.run(this.q.userByName, [u.username], true, CL_LOCAL_SERIAL)).rows[0], "user_id");
      if (owner === null) throw e;
    }
    if (owner === u.id) return;
    await this.db.run(this.q.deleteUser, [u.id], true);
    throw new ChatError("AlreadyExists", `username ${u.username} is taken`);
  }

  /** findUserByName returns the user with its password hash, or undefined. */
  async findUserByName(username: string): Promise<UserCredentials | undefined> {
    const row = (await this.db.run(this.q.userByName, [username], true)).rows[0];
    const id = optStr(row, "user_id");
    if (!row || id === null) return undefined;
    return { id, username, passwordHash: str(row, "password_hash"), createdAt: num(row, "created_at") };
  }

  /** getUser returns the user (without secrets), or undefined. */
  async getUser(userId: string): Promise<User | undefined> {
    const row = (await this.db.run(this.q.userById, [userId], true)).rows[0];
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
    await this.db.batch(
      [
        [this.q.insertToken, [r.tokenHash, r.userId, r.familyId, r.expiresAt, r.usedAt ?? unset, r.revokedAt ?? unset, ttl]],
        [this.q.insertTokenByFamily, [r.familyId, r.tokenHash, r.expiresAt, ttl]],
      ],
      true,
    );
  }

  /** findRefreshToken returns the record for a token hash, or undefined (unknown or past its TTL). */
  async findRefreshToken(tokenHash: string): Promise<RefreshTokenRecord | undefined> {
    const row = (await this.db.run(this.q.tokenByHash, [tokenHash], true)).rows[0];
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
    const r = await this.db.run(this.q.markTokenUsed, [this.tokenTtl(current.expiresAt), at, tokenHash], false);
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
    const rows = await this.db.fetch(this.q.tokensOfFamily, [familyId], Number.MAX_SAFE_INTEGER);
    if (rows.length > 0) {
      // The session mark goes first: a revocation cut short still revokes the session.
      const lastExpiry = Math.max(...rows.map((row) => num(row, "expires_at")), this.opts.clock.now() + this.opts.refreshTtlMs);
      await this.db.run(this.q.revokeSession, [familyId, at, this.tokenTtl(lastExpiry)], true);
    }
    await mapLimit(rows, LOOKUP_CONCURRENCY, async (row) => {
      const token = await this.findRefreshToken(str(row, "token_hash"));
      if (!token || token.revokedAt !== null) return;
      await this.db.run(this.q.revokeToken, [this.tokenTtl(token.expiresAt), at, token.tokenHash], true);
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
    const row = (await this.db.run(this.q.sessionRevoked, [familyId], true)).rows[0];
    return row !== undefined && optNum(row, "revoked_at") !== null;
  }

  // ---------------------------------------------------------------- private

  /** tokenTtl is the TTL (seconds) of a row about a token expiring at `expiresAt`: REFRESH_TOKEN_GRACE_SECONDS past it, capped. */
  private tokenTtl(expiresAt: number): number {
    const remaining = Math.max(0, Math.ceil((expiresAt - this.opts.clock.now()) / 1000));
    return Math.min(remaining + REFRESH_TOKEN_GRACE_SECONDS, MAX_TTL_SECONDS);
  }
}

/** statements builds the family's CQL strings once per keyspace; the driver prepares each on first use. */
function statements(ks: string) {
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
  };
}
