/**
 * chat: the command-line client of chat.v1 (`npx chat help`), built on @chat/client: unary calls over the Connect
 * protocol to CHAT_SERVER, `tail` over a WebSocket, the login and the tail cursors in a session file. Exit status:
 * 0 success, 1 error (`error: <code>: <message>` on stderr), 2 usage error, 130 when a prompt is interrupted.
 */
import { ChatClient } from "@chat/client/node";
import { type ParsedArgs, flag, hasFlag, parseArgs } from "./args.js";
import * as commands from "./commands.js";
import { type Context, defaultSessionPath, normalizeServer, openStores } from "./context.js";
import { Canceled, UsageError, describeError } from "./errors.js";
import { tail } from "./tail.js";
import { USAGE } from "./usage.js";

/** DEFAULT_SERVER is where the server listens with its default configuration. */
export const DEFAULT_SERVER = "http://127.0.0.1:8080";

type Env = Readonly<Record<string, string | undefined>>;

const HANDLERS: Readonly<Record<string, (ctx: Context) => void | Promise<void>>> = {
  register: commands.register,
  login: commands.login,
  logout: commands.logout,
  whoami: commands.whoami,
  groups: commands.groups,
  "create-group": commands.createGroup,
  "add-member": commands.addMember,
  "remove-member": commands.removeMember,
  leave: commands.leave,
  members: commands.members,
  send: commands.send,
  history: commands.history,
  read: commands.read,
  tail,
};

/** runCli runs one command line and returns the exit status; it never throws. */
export async function runCli(argv: readonly string[], env: Env): Promise<number> {
  const out = (line: string) => void process.stdout.write(`${line}\n`);
  const note = (line: string) => void process.stderr.write(`${line}\n`);
  let args: ParsedArgs;
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    note(`error: ${e.message}\n\n${USAGE}`);
    return 2;
  }
  if (args.command === undefined) {
    note(USAGE);
    return 2;
  }
  if (args.command === "help") {
    out(USAGE);
    return 0;
  }
  const handler = HANDLERS[args.command];
  if (!handler) throw new Error(`no handler for ${args.command}`);
  let server = "";
  try {
    server = normalizeServer(flag(args, "server") ?? (env.CHAT_SERVER || DEFAULT_SERVER));
    const { tokens, cursors } = openStores(flag(args, "session") ?? (env.CHAT_SESSION || defaultSessionPath(env)));
    // Only tail opens a live connection (a WebSocket, with the ws package's class).
    const WebSocket = args.command === "tail" ? (await import("ws")).WebSocket : undefined;
    const client = new ChatClient({ baseUrl: server, tokenStore: tokens, cursorStore: cursors, sendAttempts: 3, ...(WebSocket ? { WebSocket } : {}) });
    await handler({ client, server, tokens, cursors, args, json: hasFlag(args, "json"), env, out, note });
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      note(`error: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    if (e instanceof Canceled) return 130;
    const text = describeError(e);
    const hint = text.startsWith("unavailable:") && server !== "" ? ` (is the server running at ${server}?)` : "";
    note(`error: ${text}${hint}`);
    if (env.CHAT_DEBUG && e instanceof Error && e.stack) note(e.stack);
    return 1;
  }
}

// `chat tail | head -1`: a closed stdout ends the command quietly.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code === "EPIPE") process.exit(0);
  throw e;
});
process.exitCode = await runCli(process.argv.slice(2), process.env);
