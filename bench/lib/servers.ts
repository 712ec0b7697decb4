/**
 * The server under test: the embedded all-in-one process, the production
 * topology (one process per service on Cassandra + NATS JetStream + Redis),
 * an already running server given by URL, or the reference: a bare broadcast
 * server (bench/reference/broadcast-server.ts) to compare the others with.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildSync } from "esbuild";
import { NODE_BUILD } from "../../scripts/node-build-options.mjs";
import { type Managed, spawnGuarded, stopChild } from "./children.js";
import { pidListeningOn } from "./procstat.js";
import { PrivateNatsCluster } from "../../test/support/private-nats-cluster.js";

const REPO = join(import.meta.dirname, "../..");
const MAIN = join(REPO, "services/main.ts");
/** BUILT_MAIN is MAIN compiled by scripts/build-server.mjs, as production runs it (buildServer makes it). */
const BUILT_MAIN = join(REPO, "dist/services/main.js");
const REFERENCE = join(REPO, "bench/reference/broadcast-server.ts");
/** BUILT_REFERENCE is REFERENCE compiled like the server (buildReference makes it), so neither pays tsx's keepNames. */
const BUILT_REFERENCE = join(REPO, "dist-bench/reference/broadcast-server.js");

/** TargetKind names a server under test. */
export type TargetKind = "embedded" | "production" | "url" | "reference";

/** Endpoints are where each kind of call goes. */
export interface Endpoints {
  readonly auth: string;
  readonly group: string;
  readonly message: string;
  /** Every message process (the sender spreads its calls over them). */
  readonly messageAll: readonly string[];
  /** Stream processes; subscribers are spread over them round-robin. */
  readonly stream: readonly string[];
}

/** ServerProc is one server process. */
export interface ServerProc {
  readonly name: string;
  readonly services: string;
  readonly url: string;
  readonly pid: number;
  readonly managed: Managed;
}

