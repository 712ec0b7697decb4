/**
 * AuthSession holds the logged-in session of one client: the access token, the rotating refresh token, and the
 * store that outlives the client. It refreshes by itself, single-flight, and says when the session is gone.
 */
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { AuthService, Tokens } from "../../../gen/chat/v1/auth_service_pb.js";
import type { User } from "../../../gen/chat/v1/common_pb.js";
import type { StoredSession, TokenStore } from "./stores.js";
import { base64UrlDecode } from "./web.js";

/** MAX_REFRESH_MARGIN_MS: a token is refreshed at most this long before it expires (less for short-lived tokens). */
const MAX_REFRESH_MARGIN_MS = 30_000;

/** jwtTimes reads `exp` and `iat` (seconds) of a JWT without verifying it (the server does); undefined if unreadable. */
export function jwtTimes(token: string): { expMs: number; iatMs: number | undefined } | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    const claims = JSON.parse(base64UrlDecode(payload)) as { exp?: unknown; iat?: unknown };
    if (typeof claims.exp !== "number") return undefined;
    return { expMs: claims.exp * 1000, iatMs: typeof claims.iat === "number" ? claims.iat * 1000 : undefined };
  } catch {
    return undefined;
  }
}

/** sessionFrom builds a StoredSession from a server answer; expiry comes from the JWT's exp, else from Tokens. */
export function sessionFrom(server: string, user: { userId: string; username: string }, t: Tokens): StoredSession {
  const jwt = jwtTimes(t.accessToken);
  return {
    server,
    userId: user.userId,
    username: user.username,
    accessToken: t.accessToken,
    accessTokenExpiresAt: jwt?.expMs ?? (t.accessTokenExpiresAt ? timestampMs(t.accessTokenExpiresAt) : Date.now()),
    refreshToken: t.refreshToken,
    refreshTokenExpiresAt: t.refreshTokenExpiresAt ? timestampMs(t.refreshTokenExpiresAt) : Number.MAX_SAFE_INTEGER,
  };
}

/** refreshMargin is how long before expiry a token is refreshed: a quarter of its lifetime, at most 30 s. */
function refreshMargin(s: StoredSession): number {
  const iat = jwtTimes(s.accessToken)?.iatMs;
  const lifetime = iat !== undefined ? s.accessTokenExpiresAt - iat : 4 * MAX_REFRESH_MARGIN_MS;
  return Math.min(MAX_REFRESH_MARGIN_MS, Math.max(0, lifetime / 4));
}

/** needsRefresh: the session's access token is within its refresh margin of expiring (or past it). */
function needsRefresh(s: StoredSession, now = Date.now()): boolean {
  return s.accessTokenExpiresAt - now <= refreshMargin(s);
}

/** signedOutError is the error calls fail with once there is no session. */
export function signedOutError(message = "not signed in; call login() or register() first"): ConnectError {
  return new ConnectError(message, Code.Unauthenticated);
}

/** AuthSession is described at the top of the file. */
export class AuthSession {
  private current: StoredSession | undefined;
  private inflight: Promise<void> | undefined;

  constructor(
    private readonly server: string,
    private readonly auth: Client<typeof AuthService>,
    private readonly store: TokenStore,
    /** onSignedOut is called once each time a live session ends because it could not be refreshed. */
    private readonly onSignedOut: (reason: string) => void,
  ) {}

  /** session is the current session, if any. */
  get session(): StoredSession | undefined {
    return this.current;
  }

  /** restore loads the stored session for this server; true when there is one whose refresh token has not expired. */
  async restore(): Promise<boolean> {
    const s = await this.store.load();
    this.current = s && s.server === this.server && s.refreshTokenExpiresAt > Date.now() ? s : undefined;
    return this.current !== undefined;
  }

  /** adopt stores the session of a fresh Register or Login. */
  async adopt(user: User | undefined, tokens: Tokens | undefined): Promise<StoredSession> {
    if (!user || !tokens) throw new ConnectError("the server's answer lacks the user or the tokens", Code.Internal);
    const s = sessionFrom(this.server, user, tokens);
    await this.store.save(s);
    this.current = s;
    return s;
  }

  /** forget drops the session here and in the store (only if the store still holds this user's session). */
  async forget(): Promise<void> {
    const mine = this.current;
    this.current = undefined;
    if (!mine) return;
    const drop = async () => {
      const disk = await this.store.load();
      if (!disk || (disk.userId === mine.userId && disk.server === mine.server)) await this.store.save(undefined);
    };
    await (this.store.withLock ? this.store.withLock(drop) : drop());
  }

  /** accessToken returns a token that is not about to expire, refreshing first if needed; rejects UNAUTHENTICATED without a session. */
  async accessToken(): Promise<string> {
    const s = this.current;
    if (!s) throw signedOutError();
    if (needsRefresh(s)) await this.refresh(s.accessToken);
    const now = this.current;
    if (!now) throw signedOutError();
    return now.accessToken;
  }

  /**
   * refresh rotates the token pair, unless `staleToken` is given and is no longer the current access token (another
   * call refreshed meanwhile). Concurrent calls share one refresh. The stored session is always reread first (under
   * the store's lock when it has `withLock`) and a pair another client of the store rotated is adopted, so a client
   * never presents a refresh token another one already used; with a lock this holds for concurrent refreshes too.
   * When the server refuses the refresh token (revoked, reused, expired) the session is forgotten, `onSignedOut` is
   * called, and this rejects with UNAUTHENTICATED.
   */
  refresh(staleToken?: string): Promise<void> {
    if (staleToken !== undefined && this.current && this.current.accessToken !== staleToken) return Promise.resolve();
    this.inflight ??= this.rotate().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async rotate(): Promise<void> {
    const mine = this.current;
    if (!mine) throw signedOutError();
    const run = async (): Promise<void> => {
      const disk = await this.store.load();
      if (!disk || disk.server !== mine.server || disk.userId !== mine.userId) {
        this.current = undefined;
        this.onSignedOut("logged out elsewhere");
        throw signedOutError("logged out meanwhile; log in again");
      }
      if (disk.refreshToken !== mine.refreshToken && !needsRefresh(disk)) {
        this.current = disk; // another process rotated the pair: use its pair
        return;
      }
      let tokens: Tokens | undefined;
      try {
        ({ tokens } = await this.auth.refreshToken({ refreshToken: disk.refreshToken }));
      } catch (e) {
        if (e instanceof ConnectError && e.code === Code.Unauthenticated) {
          this.current = undefined;
          await this.store.save(undefined);
          this.onSignedOut(e.rawMessage);
          throw new ConnectError(`the session expired or was revoked (${e.rawMessage}); log in again`, Code.Unauthenticated, undefined, undefined, e);
        }
        throw e;
      }
      if (!tokens) throw new ConnectError("RefreshToken answered without tokens", Code.Internal);
      const next = sessionFrom(this.server, disk, tokens);
      await this.store.save(next);
      this.current = next;
    };
    return this.store.withLock ? this.store.withLock(run) : run();
  }
}
