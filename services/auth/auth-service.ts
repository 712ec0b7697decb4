import { createHash, createHmac, randomBytes } from "node:crypto";
import { ChatError } from "../core/errors.js";
import type { Fanout } from "../core/fanout.js";
import { newId } from "../core/ids.js";
import type { RefreshTokenRecord, User } from "../core/model.js";
import type { Clock, RateLimit, RateLimiter, RefreshTokenStore, UserStore } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import { takeToken } from "../core/rate-limit.js";
import { checkPassword, normalizeUsername } from "../core/validate.js";
import type { AccessTokens } from "./access-tokens.js";
import { burnPasswordCheck, hashPassword, verifyPassword } from "./passwords.js";

/** Session is a token pair handed to a client. */
export interface Session {
  readonly accessToken: string;
  readonly accessTokenExpiresAt: number;
  readonly refreshToken: string;
  readonly refreshTokenExpiresAt: number;
}

/** AuthSettings are the auth use-cases' limits. */
export interface AuthSettings {
  readonly refreshTtlMs: number;
  /**
   * How long after a refresh token was used presenting it again gets the same answer (its successor, unused, with a
   * new access token) instead of revoking the session: a client whose refresh answer was lost retries safely.
   * 0 = never (every second use revokes).
   */
  readonly refreshReuseGraceMs: number;
  /** Login attempts per username. */
  readonly loginPerUsername: RateLimit;
  /** Login attempts per client address. */
  readonly loginPerAddress: RateLimit;
  /** Registrations per client address. */
  readonly registerPerAddress: RateLimit;
}

/**
 * AuthService holds the account and session use-cases. Passwords are kept
 * only as argon2id hashes and refresh tokens only as SHA-256 hashes; neither
 * is ever logged or returned after issue.
 */
export class AuthService {
  /** The HMAC key of successorOf, derived on first use. */
  private successorKey: Buffer | undefined;

  constructor(
    private readonly deps: {
      store: UserStore & RefreshTokenStore;
      tokens: AccessTokens;
      limiter: RateLimiter;
      fanout: Fanout;
      clock: Clock;
      settings: AuthSettings;
    },
  ) {}

  /** register creates an account and a first session. AlreadyExists if the username is taken. */
  async register(rawUsername: string, password: string, clientAddress: string): Promise<{ user: User; session: Session }> {
    const username = normalizeUsername(rawUsername);
    checkPassword(password);
    // Each registration costs an argon2 hash: bound the work one address can ask for.
    await takeToken(this.deps.limiter, `register:addr:${clientAddress}`, this.deps.settings.registerPerAddress, "registrations from your address");
    const user: User = { id: newId(), username, createdAt: this.deps.clock.now() };
    await this.deps.store.createUser({ ...user, passwordHash: await hashPassword(password) });
    return { user, session: await this.openSession(user) };
  }

  /**
   * login checks credentials, rate limited per client address and per
   * username (ResourceExhausted with a retry hint). A wrong username and a
   * wrong password get the same answer after the same work (a name no
   * account can have gets that answer at once).
   *
   * The address is limited first, and only a name that could exist gets a
   * per-username bucket: otherwise a client past its limit could still make
   * the limiter store one key per request, each as large as the request.
   */
  async login(rawUsername: string, password: string, clientAddress: string): Promise<{ user: User; session: Session }> {
    if (rawUsername.trim() === "" || password === "") throw new ChatError("InvalidArgument", "username and password are required");
    await takeToken(this.deps.limiter, `login:addr:${clientAddress}`, this.deps.settings.loginPerAddress, "login attempts from your address");
    const username = usernameOrUndefined(rawUsername);
    if (username === undefined || password.length > 256) throw new ChatError("Unauthenticated", "wrong username or password");
    await takeToken(this.deps.limiter, `login:user:${username}`, this.deps.settings.loginPerUsername, "login attempts for this username");
    const found = await this.deps.store.findUserByName(username);
    if (!found) {
      await burnPasswordCheck(password);
      throw new ChatError("Unauthenticated", "wrong username or password");
    }
    if (!(await verifyPassword(found.passwordHash, password))) {
      throw new ChatError("Unauthenticated", "wrong username or password");
    }
    const user: User = { id: found.id, username: found.username, createdAt: found.createdAt };
    return { user, session: await this.openSession(user) };
  }

