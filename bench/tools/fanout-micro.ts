/**
 * fanout-micro: the server's CPU per stream delivery on the fan-out path
 * alone, from a bus event to bytes written on every recipient's stream,
 * without the send path (no SendMessage, no SQLite commit, no token checks).
 *
 * This process is the server under test. A `hub` stack is the real StreamHub
 * (real AppMetrics, in-process bus, an in-memory SQLite store for setup and
 * replay) behind the real one-port listener and the real Subscribe fast path
 * (serveFastSubscribe, FrameWriter). Subscribers run in separate worker
 * processes (fanout-micro-worker.ts): one TCP connection and one Subscribe
 * stream per member, read with the bench's lean reader, every seq checked
 * (duplicates, gaps). Once every stream is live, events are published
 * straight into the bus at `--rate` events/s, round-robin over the groups
 * (`--tick-ms` apart; `--tick-ms` = 1000 × groups / rate publishes one event
 * to every group per tick). The server's CPU (process.cpuUsage, user and
 * system apart) is taken from the first publish of a phase until the
 * workers have received every delivery of it, and divided by the
 * deliveries. Idle CPU (1 s with every stream open) is reported apart.
 *
 * Other stacks, for comparison on the same harness:
 * - `raw`: the same listener, each Subscribe answered by writing the same
 *   pre-encoded frame with bare `ServerHttp2Stream.write` (no hub, no sink,
 *   no compat response): the node:http2 floor;
 * - `ws`: the hub stack with Subscribe over WebSocket (ws-subscribe.ts), each
 *   subscriber its own WebSocket read by the bench's lean WebSocket reader;
 * - `wsref`: the fan-out of the bench's reference server (bench/reference/broadcast-server.ts): each
 *   subscriber a WebSocket of the `ws` library, each delivery one `WebSocket.send` of the event's encoded
 *   bytes (the library frames it per send), read by the same lean WebSocket reader as `ws`: the
 *   figure that `ws` is compared with;
 * - `tcp`: each subscriber a bare TCP connection (it sends its token and a
 *   newline), each delivery one `net.Socket.write` of the same frame:
 *   libuv and the kernel, nothing else;
 * - `--compare DIR` adds a `base` hub stack whose delivery, rpc, wire and
 *   server code is imported from DIR (another checkout of this repository
 *   with the same layout, issue 13 or later, e.g.
 *   `git archive HEAD | tar -x -C /tmp/base` with node_modules linked).
 * With several stacks (`--stacks hub,raw`), each gets `--groups` groups of
 * its own and its own listener; the measured phases (`--phase` s each)
 * alternate between the stacks (A B B A …) in one process, so a change in
 * the machine's load hits all of them alike. The machine has 2 cores shared
 * with other work: compare stacks within one run, not runs.
 *
 * `--profile` (one stack only) takes a V8 CPU profile of the measured
 * phases (in-process inspector; it costs CPU, so the µs of a profiled run
 * are not the measurement) into bench/results/profiles/; summarize it with
 * `node bench/tools/cpuprofile-top.mjs <file>`. `--on-measure CMD` runs a
 * shell command when the measured phases start ({pid}: this process,
 * {seconds}: their planned length), e.g. `perf record -g -p {pid} -- sleep {seconds}`.
 *
 * usage: node --import tsx bench/tools/fanout-micro.ts [--stacks hub|ws|wsref|raw|tcp,...] [--compare DIR]
 *          [--groups 100] [--members 20] [--rate 2000] [--tick-ms 2] [--warmup 2] [--duration 6] [--phase 2]
 *          [--workers 2] [--streams-per-connection 1] [--text-bytes 100] [--heartbeat-ms 60000]
 *          [--profile] [--on-measure CMD] [--json]
 */
