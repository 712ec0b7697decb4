/**
 * Command-line flags of bench/run.ts: every load-shape parameter, with the
 * defaults of issue 4's load shape.
 */
import { parseArgs } from "node:util";
import type { TargetKind } from "./servers.js";

const TARGETS = ["embedded", "production", "url", "reference"] as const satisfies readonly TargetKind[];

export const MODES = ["fixed", "max", "send", "history", "connections", "push"] as const;
export type Mode = (typeof MODES)[number];

/** FLAGS documents every flag: name → [default, help]. The README's table follows it. */
export const FLAGS = {
  target: ["embedded", "server under test: embedded (one all-in-one process), production (one process per service on Cassandra + NATS + Redis), url (a running server, --url) or reference (a bare broadcast server, bench/reference/; fixed and max only)"],
  compare: ["", "fixed, max: run the mode on --target, then again on this target (e.g. reference) with the same flags, and print every figure of both with the ratio target ÷ this"],
  url: ["", "with --target url: the server's base URL (http://127.0.0.1:8080)"],
  "server-pid": ["", "with --target url: pid(s) of the server process(es) to measure CPU and memory of (repeatable)"],
  groups: ["100", "groups G (push: 50)"],
  members: ["20", "members per group S (each a separate subscriber connection with its own stream; push: 10 offline members, each with a Web Push device)"],
  users: ["", "distinct users (default G × S: every member its own user; fewer puts users in several groups)"],
  rate: ["500", "messages per second R, open loop (fixed; the first step of max; history: reads per second; push: 100)"],
  duration: ["20", "measured seconds (fixed, send steps, history phases)"],
  warmup: ["5", "warm-up seconds at the same rate before measuring (not counted)"],
  "text-bytes": ["100", "message text size in bytes (starts with the send time)"],
  workers: ["2", "subscriber worker processes"],
  transport: ["grpc", "subscribers' transport: grpc (Subscribe over HTTP/2, a lean gRPC reader) or websocket (Subscribe over WebSocket, docs/websocket.md)"],
  "streams-per-connection": ["1", "Subscribe streams sharing one HTTP/2 connection (1 = a connection per stream, as separate devices)"],
  "connect-concurrency": ["50", "streams each worker opens at once during setup"],
  "register-concurrency": ["8", "concurrent Register calls during setup (argon2id is slow)"],
  "sender-connections": ["4", "HTTP/2 connections of the sender"],
  "max-in-flight": ["4000", "sender: calls in flight before it skips (and reports) scheduled calls"],
  timeout: ["10", "deadline of each SendMessage / ListMessages call, seconds"],
  drain: ["15", "seconds to wait after the last send for every stream to reach its groups' heads"],
  // max / send
  "step-duration": ["10", "max, send: seconds per step"],
  factor: ["1.5", "max: rate multiplier per step (send: 2)"],
  "p99-limit": ["200", "max: stop when delivery p99 exceeds this many ms (send: SendMessage p99, default 50)"],
  "max-steps": ["12", "max, send: most steps"],
  subscribe: ["false", "send: also hold the subscriber streams (default: SendMessage alone)"],
  // history
  "history-messages": ["300", "history: messages written per group before reading"],
  "page-size": ["50", "history: ListMessages limit"],
  "write-rate": ["50", "history: messages per second written during the warm phase (keeps groups hot)"],
  // connections
  connections: ["100000", "connections: target live subscriber connections"],
  "group-size": ["10", "connections: members per group"],
  "step-connections": ["10000", "connections: connections added per step"],
  "devices-per-user": ["1", "connections: streams per user (each its own connection); users = connections / devices"],
  "client-procs": ["0", "connections: subscriber processes (0 = enough for ≤ 16,000 connections each)"],
  hosts: ["127.0.0.1", "listen addresses of the stream processes, comma-separated (e.g. 127.0.0.1,127.0.0.2)"],
  "idle-seconds": ["10", "connections: after each step, seconds with no traffic (heartbeats only) over which the servers' idle CPU is measured (0 = skip)"],
  "final-duration": ["60", "connections: once every connection is open, seconds of traffic at the step rate, all connections held (0 = skip)"],
  // production
  "stream-procs": ["2", "production: stream processes"],
  "message-procs": ["1", "production: message processes"],
  "cassandra-url": ["cassandra://127.0.0.1:9042/bench", "production: Cassandra contact point; the run uses a fresh keyspace <name>_<random> and drops it"],
  "nats-url": ["nats://127.0.0.1:4222", "production: NATS JetStream (the run uses its own namespace and deletes its stream); ignored with --nats-replicas 3"],
  "nats-replicas": ["3", "production: 3 starts a private 3-node NATS cluster for the run (the timeline stream on 3 replicas, as in production); 1 uses --nats-url"],
  "redis-url": ["redis://127.0.0.1:6379", "production: Redis (the run's keys are prefixed by its namespace and deleted)"],
  // server process
  "server-env": ["", "extra KEY=VALUE for every server process (repeatable)"],
  "server-node-arg": ["", "extra node flag for every server process (repeatable)"],
  profile: ["false", "run the server(s) with --cpu-prof; profiles go to bench/results/profiles/"],
  keep: ["false", "keep the server's data directory / keyspace"],
  label: ["", "free text stored in the JSON result"],
  "no-write": ["false", "print only; write no files"],
} as const satisfies Record<string, readonly [string, string]>;