/** Target is a running server under test. */
export interface Target {
  readonly kind: TargetKind;
  readonly endpoints: Endpoints;
  /** Processes whose CPU and memory are the server's (empty for a URL target unless --server-pid). */
  readonly processes: readonly ServerProc[];
  /** Extra pids measured as server (e.g. --server-pid for a url target). */
  readonly extraPids: readonly number[];
  /** Backend processes (production: Cassandra, NATS, Redis; shared with other users of the machine), measured separately. */
  readonly backends: readonly { name: string; pid: number }[];
  /** Settings the server was started with (for the report). */
  readonly settings: Record<string, string>;
  /** The processes serve the product's /metrics (read at phase boundaries); false for the reference. */
  readonly hasMetrics: boolean;
  /** restart stops every server process and starts it again on the same data (history mode's cold reads). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** TargetOptions are the flags that shape the server. */
export interface TargetOptions {
  kind: TargetKind;
  url?: string;
  serverPids?: number[];
  /** Extra environment for every server process (--server-env KEY=VALUE). */
  serverEnv: Record<string, string>;
  /** node flags for every server process (e.g. --cpu-prof). */
  serverNodeArgs: string[];
  maxGroupMembers: number;
  streamProcs: number;
  messageProcs: number;
  /** Production backends. */
  cassandraUrl: string;
  natsUrl: string;
  /** 3: a private 3-node NATS cluster for the run (TIMELINE_REPLICAS=3); 1: natsUrl. */
  natsReplicas?: number;
  redisUrl: string;
  /** Keep the data directory / keyspace after the run. */
  keep: boolean;
  /** Where server logs go (one file per process). */
  logDir?: string;
  /** Listen addresses for stream processes (production): 127.0.0.x, round-robin. */
  streamHosts: string[];
}

/** BENCH_SERVER_ENV are the settings the bench gives every server it starts: limits that would throttle the bench itself. */
export const BENCH_SERVER_ENV: Record<string, string> = {
  REGISTRATIONS_PER_MINUTE_PER_ADDRESS: "1000000",
  LOGIN_ATTEMPTS_PER_MINUTE: "1000000",
  LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS: "1000000",
  SENDS_PER_SECOND: "1000000",
  SEND_BURST: "1000000",
  ACCESS_TOKEN_TTL: "12h",
  SHUTDOWN_GRACE: "2s",
  LOG_LEVEL: "info",
  // --streams-per-connection goes up to 1000 (many users' streams on one bench connection); a real client needs few.
  MAX_STREAMS_PER_CONNECTION: "1000",
};

const LISTENING = "chat server listening";

async function startServerProc(
  name: string,
  services: string | undefined,
  env: Record<string, string>,
  opts: TargetOptions,
  program: { script: string; listening: string } = { script: MAIN, listening: LISTENING },
): Promise<ServerProc> {
  let port = 0;
  let failed = "";
  // Both programs run compiled (buildServer, buildReference): the chat server as in production, the reference alike.
  const run = [program.script === MAIN ? BUILT_MAIN : program.script];
  const managed = await spawnGuarded(name, [...opts.serverNodeArgs, ...run, ...(services ? [`--services=${services}`] : [])], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    ...(opts.logDir ? { logFile: join(opts.logDir, `${name}.log`) } : {}),
    onLine: (line) => {
      if (port === 0 && line.includes(program.listening)) {
        try {
          port = Number((JSON.parse(line) as { port?: number }).port ?? 0);
        } catch {
          failed = `cannot read the port from: ${line}`;
        }
      }
    },
  });
  const deadline = Date.now() + 120_000;
  while (port === 0 && failed === "") {
    if (managed.child.exitCode !== null) throw new Error(`${name} exited:\n${managed.tail()}`);
    if (Date.now() > deadline) throw new Error(`${name} did not start within 120 s:\n${managed.tail()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  if (failed) throw new Error(`${name}: ${failed}`);
  const host = env.HOST ?? "127.0.0.1";
  return { name, services: services ?? "all", url: `http://${host}:${port}`, pid: managed.pid, managed };
}

/**
 * referenceTarget starts the bare broadcast server: no users, no storage, so
 * setup invents the ids (setup.ts inventPopulation) and --server-env does not apply.
 */
async function referenceTarget(opts: TargetOptions): Promise<Target> {
  buildReference();
  const started = await startServerProc("reference", undefined, { HOST: "127.0.0.1" }, opts, {
    script: BUILT_REFERENCE,
    listening: "reference server listening",
  });
  const proc: ServerProc = { ...started, services: "broadcast" };
  let stopped = false;
  return {
    kind: "reference",
    endpoints: { auth: proc.url, group: proc.url, message: proc.url, messageAll: [proc.url], stream: [proc.url] },
    processes: [proc],
    extraPids: [],
    backends: [],
    settings: { program: "bench/reference/broadcast-server.ts" },
    hasMetrics: false,
    restart: () => Promise.reject(new Error("the reference server keeps nothing to restart on")),
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopChild(proc.managed.child, 5000);
    },
  };
}

/** startTarget starts (or attaches to) the server under test. */
export async function startTarget(opts: TargetOptions): Promise<Target> {
  if (opts.kind === "url") return urlTarget(opts);
  if (opts.kind === "reference") return referenceTarget(opts);
  buildServer();
  if (opts.kind === "embedded") return embeddedTarget(opts);
  return productionTarget(opts);
}

/** buildServer compiles the server to dist/ (scripts/build-server.mjs, a fraction of a second) before it is started. */
function buildServer(): void {
  execFileSync(process.execPath, [join(REPO, "scripts/build-server.mjs")], { cwd: REPO, stdio: "inherit" });
}

/**
 * buildReference compiles the reference server to dist-bench/ with the chat server's options (NODE_BUILD; `ws` still
 * comes from node_modules), so that a comparison runs both compiled. Under tsx the reference paid keepNames' wrappers
 * and ours did not.
 */
function buildReference(): void {
  buildSync({ entryPoints: [REFERENCE], outfile: BUILT_REFERENCE, ...NODE_BUILD });
}

function urlTarget(opts: TargetOptions): Target {
  if (!opts.url) throw new Error("--target url needs --url http://host:port");
  const url = opts.url.replace(/\/+$/, "");
  return {
    kind: "url",
    endpoints: { auth: url, group: url, message: url, messageAll: [url], stream: [url] },
    processes: [],
    extraPids: opts.serverPids ?? [],
    backends: [],
    settings: { url },
    hasMetrics: true,
    restart: () => Promise.reject(new Error("cannot restart a --target url server")),
    stop: async () => {},
  };
}

async function embeddedTarget(opts: TargetOptions): Promise<Target> {
  const dataDir = await mkdtemp(join(tmpdir(), "chat-bench-"));
  const env: Record<string, string> = {
    ...BENCH_SERVER_ENV,
    HOST: "127.0.0.1",
    PORT: "0",
    DATA_DIR: dataDir,
    STORE_URL: `sqlite:${join(dataDir, "chat.db")}`,
    MAX_GROUP_MEMBERS: String(Math.max(1000, opts.maxGroupMembers)),
    ...opts.serverEnv,
  };
  let proc = await startServerProc("server", undefined, env, opts);
  let stopped = false;
  const target: Target = {
    kind: "embedded",
    get endpoints() {
      return { auth: proc.url, group: proc.url, message: proc.url, messageAll: [proc.url], stream: [proc.url] };
    },
    get processes() {
      return [proc];
    },
    extraPids: [],
    backends: [],
    settings: { ...env, DATA_DIR: "<tmp>", STORE_URL: "sqlite:<tmp>/chat.db" },
    hasMetrics: true,
    async restart() {
      await stopChild(proc.managed.child, 15_000);
      // Same data directory and port, so clients' URLs stay valid.
      const port = new URL(proc.url).port;
      proc = await startServerProc("server", undefined, { ...env, PORT: port }, opts);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopChild(proc.managed.child, 15_000);
      if (!opts.keep) await rm(dataDir, { recursive: true, force: true });
      else process.stderr.write(`bench: kept the data directory ${dataDir}\n`);
    },
  };
  return target;
}

async function productionTarget(opts: TargetOptions): Promise<Target> {
  const id = randomBytes(4).toString("hex");
  const namespace = `bench${id}`;
  const base = new URL(opts.cassandraUrl.replace(/^cassandra:/, "http:"));
  const keyspaceBase = base.pathname.replace(/^\//, "") || "bench";
  const keyspace = `${keyspaceBase.slice(0, 30)}_${id}`;
  const storeUrl = `cassandra://${base.host}/${keyspace}${base.search}`;
  const dataDir = await mkdtemp(join(tmpdir(), "chat-bench-prod-"));
  // Production's shape: the timeline stream on 3 replicas of a 3-node NATS cluster (on this machine's cores too).
  const natsCluster = (opts.natsReplicas ?? 1) >= 3 ? await PrivateNatsCluster.start() : undefined;
  const natsUrl = natsCluster?.urls ?? opts.natsUrl;
  const common: Record<string, string> = {
    ...BENCH_SERVER_ENV,
    HOST: "127.0.0.1",
    PORT: "0",
    DATA_DIR: dataDir,
    STORE_URL: storeUrl,
    MIGRATE: "true",
    BUS_URL: natsUrl,
    TIMELINE_REPLICAS: natsCluster ? "3" : "1",
    CACHE_URL: opts.redisUrl,
    NAMESPACE: namespace,
    MAX_GROUP_MEMBERS: String(Math.max(1000, opts.maxGroupMembers)),
    ...opts.serverEnv,
  };
  const procs: ServerProc[] = [];
  const layout: { name: string; services: string; host?: string }[] = [];
  const start = async (name: string, services: string, env: Record<string, string>) => {
    const p = await startServerProc(name, services, env, opts);
    procs.push(p);
    return p;
  };
  let stopped = false;
  const cleanup = async () => {
    await Promise.all(procs.map((p) => stopChild(p.managed.child, 15_000)));
    if (opts.keep) {
      process.stderr.write(`bench: kept keyspace ${keyspace}, namespace ${namespace}, data ${dataDir}\n`);
      return;
    }
    await dropProductionState({ cassandraUrl: opts.cassandraUrl, keyspace, natsUrl, redisUrl: opts.redisUrl, namespace }).catch((e: unknown) =>
      process.stderr.write(`bench: cleanup of keyspace ${keyspace} / namespace ${namespace} failed: ${String(e)}\n`),
    );
    await natsCluster?.dispose();
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    // Auth first: it migrates the keyspace and serves the JWKS the others verify tokens with.
    const auth = await start("auth", "auth", common);
    const withJwks = { ...common, AUTH_JWKS_URL: `${auth.url}/.well-known/jwks.json` };
    layout.push({ name: "group", services: "group" });
    for (let i = 1; i <= opts.messageProcs; i++) layout.push({ name: `message-${i}`, services: "message" });
    for (let i = 1; i <= opts.streamProcs; i++) {
      const host = opts.streamHosts[(i - 1) % opts.streamHosts.length] ?? "127.0.0.1";
      layout.push({ name: `stream-${i}`, services: "stream", host });
    }
    await Promise.all(layout.map((l) => start(l.name, l.services, l.host ? { ...withJwks, HOST: l.host } : withJwks)));
  } catch (e) {
    await cleanup();
    throw e;
  }
  const byName = (n: string) => procs.find((p) => p.name === n);
  const messageUrls = procs.filter((p) => p.services === "message").map((p) => p.url);
  return {
    kind: "production",
    endpoints: {
      auth: byName("auth")?.url ?? "",
      group: byName("group")?.url ?? "",
      message: messageUrls[0] ?? "",
      messageAll: messageUrls,
      stream: procs.filter((p) => p.services === "stream").map((p) => p.url),
    },
    processes: procs,
    extraPids: [],
    backends: [
      ...findBackends(natsCluster ? { ...opts, natsUrl: "" } : opts),
      ...(natsCluster ? [0, 1, 2].flatMap((i) => {
        const pid = natsCluster.pid(i);
        return pid === undefined ? [] : [{ name: `nats-${i + 1}`, pid }];
      }) : []),
    ],
    settings: { ...common, DATA_DIR: "<tmp>", layout: procs.map((p) => `${p.name}(${p.services})`).join(" ") },
    hasMetrics: true,
    restart: () => Promise.reject(new Error("restart of the production topology is not implemented; cold reads use deep pages")),
    async stop() {
      if (stopped) return;
      stopped = true;
      await cleanup();
    },
  };
}

/** dropProductionState deletes what a production run created: the keyspace, the JetStream stream and the Redis keys of its namespace. */
async function dropProductionState(o: { cassandraUrl: string; keyspace: string; natsUrl: string; redisUrl: string; namespace: string }): Promise<void> {
  const errors: string[] = [];
  try {
    const { default: cassandra } = await import("cassandra-driver");
    const u = new URL(o.cassandraUrl.replace(/^cassandra:/, "http:"));
    const dc = u.searchParams.get("dc") ?? "datacenter1";
    const client = new cassandra.Client({
      contactPoints: u.hostname.split(","),
      protocolOptions: { port: Number(u.port || 9042) },
      localDataCenter: dc,
    });
    await client.connect();
    try {
      await client.execute(`DROP KEYSPACE IF EXISTS ${o.keyspace}`);
    } finally {
      await client.shutdown();
    }
  } catch (e) {
    errors.push(`cassandra: ${String(e)}`);
  }
  try {
    const { connect } = await import("@nats-io/transport-node");
    const { jetstreamManager } = await import("@nats-io/jetstream");
    const nc = await connect({ servers: o.natsUrl.replace(/^nats:\/\//, "").split(","), timeout: 5000 });
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(`${o.namespace.toUpperCase()}_TIMELINE`).catch(() => false);
    } finally {
      await nc.close();
    }
  } catch (e) {
    errors.push(`nats: ${String(e)}`);
  }
  try {
    const { Redis } = await import("ioredis");
    const redis = new Redis(o.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2 });
    await redis.connect();
    try {
      let cursor = "0";
      for (let i = 0; i < 100_000; i++) {
        const [next, keys] = await redis.scan(cursor, "MATCH", `${o.namespace}:*`, "COUNT", 1000);
        if (keys.length > 0) await redis.del(...keys);
        cursor = next;
        if (cursor === "0") break;
      }
    } finally {
      redis.disconnect();
    }
  } catch (e) {
    errors.push(`redis: ${String(e)}`);
  }
  if (errors.length > 0) throw new Error(errors.join("; "));
}

/** findBackends finds the pids of the production backends by their listening ports (those on this machine). */
function findBackends(opts: TargetOptions): { name: string; pid: number }[] {
  const out: { name: string; pid: number }[] = [];
  const portOf = (url: string, fallback: number) => {
    try {
      const u = new URL(url.replace(/^[a-z]+:/, "http:"));
      if (u.hostname !== "127.0.0.1" && u.hostname !== "localhost") return undefined;
      return Number(u.port || fallback);
    } catch {
      return undefined;
    }
  };
  for (const [name, url, port] of [
    ["cassandra", opts.cassandraUrl, 9042],
    ["nats", opts.natsUrl, 4222],
    ["redis", opts.redisUrl, 6379],
  ] as const) {
    const p = portOf(url, port);
    const pid = p === undefined ? undefined : pidListeningOn(p);
    if (pid !== undefined) out.push({ name, pid });
  }
  return out;
}