  /**
   * refresh rotates a refresh token. Each token works once: its successor
   * is derived from it (an HMAC under a key derived from the signing key),
   * so the rotation has one answer. Presenting a used token again within
   * `refreshReuseGraceMs` of its use, while its successor is still unused,
   * gets that same answer again (the successor and a new access token): the
   * client whose answer was lost on the network retries safely. Any other
   * second use (after the grace, or once the successor was used) is treated
   * as theft: the whole family (session) is revoked and its live streams end.
   *
   * The new token is inserted before the session's revocation mark is read;
   * a marked session is revoked again (now covering the new token) and
   * refused. So a revocation that raced this refresh (it read the family's
   * tokens before the new one existed) or was cut short (the mark written,
   * the tokens not) leaves no usable session: a mark written before this
   * read is seen here; one written after it outlives the new token
   * (RefreshTokenStore.isSessionRevoked), so stream openings refuse the
   * session and the new token's own refresh sees the mark.
   */
  async refresh(refreshToken: string): Promise<Session> {
    const now = this.deps.clock.now();
    const record = refreshToken === "" ? undefined : await this.deps.store.findRefreshToken(hashToken(refreshToken));
    if (!record) throw new ChatError("Unauthenticated", "refresh token is invalid; log in again");
    if (record.revokedAt !== null) throw new ChatError("Unauthenticated", "session was revoked; log in again");
    if (record.expiresAt <= now) throw new ChatError("Unauthenticated", "refresh token expired; log in again");
    const successor = this.successorOf(refreshToken);
    if (record.usedAt !== null || !(await this.deps.store.markRefreshTokenUsed(record.tokenHash, now))) {
      // A concurrent refresh of the same token marked it between our read and our mark: read when.
      const usedAt = record.usedAt ?? (await this.deps.store.findRefreshToken(record.tokenHash))?.usedAt ?? now;
      return this.answerAgain(record, successor, usedAt, now);
    }
    const user = await this.deps.store.getUser(record.userId);
    if (!user) throw new ChatError("Unauthenticated", "account no longer exists");
    const session = await this.issue(user, record.familyId, successor);
    if (await this.deps.store.isSessionRevoked(record.familyId)) {
      await this.revokeSession(record.userId, record.familyId);
      throw new ChatError("Unauthenticated", "session was revoked; log in again");
    }
    return session;
  }

  /**
   * answerAgain handles a second use of a refresh token (see refresh): the
   * same successor within the grace while it is unused, else revocation. A
   * successor not stored yet means the first refresh is still running:
   * Unavailable, and the client's retry gets the answer.
   */
  private async answerAgain(record: RefreshTokenRecord, successor: string, usedAt: number, now: number): Promise<Session> {
    const grace = this.deps.settings.refreshReuseGraceMs;
    if (grace > 0 && now - usedAt <= grace) {
      const next = await this.deps.store.findRefreshToken(hashToken(successor));
      if (!next) throw new ChatError("Unavailable", "a refresh with this token is still in progress; retry in a moment");
      if (next.usedAt === null && next.revokedAt === null && next.familyId === record.familyId) {
        const user = await this.deps.store.getUser(record.userId);
        if (!user) throw new ChatError("Unauthenticated", "account no longer exists");
        if (await this.deps.store.isSessionRevoked(record.familyId)) throw new ChatError("Unauthenticated", "session was revoked; log in again");
        const access = await this.deps.tokens.issue(user, record.familyId, now);
        return { accessToken: access.token, accessTokenExpiresAt: access.expiresAt, refreshToken: successor, refreshTokenExpiresAt: next.expiresAt };
      }
    }
    await this.revokeSession(record.userId, record.familyId);
    throw new ChatError("Unauthenticated", "refresh token was already used, so the session has been revoked; log in again");
  }

  /** successorOf is the refresh token that rotating `refreshToken` issues: 256 bits only the signing key's holders can compute. */
  private successorOf(refreshToken: string): string {
    this.successorKey ??= this.deps.tokens.derivedKey("chat refresh-token successor v1");
    return createHmac("sha256", this.successorKey).update(refreshToken).digest("base64url");
  }

  /** logout revokes the session that `refreshToken` belongs to (idempotent) and ends its live streams. */
  async logout(caller: Principal, refreshToken: string): Promise<void> {
    if (refreshToken === "") throw new ChatError("InvalidArgument", "refresh_token is required");
    const record = await this.deps.store.findRefreshToken(hashToken(refreshToken));
    if (!record) return;
    if (record.userId !== caller.userId) throw new ChatError("PermissionDenied", "refresh token belongs to another user");
    await this.revokeSession(record.userId, record.familyId);
  }

  private async revokeSession(userId: string, familyId: string): Promise<void> {
    await this.deps.store.revokeRefreshFamily(familyId, this.deps.clock.now());
    await this.deps.fanout.notice(userId, { type: "session_revoked", sessionId: familyId });
  }

  private openSession(user: User): Promise<Session> {
    return this.issue(user, newId(), randomBytes(32).toString("base64url"));
  }

  private async issue(user: User, familyId: string, refreshToken: string): Promise<Session> {
    const now = this.deps.clock.now();
    const refreshTokenExpiresAt = now + this.deps.settings.refreshTtlMs;
    await this.deps.store.insertRefreshToken({
      tokenHash: hashToken(refreshToken),
      userId: user.id,
      familyId,
      expiresAt: refreshTokenExpiresAt,
      usedAt: null,
      revokedAt: null,
    });
    const access = await this.deps.tokens.issue(user, familyId, now);
    return { accessToken: access.token, accessTokenExpiresAt: access.expiresAt, refreshToken, refreshTokenExpiresAt };
  }
}

/** usernameOrUndefined normalizes a username, or returns undefined if no account can have it. */
function usernameOrUndefined(raw: string): string | undefined {
  try {
    return normalizeUsername(raw);
  } catch {
    return undefined;
  }
}

/** hashToken is how refresh tokens are stored: SHA-256, hex (the tokens are 256-bit random, so no salt is needed). */
export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}