type FlagName = keyof typeof FLAGS;
const BOOLEAN: ReadonlySet<FlagName> = new Set<FlagName>(["subscribe", "profile", "keep", "no-write"]);
const MULTIPLE: ReadonlySet<FlagName> = new Set<FlagName>(["server-env", "server-node-arg", "server-pid"]);

/** Options are the parsed flags. */
export interface Options {
  mode: Mode;
  target: TargetKind;
  /** --compare: a second target run after the first, with the same flags ("" = none). */
  compare: TargetKind | "";
  url: string;
  serverPids: number[];
  groups: number;
  members: number;
  users: number | undefined;
  rate: number;
  duration: number;
  warmup: number;
  textBytes: number;
  workers: number;
  transport: "grpc" | "websocket";
  streamsPerConnection: number;
  connectConcurrency: number;
  registerConcurrency: number;
  senderConnections: number;
  maxInFlight: number;
  timeout: number;
  drain: number;
  stepDuration: number;
  factor: number;
  p99Limit: number;
  maxSteps: number;
  subscribe: boolean;
  historyMessages: number;
  pageSize: number;
  writeRate: number;
  connections: number;
  groupSize: number;
  stepConnections: number;
  devicesPerUser: number;
  clientProcs: number;
  hosts: string[];
  idleSeconds: number;
  finalDuration: number;
  streamProcs: number;
  messageProcs: number;
  cassandraUrl: string;
  natsUrl: string;
  natsReplicas: number;
  redisUrl: string;
  serverEnv: Record<string, string>;
  serverNodeArgs: string[];
  profile: boolean;
  keep: boolean;
  label: string;
  write: boolean;
  /** Flags given explicitly on the command line. */
  given: Set<string>;
}

export class UsageError extends Error {}

/** usage is the --help text. */
export function usage(): string {
  const lines = [
    "usage: node --import tsx bench/run.ts <mode> [--flag value ...]",
    "       npm run bench -- [<mode>] [--flag value ...]   (mode defaults to fixed)",
    "",
    `modes: ${MODES.join(", ")}`,
    "",
    "flags:",
  ];
  for (const [name, [def, help]] of Object.entries(FLAGS)) {
    lines.push(`  --${name.padEnd(24)} ${help}${def !== "" && !BOOLEAN.has(name as FlagName) ? ` (default ${def})` : ""}`);
  }
  return lines.join("\n");
}