import { type ChildProcess, fork, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import type http2 from "node:http2";
import { Session } from "node:inspector/promises";
import net from "node:net";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { type WebSocket, WebSocketServer } from "ws";
import { createSqliteStore } from "../../services/adapters/sqlite/sqlite-store.js";
import type { AccessTokens } from "../../services/auth/access-tokens.js";
import { ChatError } from "../../services/core/errors.js";
import { newId } from "../../services/core/ids.js";
import type { GroupEvent, UserRef } from "../../services/core/model.js";
import { systemClock } from "../../services/core/ports.js";
import type { Principal } from "../../services/core/principal.js";
import { eventItem } from "../../services/delivery/outbound.js";
import { type RequestHandler, listenOnePort } from "../../services/server/one-port-server.js";
import { mergeHistograms } from "../lib/report.js";
import { benchText, nowUs } from "../lib/wire-lite.js";
import type { FromMicroWorker, MicroStats, MicroSub, ToMicroWorker } from "./fanout-micro-worker.js";

const { values: flags } = parseArgs({
  options: {
    stacks: { type: "string", default: "hub" },
    compare: { type: "string" },
    groups: { type: "string", default: "100" },
    members: { type: "string", default: "20" },
    rate: { type: "string", default: "2000" },
    "tick-ms": { type: "string", default: "2" },
    warmup: { type: "string", default: "2" },
    duration: { type: "string", default: "6" },
    phase: { type: "string", default: "2" },
    workers: { type: "string", default: "2" },
    "streams-per-connection": { type: "string", default: "1" },
    "text-bytes": { type: "string", default: "100" },
    "heartbeat-ms": { type: "string", default: "60000" },
    profile: { type: "boolean", default: false },
    "on-measure": { type: "string" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (flags.help) {
  process.stdout.write(`${readFileSync(import.meta.filename, "utf8").split("*/")[0]}*/\n`);
  process.exit(0);
}
const kinds = flags.stacks.split(",").filter(Boolean);
for (const k of kinds) if (!["hub", "ws", "wsref", "raw", "tcp"].includes(k)) throw new Error(`--stacks: unknown stack ${k} (hub, ws, wsref, raw, tcp)`);
const G = Number(flags.groups);
const S = Number(flags.members);
const RATE = Number(flags.rate);
const TICK_MS = Number(flags["tick-ms"]);
const WARMUP = Number(flags.warmup);
const DURATION = Number(flags.duration);
const PHASE = Math.min(Number(flags.phase), DURATION);
const WORKERS = Number(flags.workers);
const PER_CONN = Number(flags["streams-per-connection"]);
const TEXT_BYTES = Number(flags["text-bytes"]);
const HEARTBEAT_MS = Number(flags["heartbeat-ms"]);
const ROOT = resolve(import.meta.dirname, "..", "..");

const log = (s: string) => process.stderr.write(`${s}\n`);
const logger = pino({ level: "silent" });

// ------------------------------------------------------------ population

const store = createSqliteStore({ path: ":memory:", retentionMs: 86_400_000, clock: systemClock });
const principals = new Map<string, Principal>();

interface GroupInfo {
  readonly id: string;
  readonly members: UserRef[];
  readonly tokens: string[];
  seq: number;
}

/** groupsFor creates `G` groups of `S` fresh users in the store. */
async function groupsFor(tag: string): Promise<GroupInfo[]> {
  const out: GroupInfo[] = [];
  for (let g = 0; g < G; g++) {
    const members: UserRef[] = [];
    for (let m = 0; m < S; m++) {
      const user = { id: newId(), username: `${tag}${g}_${m}` };
      await store.createUser({ ...user, createdAt: Date.now(), passwordHash: "x" });
      members.push(user);
    }
    const [owner, ...rest] = members as [UserRef, ...UserRef[]];
    const created = await store.createGroup({ id: newId(), name: `${tag}${g}`, epoch: newId(), createdAt: Date.now(), owner });
    let head = created.seq;
    for (const u of rest) head = (await store.changeGroup(created.groupId, [u.id], owner, Date.now(), () => ({ type: "add", member: u, role: "member" }))).seq;
    const tokens = members.map((u) => {
      const token = `t-${u.id}`;
      principals.set(token, { userId: u.id, username: u.username, sessionId: newId(), expiresAt: Date.now() + 86_400_000 });
      return token;
    });
    out.push({ id: created.groupId, members, tokens, seq: head });
  }
  return out;
}

/**
 * nextEvent is the group's next message event. Its text starts with the
 * publish time and the phase tag (0: warm-up; stack index + 1: measured), as
 * the bench's texts do, for the workers' latency histograms. Ids are cheap
 * strings: making them is the send path's cost, not fan-out's.
 */
let eventNo = 0;
let phaseTag = 0;
function nextEvent(g: GroupInfo): GroupEvent {
  const seq = ++g.seq;
  const at = Date.now();
  const id = `m-${++eventNo}-0000-0000-0000-000000000000`;
  const sender = g.members[0] as UserRef;
  const text = benchText(nowUs(), phaseTag, TEXT_BYTES);
  return { groupId: g.id, seq, at, actor: sender, body: { type: "message", message: { id, groupId: g.id, seq, sender, text, sentAt: at, clientMessageId: id } } };
}

/** tokens stands in for AccessTokens: the token names its principal (verification is per stream, not per delivery). */
const tokens = {
  async verify(token: string): Promise<Principal> {
    const p = principals.get(token);
    if (!p) throw new ChatError("Unauthenticated", "unknown token");
    return p;
  },
} as unknown as AccessTokens;

/** readyFrame is a SubscribeResponse { ready { groups { group_id, seq } } } frame, for the raw and tcp stacks. */
function readyFrame(g: GroupInfo): Buffer {
  const id = Buffer.from(g.id, "latin1");
  const pos = Buffer.concat([Buffer.from([0x0a, id.length]), id, Buffer.from([0x10]), varint(g.seq)]);
  const ready = Buffer.concat([Buffer.from([0x0a, pos.length]), pos]);
  const msg = Buffer.concat([Buffer.from([0x0a, ready.length]), ready]);
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt32BE(msg.length, 1);
  msg.copy(frame, 5);
  return frame;
}

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
  return Buffer.from(out);
}

// ---------------------------------------------------------------- stacks

interface Stack {
  readonly name: string;
  readonly url: string;
  readonly transport: MicroSub["transport"];
  readonly groups: GroupInfo[];
  publish(g: GroupInfo): void;
  connections(): number;
  close(): Promise<void>;
}

/**
 * hubStack is the product's fan-out: StreamHub + serveFastSubscribe from the
 * checkout at `root`, or with `websocket` StreamHub + Subscribe over WebSocket.
 * What the front door does before serveFastSubscribe (the bearer check, the
 * request message read within its limits) is done here with the same
 * functions, for gRPC over HTTP/2 (what the workers speak).
 */
async function hubStack(name: string, root: string, websocket = false): Promise<Stack> {
  const load = (path: string) => import(pathToFileURL(join(root, path)).href);
  const [{ MemoryEventBus }, { AppMetrics }, { StreamHub }, { SUBSCRIBE_PATH, serveFastSubscribe }, { verifyBearer }, { BodyDeadlines, readRequestBody }] =
    await Promise.all([
      load("services/adapters/memory/memory-bus.ts"),
      load("services/server/metrics.ts"),
      load("services/delivery/stream-hub.ts"),
      load("services/wire/framed-subscribe.ts"),
      load("services/rpc/bearer.ts"),
      load("services/wire/request-body.ts"),
    ]);
  const bus = new MemoryEventBus();
  const metrics = new AppMetrics();
  const hub = new StreamHub({
    store,
    bus,
    clock: systemClock,
    metrics: metrics.hub,
    settings: { heartbeatMs: HEARTBEAT_MS, bufferMaxBytes: 1 << 20, catchUpBatch: 500 },
  });
  const fastPath = { hub, tokens, clock: systemClock, logger, maxRequestBytes: 1 << 20 };
  const deadlines = new BodyDeadlines(10_000);
  const refuse = (res: Parameters<RequestHandler>[1], status: number) => {
    res.writeHead(status);
    res.end();
  };
  const handler: RequestHandler = (req, res) => {
    if (req.method !== "POST" || req.url !== SUBSCRIBE_PATH || req.httpVersionMajor !== 2) return refuse(res, 404);
    verifyBearer(tokens, systemClock, req.headers.authorization).then(
      (principal: Principal) =>
        readRequestBody(
          req,
          res,
          { framing: "framed", maxBytes: 1 << 20, method: "Subscribe", deadlines },
          (message: Buffer) => serveFastSubscribe("grpc", req, res, fastPath, principal, message),
          () => refuse(res, 400),
        ),
      () => refuse(res, 401),
    );
  };
  const ws = websocket ? (await load("services/wire/ws-subscribe.ts")).wsSubscribeServer(fastPath) : undefined;
  const server = await listenOnePort({ host: "127.0.0.1", port: 0, handler, onWebSocket: ws?.handleUpgrade, logger });
  return {
    name,
    url: `http://127.0.0.1:${server.port}`,
    transport: websocket ? "ws" : "h2",
    groups: await groupsFor(name),
    publish: (g) => void bus.publishEvent(nextEvent(g)),
    connections: () => server.connections,
    async close() {
      hub.shutdown();
      await server.close(500);
      metrics.close();
    },
  };
}

/** rawStack writes each event's frame with bare ServerHttp2Stream.write: the node:http2 floor. */
async function rawStack(): Promise<Stack> {
  const groups = await groupsFor("raw");
  const byToken = new Map(groups.flatMap((g) => g.tokens.map((t) => [t, g] as const)));
  const streams = new Map<GroupInfo, http2.ServerHttp2Stream[]>(groups.map((g) => [g, []]));
  const handler: RequestHandler = (req, res) => {
    const stream = (res as http2.Http2ServerResponse).stream;
    const g = byToken.get((req.headers.authorization ?? "").replace(/^Bearer\s+/i, ""));
    req.resume();
    if (!g || !stream) {
      res.writeHead(401);
      res.end();
      return;
    }
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.on("error", () => {});
    stream.write(readyFrame(g));
    const list = streams.get(g) as http2.ServerHttp2Stream[];
    list.push(stream);
    stream.once("close", () => list.splice(list.indexOf(stream), 1));
  };
  const server = await listenOnePort({ host: "127.0.0.1", port: 0, handler, logger });
  return {
    name: "raw",
    url: `http://127.0.0.1:${server.port}`,
    transport: "h2",
    groups,
    publish(g) {
      const frame = eventItem(nextEvent(g)).grpcFrame;
      for (const s of streams.get(g) as http2.ServerHttp2Stream[]) s.write(frame);
    },
    connections: () => server.connections,
    close: () => server.close(500),
  };
}

/**
 * wsRefStack is the reference server's WebSocket fan-out: the `ws` library's server, each delivery one
 * `WebSocket.send` of the event's encoded SubscribeResponse (the same bytes to every connection of the group).
 */
async function wsRefStack(): Promise<Stack> {
  const groups = await groupsFor("wsref");
  const byToken = new Map(groups.flatMap((g) => g.tokens.map((t) => [t, g] as const)));
  const sockets = new Map<GroupInfo, WebSocket[]>(groups.map((g) => [g, []]));
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const server = http.createServer((_req, res) => res.writeHead(404).end());
  server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const g = byToken.get((req.headers.authorization ?? "").replace(/^Bearer\s+/i, ""));
    if (!g) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on("error", () => {});
      ws.send(readyFrame(g).subarray(5));
      const list = sockets.get(g) as WebSocket[];
      list.push(ws);
      ws.once("close", () => list.splice(list.indexOf(ws), 1));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    name: "wsref",
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    transport: "ws",
    groups,
    publish(g) {
      const bytes = eventItem(nextEvent(g)).bytes;
      for (const ws of sockets.get(g) as WebSocket[]) ws.send(bytes);
    },
    connections: () => wss.clients.size,
    async close() {
      for (const ws of wss.clients) ws.terminate();
      server.close();
    },
  };
}

/** tcpStack writes each event's frame with net.Socket.write to bare TCP connections: libuv and the kernel. */
async function tcpStack(): Promise<Stack> {
  const groups = await groupsFor("tcp");
  const byToken = new Map(groups.flatMap((g) => g.tokens.map((t) => [t, g] as const)));
  const sockets = new Map<GroupInfo, net.Socket[]>(groups.map((g) => [g, []]));
  let connections = 0;
  const server = net.createServer({ noDelay: true }, (socket) => {
    connections++;
    socket.once("close", () => connections--);
    socket.on("error", () => {});
    let seen = "";
    const onData = (chunk: Buffer) => {
      seen += chunk.toString("latin1");
      const nl = seen.indexOf("\n");
      if (nl < 0) return;
      socket.off("data", onData);
      const g = byToken.get(seen.slice(0, nl));
      if (!g) {
        socket.destroy();
        return;
      }
      socket.write(readyFrame(g));
      const list = sockets.get(g) as net.Socket[];
      list.push(socket);
      socket.once("close", () => list.splice(list.indexOf(socket), 1));
    };
    socket.on("data", onData);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    name: "tcp",
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    transport: "tcp",
    groups,
    publish(g) {
      const frame = eventItem(nextEvent(g)).grpcFrame;
      for (const s of sockets.get(g) as net.Socket[]) s.write(frame);
    },
    connections: () => connections,
    async close() {
      for (const list of sockets.values()) for (const s of list) s.destroy();
      server.close();
    },
  };
}

const setupStart = performance.now();
const stacks: Stack[] = [];
for (const k of kinds) {
  stacks.push(
    k === "hub" || k === "ws" ? await hubStack(k, ROOT, k === "ws") : k === "wsref" ? await wsRefStack() : k === "raw" ? await rawStack() : await tcpStack(),
  );
}
if (flags.compare) stacks.push(await hubStack("base", resolve(flags.compare)));
if (flags.profile && stacks.length > 1) throw new Error("--profile takes one stack");
log(`setup: ${stacks.length} stack(s) × ${G} groups × ${S} members in ${(performance.now() - setupStart).toFixed(0)} ms`);

// ---------------------------------------------------------------- workers

interface Worker {
  readonly child: ChildProcess;
  stats: MicroStats;
  readonly waiting: ((s: MicroStats) => void)[];
}

let stopping = false;
const workers: Worker[] = [];
const workerFile = join(import.meta.dirname, "fanout-micro-worker.ts");
for (let w = 0; w < WORKERS; w++) {
  const child = fork(workerFile, [], { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const worker: Worker = { child, stats: undefined as unknown as MicroStats, waiting: [] };
  child.on("message", (msg: FromMicroWorker) => {
    worker.stats = msg.stats;
    worker.waiting.shift()?.(msg.stats);
  });
  child.on("exit", (code) => {
    if (stopping) return;
    log(`worker ${w} exited (${String(code)})`);
    process.exit(1);
  });
  workers.push(worker);
}
const ask = (w: Worker, msg: ToMicroWorker) =>
  new Promise<MicroStats>((resolve) => {
    w.waiting.push(resolve);
    w.child.send(msg);
  });

const openStart = performance.now();
const allSubs: MicroSub[] = stacks.flatMap((s) => s.groups.flatMap((g) => g.tokens.map((token) => ({ token, groupId: g.id, url: s.url, transport: s.transport }))));
// Each worker gets every WORKERS-th member, so a group's members are spread over the workers, as in the bench.
await Promise.all(
  workers.map((w, i) => ask(w, { type: "open", subs: allSubs.filter((_, k) => k % WORKERS === i), streamsPerConnection: PER_CONN, concurrency: 50 })),
);
const ready = workers.reduce((a, w) => a + w.stats.ready, 0);
log(`opened ${ready}/${allSubs.length} streams (${stacks.map((s) => `${s.name}: ${s.connections()} connections`).join(", ")}) in ${(performance.now() - openStart).toFixed(0)} ms`);
if (ready !== allSubs.length) throw new Error("not every stream opened");

// ------------------------------------------------------------- publishing

/** publishFor publishes `RATE` events/s round-robin over the stack's groups for `seconds`; resolves with the count. */
function publishFor(stack: Stack, seconds: number): Promise<number> {
  const total = Math.round(RATE * seconds);
  const groups = stack.groups;
  let rr = 0;
  return new Promise((resolve) => {
    let sent = 0;
    const start = performance.now();
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * RATE));
      while (sent < due) {
        stack.publish(groups[rr++ % groups.length] as GroupInfo);
        sent++;
      }
      if (sent >= total) resolve(sent);
      else setTimeout(tick, TICK_MS);
    };
    tick();
  });
}

const totalEvents = () => workers.reduce((a, w) => a + w.stats.events, 0);
let expected = 0;

/** drain waits (≤ 15 s) until the workers have received `expected` events in all. */
async function drain(): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    await Promise.all(workers.map((w) => ask(w, { type: "stats" })));
    if (totalEvents() >= expected || Date.now() > deadline) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

function machineBusy(): { busy: number; total: number } {
  const v = (readFileSync("/proc/stat", "latin1").split("\n")[0] as string).trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: v.reduce((a, b) => a + b, 0) - idle, total: v.reduce((a, b) => a + b, 0) };
}

for (const s of stacks) {
  log(`warm-up ${s.name}: ${WARMUP} s at ${RATE} events/s (${RATE * S} deliveries/s)`);
  expected += (await publishFor(s, WARMUP)) * S;
  await drain();
}
if (totalEvents() !== expected) log(`warm-up: ${totalEvents()} of ${expected} deliveries arrived`);

// Idle: what the server burns with every stream open and nothing to deliver.
const idle0 = process.cpuUsage();
const idleT0 = performance.now();
await new Promise((r) => setTimeout(r, 1000));
const idleCpu = process.cpuUsage(idle0);
const idleUsPerS = ((idleCpu.user + idleCpu.system) / (performance.now() - idleT0)) * 1000;

let profiler: Session | undefined;
if (flags.profile) {
  profiler = new Session();
  profiler.connect();
  await profiler.post("Profiler.enable");
  await profiler.post("Profiler.setSamplingInterval", { interval: 200 });
  await profiler.post("Profiler.start");
}
const phasesPerStack = Math.max(1, Math.round(DURATION / PHASE));
let onMeasure: ChildProcess | undefined;
if (flags["on-measure"]) {
  const planned = Math.ceil(phasesPerStack * stacks.length * PHASE * 1.2);
  const cmd = flags["on-measure"].replaceAll("{pid}", String(process.pid)).replaceAll("{seconds}", String(planned));
  onMeasure = spawn("sh", ["-c", cmd], { stdio: "inherit" });
  await new Promise((r) => setTimeout(r, 500)); // let it attach
}

interface Totals {
  events: number;
  user: number;
  system: number;
  wall: number;
  busyLoop: number;
  genUs: number;
  machineBusy: number;
  machineTotal: number;
}
const totals = new Map<Stack, Totals>(stacks.map((s) => [s, { events: 0, user: 0, system: 0, wall: 0, busyLoop: 0, genUs: 0, machineBusy: 0, machineTotal: 0 }]));
const before = totalEvents();
const genCpu = (list: MicroStats[]) => list.reduce((a, s) => a + s.cpuUser + s.cpuSystem, 0);
log(`measured: ${phasesPerStack} phase(s) of ${PHASE} s per stack at ${RATE} events/s`);
for (let round = 0; round < phasesPerStack; round++) {
  const order = round % 2 === 0 ? stacks : [...stacks].reverse();
  for (const s of order) {
    const t = totals.get(s) as Totals;
    phaseTag = stacks.indexOf(s) + 1;
    const g0 = genCpu(await Promise.all(workers.map((w) => ask(w, { type: "stats" }))));
    const m0 = machineBusy();
    const t0 = performance.now();
    const elu0 = performance.eventLoopUtilization();
    const cpu0 = process.cpuUsage();
    const events = await publishFor(s, PHASE);
    expected += events * S;
    await drain();
    const cpu = process.cpuUsage(cpu0);
    const elu = performance.eventLoopUtilization(elu0);
    const wall = (performance.now() - t0) / 1000;
    const m1 = machineBusy();
    const g1 = genCpu(await Promise.all(workers.map((w) => ask(w, { type: "stats" }))));
    t.events += events;
    t.user += cpu.user;
    t.system += cpu.system;
    t.wall += wall;
    t.busyLoop += elu.utilization * wall;
    t.genUs += g1 - g0;
    t.machineBusy += m1.busy - m0.busy;
    t.machineTotal += m1.total - m0.total;
  }
}
const w1 = await Promise.all(workers.map((w) => ask(w, { type: "stats", histograms: true })));

let profileFile: string | undefined;
if (profiler) {
  const { profile } = await profiler.post("Profiler.stop");
  const dir = join(import.meta.dirname, "..", "results", "profiles");
  mkdirSync(dir, { recursive: true });
  profileFile = join(dir, `fanout-micro-${stacks[0]?.name}-${new Date().toISOString().replace(/[:.]/g, "-")}.cpuprofile`);
  writeFileSync(profileFile, JSON.stringify(profile));
  profiler.disconnect();
}

/** latencyOf merges the workers' publish→receive histograms of a phase tag (ms). */
function latencyOf(tag: number): { latencyP50Ms: number; latencyP99Ms: number; latencyMaxMs: number } {
  const h = mergeHistograms(w1.map((s) => s.histograms?.[String(tag)] ?? ""));
  const ms = (us: number) => +(us / 1000).toFixed(2);
  return { latencyP50Ms: ms(h.getValueAtPercentile(50)), latencyP99Ms: ms(h.getValueAtPercentile(99)), latencyMaxMs: ms(h.maxValue) };
}

const delivered = totalEvents() - before;
const deliveriesAll = [...totals.values()].reduce((a, t) => a + t.events * S, 0);
const rows = stacks.map((s) => {
  const t = totals.get(s) as Totals;
  const d = t.events * S;
  const cores = t.machineTotal > 0 ? (t.machineBusy / t.machineTotal) * 2 : 0;
  return {
    stack: s.name,
    streams: s.groups.length * S,
    connections: s.connections(),
    events: t.events,
    deliveries: d,
    seconds: +t.wall.toFixed(2),
    serverCpuUsPerDelivery: +((t.user + t.system) / d).toFixed(3),
    serverUserUsPerDelivery: +(t.user / d).toFixed(3),
    serverSystemUsPerDelivery: +(t.system / d).toFixed(3),
    serverCores: +((t.user + t.system) / 1e6 / t.wall).toFixed(3),
    serverEventLoopBusy: +(t.busyLoop / t.wall).toFixed(3),
    generatorCpuUsPerDelivery: +(t.genUs / d).toFixed(3),
    ...latencyOf(stacks.indexOf(s) + 1),
    machineBusyCores: +cores.toFixed(2),
    otherCores: +(cores - (t.user + t.system + t.genUs) / 1e6 / t.wall).toFixed(2),
  };
});
const result = {
  groups: G,
  members: S,
  rate: RATE,
  tickMs: TICK_MS,
  phase: PHASE,
  phasesPerStack,
  delivered,
  expected: deliveriesAll,
  duplicates: w1.reduce((a, s) => a + s.duplicates, 0),
  gaps: w1.reduce((a, s) => a + s.gaps, 0),
  ended: w1.reduce((a, s) => a + s.ended, 0),
  serverIdleUsPerSecond: Math.round(idleUsPerS),
  stacks: rows,
  profile: profileFile,
};
if (flags.json) process.stdout.write(`${JSON.stringify(result)}\n`);
else {
  const lines = [
    `${G} groups × ${S} members per stack, ${RATE} events/s (${RATE * S} deliveries/s), ${phasesPerStack} × ${PHASE} s per stack`,
    `deliveries: ${delivered} of ${deliveriesAll} received, duplicates ${result.duplicates}, gaps ${result.gaps}, streams ended ${result.ended}; server idle ${result.serverIdleUsPerSecond} µs/s`,
    "stack   µs/delivery   user  system   cores  loop busy   gen µs/d   machine  other   p50 ms  p99 ms  max ms",
    ...rows.map(
      (r) =>
        `${r.stack.padEnd(6)} ${r.serverCpuUsPerDelivery.toFixed(2).padStart(12)} ${r.serverUserUsPerDelivery.toFixed(2).padStart(6)} ${r.serverSystemUsPerDelivery.toFixed(2).padStart(7)} ${r.serverCores.toFixed(2).padStart(7)} ${`${(r.serverEventLoopBusy * 100).toFixed(0)}%`.padStart(10)} ${r.generatorCpuUsPerDelivery.toFixed(2).padStart(10)} ${r.machineBusyCores.toFixed(2).padStart(9)} ${r.otherCores.toFixed(2).padStart(6)} ${r.latencyP50Ms.toFixed(2).padStart(8)} ${r.latencyP99Ms.toFixed(2).padStart(7)} ${r.latencyMaxMs.toFixed(2).padStart(7)}`,
    ),
  ];
  if (profileFile) lines.push(`profile: ${profileFile} (profiling costs CPU: the µs above are not the measurement)`);
  process.stdout.write(`${lines.join("\n")}\n`);
}

if (onMeasure && onMeasure.exitCode === null) await new Promise((r) => onMeasure?.once("exit", r));
stopping = true;
for (const w of workers) w.child.send({ type: "close" } satisfies ToMicroWorker);
for (const s of stacks) await s.close();
await store.close();
process.exit(delivered === deliveriesAll && result.duplicates === 0 && result.gaps === 0 ? 0 : 3);
