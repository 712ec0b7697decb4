/**
 * Context: what a command runs with. The client is @chat/client's ChatClient with file stores: the session file
 * (tokens, and the cursors `tail` resumes from) is shared by every `chat` process of the same user, which the
 * stores make safe (locked read-modify-write; token refreshes under the lock).
 */
import { type ChatClient, type Cursor, type CursorStore, FileCursorStore, FileTokenStore, type UserInfo } from "@chat/client/node";
import { homedir } from "node:os";
import { join } from "node:path";
import type { ParsedArgs } from "./args.js";
import { CliError } from "./errors.js";

/** Context is what a command runs with. */
export interface Context {
  readonly client: ChatClient;
  /** server is the normalized server URL. */
  readonly server: string;
  readonly tokens: FileTokenStore;
  readonly cursors: TailCursorStore;
  readonly args: ParsedArgs;
  readonly json: boolean;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** out writes a line to stdout. */
  out(line: string): void;
  /** note writes a line to stderr (progress, hints, warnings). */
  note(line: string): void;
}

/** defaultSessionPath is $XDG_CONFIG_HOME/chat-cli/session.json, or ~/.config/chat-cli/session.json. */
export function defaultSessionPath(env: Readonly<Record<string, string | undefined>>): string {
  const base = env.XDG_CONFIG_HOME || join(homedir(), ".config");
  return join(base, "chat-cli", "session.json");
}

/**
 * TailCursorStore is the session file's cursor store as `tail` uses it: `scope` can make it start from nothing
 * (--new: every group at its head) and keep only some groups' cursors (tail's group arguments), so a tail of one
 * group does not move the cursors of the others it did not print.
 */
export class TailCursorStore implements CursorStore {
  private only: ReadonlySet<string> | undefined;
  private fresh = false;

  constructor(readonly file: FileCursorStore) {}

  /** scope limits what is loaded (nothing when `fresh`) and saved (the groups in `only`, when given). */
  scope(s: { only: ReadonlySet<string> | undefined; fresh: boolean }): void {
    this.only = s.only;
    this.fresh = s.fresh;
  }

  async load(userId: string): Promise<Map<string, Cursor>> {
    return this.fresh ? new Map() : this.file.load(userId);
  }

  set(userId: string, groupId: string, cursor: Cursor | null): void {
    if (this.only === undefined || this.only.has(groupId)) this.file.set(userId, groupId, cursor);
  }

  flush(): Promise<void> {
    return this.file.flush();
  }
}

/** openStores opens the session file as both the token store and the cursor store. */
export function openStores(path: string): { tokens: FileTokenStore; cursors: TailCursorStore } {
  return { tokens: new FileTokenStore(path), cursors: new TailCursorStore(new FileCursorStore(path)) };
}

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

/** me restores the session and returns its user; throws unauthenticated when there is none for this server. */
export async function me(ctx: Context): Promise<UserInfo> {
  let restored: boolean;
  try {
    restored = await ctx.client.restore();
  } catch (e) {
    throw new CliError("failed_precondition", e instanceof Error ? e.message : String(e));
  }
  const user = ctx.client.user;
  if (restored && user) return user;
  const stored = await ctx.tokens.load().catch(() => undefined);
  if (stored && stored.server !== ctx.server) {
    throw new CliError("unauthenticated", `not logged in to ${ctx.server} (the session is for ${stored.server}); run \`chat login <username>\``);
  }
  throw new CliError("unauthenticated", "not logged in; run `chat login <username>` or `chat register <username>`");
}
