/**
 * ChatApi: typed gRPC clients of chat.v1 for one server and one session
 * file. Authenticated calls carry the session's access token, refreshed
 * (RefreshToken, rotating the pair and saving it) shortly before it
 * expires, and a unary call answered UNAUTHENTICATED is refreshed and
 * retried once.
 */
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, type Interceptor, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService, type Tokens } from "../../gen/chat/v1/auth_service_pb.js";
import type { User } from "../../gen/chat/v1/common_pb.js";
import { GroupService } from "../../gen/chat/v1/group_service_pb.js";
import { MessageService } from "../../gen/chat/v1/message_service_pb.js";
import { StreamService } from "../../gen/chat/v1/stream_service_pb.js";
import { CliError } from "./errors.js";
import type { Session, SessionStore, StoredTokens } from "./session.js";

/** REFRESH_MARGIN_MS: an access token this close to expiry is refreshed before use. */
const REFRESH_MARGIN_MS = 30_000;

/** UNARY_TIMEOUT_MS bounds each unary call. */
const UNARY_TIMEOUT_MS = 15_000;

/** normalizeServer checks a server URL (http or https) and drops a trailing slash; throws CliError. */
export function normalizeServer(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CliError("invalid_argument", `server address "${url}" is not a URL (expected e.g. http://127.0.0.1:8080)`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new CliError("invalid_argument", `server address "${url}" must start with http:// or https://`);
  }
  return parsed.href.replace(/\/+$/, "");
}

/** ChatApi holds the clients and the in-memory copy of the session. */
export class ChatApi {
  /** publicAuth calls Register, Login and RefreshToken (no token). */
  readonly publicAuth: Client<typeof AuthService>;
  /** auth calls Logout (with the token). */
  readonly auth: Client<typeof AuthService>;
  readonly groups: Client<typeof GroupService>;
  readonly messages: Client<typeof MessageService>;
  readonly streams: Client<typeof StreamService>;
  private current: Session | undefined;

  constructor(
    readonly server: string,
    readonly store: SessionStore,
  ) {
    const bearer: Interceptor = (next) => async (req) => {
      req.header.set("authorization", `Bearer ${await this.accessToken()}`);
      if (req.stream) return next(req);
      try {
        return await next(req);
      } catch (e) {
        if (!(e instanceof ConnectError && e.code === Code.Unauthenticated)) throw e;
        await this.refresh();
        req.header.set("authorization", `Bearer ${await this.accessToken()}`);
        return await next(req);
      }
    };
    const open = createGrpcTransport({ baseUrl: server, defaultTimeoutMs: UNARY_TIMEOUT_MS });
    const authed = createGrpcTransport({ baseUrl: server, defaultTimeoutMs: UNARY_TIMEOUT_MS, interceptors: [bearer] });
    this.publicAuth = createClient(AuthService, open);
    this.auth = createClient(AuthService, authed);
    this.groups = createClient(GroupService, authed);
    this.messages = createClient(MessageService, authed);
    this.streams = createClient(StreamService, authed);
  }

  /** load reads the session file; call before session(). */
  async load(): Promise<Session | undefined> {
    this.current = await this.store.read();
    return this.current;
  }

  /** session returns the logged-in session for this server, or throws unauthenticated. */
  session(): Session {
    const s = this.current;
    if (!s) throw new CliError("unauthenticated", "not logged in; run `chat login <username>` or `chat register <username>`");
    if (s.server !== this.server) {
      throw new CliError("unauthenticated", `not logged in to ${this.server} (the session is for ${s.server}); run \`chat login <username>\``);
    }
    return s;
  }

  /** saveLogin stores a fresh login (Register or Login), keeping the tail cursors when it is the same user on the same server. */
  async saveLogin(user: User | undefined, tokens: Tokens | undefined): Promise<Session> {
    if (!user || !tokens) throw new CliError("internal", "the server's answer lacks the user or the tokens");
    const stored = storeTokens(tokens);
    const saved = await this.store.update((old) => ({
      version: 1,
      server: this.server,
      userId: user.userId,
      username: user.username,
      tokens: stored,
      cursors: old && old.server === this.server && old.userId === user.userId ? old.cursors : {},
    }));
    this.current = saved;
    return saved as Session;
  }

  /** accessToken returns a token good for at least REFRESH_MARGIN_MS, refreshing first if needed. */
  async accessToken(): Promise<string> {
    const s = this.session();
    if (Date.parse(s.tokens.accessTokenExpiresAt) - Date.now() < REFRESH_MARGIN_MS) await this.refresh();
    return this.session().tokens.accessToken;
  }

  /**
   * refresh replaces the access token, normally by rotating the refresh
   * token. Under the session lock it first rereads the file: when another
   * process has rotated the pair meanwhile, its pair is adopted instead, so
   * a refresh token is never presented twice.
   */
  async refresh(): Promise<void> {
    const mine = this.session();
    await this.store.withLock(async () => {
      const disk = await this.store.read();
      if (!disk || disk.server !== mine.server || disk.userId !== mine.userId) {
        this.current = disk;
        throw new CliError("unauthenticated", "logged out meanwhile; run `chat login <username>`");
      }
      const fresh = Date.parse(disk.tokens.accessTokenExpiresAt) - Date.now() >= REFRESH_MARGIN_MS;
      if (disk.tokens.refreshToken !== mine.tokens.refreshToken && fresh) {
        this.current = { ...mine, tokens: disk.tokens };
        return;
      }
      let tokens: Tokens | undefined;
      try {
        ({ tokens } = await this.publicAuth.refreshToken({ refreshToken: disk.tokens.refreshToken }));
      } catch (e) {
        if (e instanceof ConnectError && e.code === Code.Unauthenticated) {
          throw new CliError("unauthenticated", "the session expired or was revoked; run `chat login <username>`", { cause: e });
        }
        throw e;
      }
      if (!tokens) throw new CliError("internal", "RefreshToken answered without tokens");
      const next: Session = { ...disk, tokens: storeTokens(tokens) };
      await this.store.write(next);
      this.current = { ...mine, tokens: next.tokens };
    });
  }

  /**
   * updateCursors merges cursor changes into the session file (under the
   * lock, so tokens rotated by another process are kept). `null` deletes a
   * cursor. Nothing is written if the file now belongs to another login.
   */
  async updateCursors(changes: ReadonlyMap<string, { seq: bigint; epoch: string } | null>): Promise<void> {
    if (changes.size === 0) return;
    const me = this.session();
    await this.store.update((disk) => {
      if (!disk || disk.server !== me.server || disk.userId !== me.userId) return disk;
      const cursors = { ...disk.cursors };
      for (const [id, c] of changes) {
        if (c === null) delete cursors[id];
        else cursors[id] = { seq: c.seq.toString(), epoch: c.epoch };
      }
      return { ...disk, cursors };
    });
  }
}

function iso(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toISOString() : new Date(0).toISOString();
}

function storeTokens(t: Tokens): StoredTokens {
  return {
    accessToken: t.accessToken,
    accessTokenExpiresAt: iso(t.accessTokenExpiresAt),
    refreshToken: t.refreshToken,
    refreshTokenExpiresAt: iso(t.refreshTokenExpiresAt),
  };
}
