/**
 * Command-line parsing: a command name, its positional arguments and
 * `--flag value` / `--flag=value` options, which may appear anywhere
 * (`--` ends the options). Tokens starting with a single dash other than
 * `-h` are positional, so `chat send team -1 for that` works.
 */
import { UsageError } from "./errors.js";

/** FlagKind says whether a flag takes a value, and whether it may repeat. */
type FlagKind = "boolean" | "string" | "strings";

/** FLAGS lists every flag the client knows, global or per command. */
const FLAGS: Readonly<Record<string, FlagKind>> = {
  server: "string",
  session: "string",
  json: "boolean",
  help: "boolean",
  password: "string",
  member: "strings",
  role: "string",
  limit: "string",
  before: "string",
  after: "string",
  new: "boolean",
};

const GLOBAL_FLAGS = ["server", "session", "json", "help"] as const;

/** CommandSpec is a command's arity and its own flags. */
interface CommandSpec {
  readonly min: number;
  readonly max: number;
  readonly flags: readonly string[];
  readonly usage: string;
}

/** COMMANDS lists every command with its arguments (usage is shown in arity errors). */
export const COMMANDS: Readonly<Record<string, CommandSpec>> = {
  help: { min: 0, max: 1, flags: [], usage: "help [command]" },
  register: { min: 1, max: 1, flags: ["password"], usage: "register <username>" },
  login: { min: 1, max: 1, flags: ["password"], usage: "login <username>" },
  logout: { min: 0, max: 0, flags: [], usage: "logout" },
  whoami: { min: 0, max: 0, flags: [], usage: "whoami" },
  groups: { min: 0, max: 0, flags: [], usage: "groups" },
  "create-group": { min: 1, max: 1, flags: ["member"], usage: "create-group <name> [--member <username>]..." },
  "add-member": { min: 2, max: 2, flags: ["role"], usage: "add-member <group> <username> [--role member|admin|owner]" },
  "remove-member": { min: 2, max: 2, flags: [], usage: "remove-member <group> <username|user-id>" },
  leave: { min: 1, max: 1, flags: [], usage: "leave <group>" },
  members: { min: 1, max: 1, flags: [], usage: "members <group>" },
  send: { min: 2, max: Number.POSITIVE_INFINITY, flags: [], usage: "send <group> <text...>" },
  history: { min: 1, max: 1, flags: ["limit", "before", "after"], usage: "history <group> [--limit N] [--before SEQ | --after SEQ]" },
  read: { min: 1, max: 1, flags: [], usage: "read <group>" },
  tail: { min: 0, max: Number.POSITIVE_INFINITY, flags: ["new"], usage: "tail [<group>...] [--new]" },
};

/** ParsedArgs is a command line split into command, positionals and flags. */
export interface ParsedArgs {
  /** command is the first positional, or "help" when none was given with --help. */
  readonly command: string | undefined;
  readonly positionals: readonly string[];
  /** flags maps a flag name to its values (booleans hold ["true"]). */
  readonly flags: ReadonlyMap<string, readonly string[]>;
}

/** parseArgs splits argv and checks the command, its arity and its flags; throws UsageError. */
export function parseArgs(argv: readonly string[]): ParsedArgs {
  const positionals: string[] = [];
  const flags = new Map<string, string[]>();
  let onlyPositionals = false;
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i] ?? "";
    if (onlyPositionals || !token.startsWith("-") || token === "-" || (!token.startsWith("--") && token !== "-h")) {
      positionals.push(token);
      continue;
    }
    if (token === "--") {
      onlyPositionals = true;
      continue;
    }
    const eq = token.indexOf("=");
    const name = token === "-h" ? "help" : token.slice(2, eq < 0 ? undefined : eq);
    const kind = FLAGS[name];
    if (kind === undefined) throw new UsageError(`unknown option ${eq < 0 ? token : token.slice(0, eq)}`);
    let value: string;
    if (kind === "boolean") {
      if (eq >= 0) throw new UsageError(`option --${name} takes no value`);
      value = "true";
    } else if (eq >= 0) {
      value = token.slice(eq + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError(`option --${name} needs a value`);
      value = next;
      i++;
    }
    const values = flags.get(name) ?? [];
    if (kind !== "strings" && values.length > 0) throw new UsageError(`option --${name} given more than once`);
    values.push(value);
    flags.set(name, values);
  }

  const command = positionals.shift();
  if (command === undefined) return { command: flags.has("help") ? "help" : undefined, positionals, flags };
  const spec = COMMANDS[command];
  if (spec === undefined) throw new UsageError(`unknown command "${command}"`);
  if (flags.has("help")) return { command: "help", positionals: [command], flags };
  for (const name of flags.keys()) {
    if (!(GLOBAL_FLAGS as readonly string[]).includes(name) && !spec.flags.includes(name)) {
      throw new UsageError(`option --${name} does not apply to ${command}`);
    }
  }
  if (positionals.length < spec.min || positionals.length > spec.max) {
    throw new UsageError(`usage: chat ${spec.usage}`);
  }
  return { command, positionals, flags };
}

/** flag returns a single-valued flag, or undefined. */
export function flag(args: ParsedArgs, name: string): string | undefined {
  return args.flags.get(name)?.[0];
}

/** flagValues returns every value of a repeatable flag. */
export function flagValues(args: ParsedArgs, name: string): readonly string[] {
  return args.flags.get(name) ?? [];
}

/** hasFlag tells whether a boolean flag was given. */
export function hasFlag(args: ParsedArgs, name: string): boolean {
  return args.flags.has(name);
}

/** seqFlag parses a flag holding a non-negative integer (a seq or a limit) as a bigint. */
export function seqFlag(args: ParsedArgs, name: string): bigint | undefined {
  const v = flag(args, name);
  if (v === undefined) return undefined;
  if (!/^\d{1,19}$/.test(v)) throw new UsageError(`--${name} must be a whole number, got "${v}"`);
  return BigInt(v);
}