/** parseOptions parses argv (without node and the script). */
export function parseOptions(argv: string[]): Options {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = { help: { type: "boolean" } };
  for (const name of Object.keys(FLAGS) as FlagName[]) {
    options[name] = { type: BOOLEAN.has(name) ? "boolean" : "string", ...(MULTIPLE.has(name) ? { multiple: true } : {}) };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const v = parsed.values as Record<string, string | boolean | string[] | undefined>;
  if (v.help) throw new UsageError("");
  const mode = (parsed.positionals[0] ?? "fixed") as Mode;
  if (!MODES.includes(mode)) throw new UsageError(`unknown mode "${mode}" (use one of ${MODES.join(", ")})`);
  if (parsed.positionals.length > 1) throw new UsageError(`unexpected argument "${parsed.positionals[1]}"`);
  const given = new Set(Object.keys(v).filter((k) => v[k] !== undefined));
  const str = (name: FlagName) => {
    const x = v[name];
    return typeof x === "string" ? x : FLAGS[name][0];
  };
  const num = (name: FlagName, min: number, max: number, fallback?: string) => {
    const text = given.has(name) || fallback === undefined ? str(name) : fallback;
    const n = Number(text);
    if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} must be a number from ${min} to ${max} (got "${text}")`);
    return n;
  };
  const int = (name: FlagName, min: number, max: number, fallback?: string) => {
    const n = num(name, min, max, fallback);
    if (!Number.isInteger(n)) throw new UsageError(`--${name} must be a whole number`);
    return n;
  };
  const bool = (name: FlagName) => v[name] === true || (v[name] === undefined && (FLAGS[name][0] as string) === "true");
  const list = (name: FlagName) => {
    const x = v[name];
    return Array.isArray(x) ? x : typeof x === "string" ? [x] : [];
  };
  const oneOf = <T extends string>(name: FlagName, values: readonly T[]): T => {
    const x = str(name);
    if (!(values as readonly string[]).includes(x)) throw new UsageError(`--${name} must be one of ${values.join(", ")} (got "${x}")`);
    return x as T;
  };
  const target = oneOf("target", TARGETS);
  const compare = given.has("compare") ? oneOf("compare", TARGETS.filter((t) => t !== "url")) : "";
  const serverEnv: Record<string, string> = {};
  for (const kv of list("server-env")) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(kv);
    if (!m?.[1]) throw new UsageError(`--server-env wants KEY=VALUE, got "${kv}"`);
    serverEnv[m[1]] = m[2] ?? "";
  }
  const isSend = mode === "send";
  const opts: Options = {
    mode,
    target,
    compare,
    url: str("url"),
    serverPids: list("server-pid").map(Number).filter((n) => n > 0),
    groups: int("groups", 1, 1_000_000, mode === "history" ? "100" : mode === "push" ? "50" : undefined),
    members: int("members", 1, 100_000, mode === "history" ? "5" : mode === "push" ? "10" : undefined),
    users: given.has("users") ? int("users", 1, 10_000_000) : mode === "history" ? 50 : undefined,
    rate: num("rate", 0.1, 10_000_000, isSend ? "250" : mode === "push" ? "100" : undefined),
    duration: num("duration", 0.5, 3600),
    warmup: num("warmup", 0, 3600),
    textBytes: int("text-bytes", 1, 1 << 20),
    workers: int("workers", 0, 64, (isSend && !bool("subscribe")) || mode === "push" ? "0" : undefined),
    transport: oneOf("transport", ["grpc", "websocket"] as const),
    streamsPerConnection: int("streams-per-connection", 1, 1000),
    connectConcurrency: int("connect-concurrency", 1, 10_000),
    registerConcurrency: int("register-concurrency", 1, 256),
    senderConnections: int("sender-connections", 1, 256),
    maxInFlight: int("max-in-flight", 1, 1_000_000),
    timeout: num("timeout", 0.1, 600),
    drain: num("drain", 0, 600),
    stepDuration: num("step-duration", 1, 3600),
    factor: num("factor", 1.01, 100, isSend ? "2" : undefined),
    p99Limit: num("p99-limit", 0.01, 600_000, isSend ? "50" : undefined),
    maxSteps: int("max-steps", 1, 100),
    subscribe: bool("subscribe"),
    historyMessages: int("history-messages", 1, 1_000_000),
    pageSize: int("page-size", 1, 1000),
    writeRate: num("write-rate", 0, 1_000_000),
    connections: int("connections", 1, 10_000_000),
    groupSize: int("group-size", 1, 100_000),
    stepConnections: int("step-connections", 1, 10_000_000),
    devicesPerUser: int("devices-per-user", 1, 1000),
    clientProcs: int("client-procs", 0, 64),
    hosts: str("hosts").split(",").map((h) => h.trim()).filter((h) => h !== ""),
    idleSeconds: num("idle-seconds", 0, 3600),
    finalDuration: num("final-duration", 0, 3600),
    streamProcs: int("stream-procs", 1, 64),
    messageProcs: int("message-procs", 1, 64),
    cassandraUrl: str("cassandra-url"),
    natsUrl: str("nats-url"),
    natsReplicas: int("nats-replicas", 1, 3),
    redisUrl: str("redis-url"),
    serverEnv,
    serverNodeArgs: list("server-node-arg"),
    profile: bool("profile"),
    keep: bool("keep"),
    label: str("label"),
    write: !bool("no-write"),
    given,
  };
  for (const h of opts.hosts) if (!/^127\.\d+\.\d+\.\d+$/.test(h)) throw new UsageError(`--hosts: ${h} is not a loopback address (127.x.y.z)`);
  if (opts.transport === "websocket" && opts.streamsPerConnection > 1) throw new UsageError("--streams-per-connection: a WebSocket carries one stream");
  if (opts.target === "url" && !opts.url) throw new UsageError("--target url needs --url");
  if ((opts.target === "reference" || opts.compare !== "") && mode !== "fixed" && mode !== "max") {
    throw new UsageError(`${opts.target === "reference" ? "--target reference" : "--compare"} works with the fixed and max modes only`);
  }
  if (opts.compare === opts.target) throw new UsageError(`--compare ${opts.compare} is the --target itself`);
  return opts;
}
