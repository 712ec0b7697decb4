/**
 * ws-send-cost: what a send costs the server, and how long it takes, by the
 * way a client sends it: unary SendMessage over gRPC (HTTP/2), unary over
 * Connect (HTTP/1.1, binary and JSON, as a browser without WebSocket would),
 * and `send_message` on StreamService/Connect over WebSocket (one socket for
 * the stream and the sends, wire/ws-connect.ts).
 *
 *   node --import tsx bench/tools/ws-send-cost.ts [--n 5000] [--rate 250] [--rounds 2] [--only WebSocket]
 *     [--server-node-arg=--cpu-prof --server-node-arg=--cpu-prof-dir=/tmp/prof]
 *
 * The embedded server runs as a child process (bench/lib/servers.ts, the
 * bench's settings: no rate limits). One sender in one group of three. In
 * every phase the sender holds one live stream (a WebSocket Subscribe beside
 * the unary calls, as a browser does today, or the Connect socket itself),
 * opened before the phase and closed after it, and another member holds a
 * WebSocket Subscribe, so each send is also two deliveries, the same in
 * every phase. Each phase sends `n` messages of 100 bytes at `rate`/s, one
 * at a time: a send due while the one before it is unanswered waits for it,
 * as one user's sends do on a Connect stream (served in order). So every way
 * commits each send on its own, and the CPU per send does not depend on how
 * many sends a slow moment lets the store batch together. It then waits for
 * the other member to receive every message and reads the server's CPU from
 * /proc (utime + stime) before and after; the bench's own CPU
 * (process.cpuUsage, the receiving streams included) says when the client,
 * not the server, may be what limits the latency. Latency is the send's,
 * from the call to its answer, in ms. The phases run `rounds` times,
 * interleaved, after a warm-up of 500 sends per way, so drift on a busy
 * machine spreads over all of them.
 */
import { parseArgs } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import WebSocket from "ws";
import { AuthService } from "../../gen/chat/v1/auth_service_pb.js";
import { GroupService } from "../../gen/chat/v1/group_service_pb.js";
import { MessageService } from "../../gen/chat/v1/message_service_pb.js";
import { ConnectRequestSchema, ConnectResponseSchema, SubscribeRequestSchema, SubscribeResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { installCleanup } from "../lib/children.js";
import { sampleTree } from "../lib/procstat.js";
import { startTarget } from "../lib/servers.js";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "5000" },
    rate: { type: "string", default: "250" },
    rounds: { type: "string", default: "2" },
    /** only: run only the ways whose name contains this (e.g. "WebSocket"). */
    only: { type: "string" },
    /** server-node-arg: a node flag for the server (repeatable), e.g. --cpu-prof. */
    "server-node-arg": { type: "string", multiple: true, default: [] },
  },
});
const N = Number(values.n);
const RATE = Number(values.rate);
const ROUNDS = Number(values.rounds);
const WARMUP = 500;
const TEXT = "x".repeat(100);

installCleanup();
const target = await startTarget({
  kind: "embedded",
  serverEnv: {},
  serverNodeArgs: values["server-node-arg"] ?? [],
  maxGroupMembers: 1000,
  streamProcs: 1,
  messageProcs: 1,
  cassandraUrl: "",
  natsUrl: "",
  redisUrl: "",
  keep: false,
  streamHosts: [],
});
const server = target.processes[0];
if (!server) throw new Error("no server process");
const baseUrl = server.url;
const port = Number(new URL(baseUrl).port);

/** A user with a token, and clients over each unary transport. */
interface User {
  readonly username: string;
  readonly token: string;
}
const bearer = (token: string): Interceptor[] => [
  (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  },
];
async function register(prefix: string): Promise<User> {
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl }));
  const username = `${prefix}${Date.now() % 100_000_000}`;
  const r = await auth.register({ username, password: "correct horse battery staple" });
  return { username, token: r.tokens?.accessToken ?? "" };
}
const sender = await register("s");
const others = [await register("a"), await register("b")];
const groupsOf = (t: string) => createClient(GroupService, createGrpcTransport({ baseUrl, interceptors: bearer(t) }));
const { group } = await groupsOf(sender.token).createGroup({ name: "cost", memberUsernames: others.map((u) => u.username) });
const gid = group?.groupId ?? "";

/** wsSubscribe holds a WebSocket Subscribe; `count` is how many message events it has received. */
function wsSubscribe(token: string): Promise<{ ws: WebSocket; count: () => number }> {
  return new Promise((resolve, reject) => {
    let events = 0;
    const ws = new WebSocket(`ws://127.0.0.1:${port}/chat.v1.StreamService/Subscribe`, ["chat.v1.proto"], { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
    ws.on("open", () => ws.send(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, {}))));
    ws.on("message", (data) => {
      const item = fromBinary(SubscribeResponseSchema, data as Buffer);
      if (item.payload.case === "ready") resolve({ ws, count: () => events });
      else if (item.payload.case === "event" && item.payload.value.kind.case === "message") events++;
    });
    ws.on("error", reject);
  });
}
const receiver = await wsSubscribe(others[0]?.token ?? "");

/**
 * SendWay is one way of sending: `open` sets up the sender's live stream
 * (and the call's connection), `send` sends one message and resolves when
 * its answer arrives, `close` ends the stream.
 */
interface SendWay {
  readonly name: string;
  open(): Promise<{ send: (id: string) => Promise<void>; close: () => void }>;
}

/** unaryWay sends with SendMessage on `client`, beside a WebSocket Subscribe for the sender's stream. */
function unaryWay(name: string, client: Client<typeof MessageService>): SendWay {
  return {
    name,
    async open() {
      const stream = await wsSubscribe(sender.token);
      return {
        send: async (id) => {
          await client.sendMessage({ groupId: gid, text: TEXT, clientMessageId: id });
        },
        close: () => stream.ws.close(1000),
      };
    },
  };
}

/** wsConnectWay opens Connect over WebSocket (subscribe first) and sends on it; answers are matched by request_id. */
const wsConnectWay: SendWay = { name: "WebSocket Connect", open: openWsConnect };
async function openWsConnect(): Promise<{ send: (id: string) => Promise<void>; close: () => void }> {
  const waiting = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();
  const ws = new WebSocket(`ws://127.0.0.1:${port}/chat.v1.StreamService/Connect`, ["chat.v1.proto"], { headers: { authorization: `Bearer ${sender.token}` }, perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    ws.on("open", () => {
      ws.send(toBinary(ConnectRequestSchema, create(ConnectRequestSchema, { requestId: "sub", payload: { case: "subscribe", value: {} } })));
    });
    ws.on("message", (data) => {
      const r = fromBinary(ConnectResponseSchema, data as Buffer);
      if (r.payload.case === "item" && r.payload.value.payload.case === "ready") resolve();
      if (r.payload.case !== "sendResult") return;
      const w = waiting.get(r.requestId);
      waiting.delete(r.requestId);
      if (r.payload.value.outcome.case === "error") w?.reject(new Error(r.payload.value.outcome.value.message));
      else w?.resolve();
    });
    ws.on("error", reject);
    ws.on("close", (code, reason) => {
      for (const w of waiting.values()) w.reject(new Error(`closed ${code} ${reason.toString()}`));
    });
  });
  return {
    send: (id) =>
      new Promise<void>((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        ws.send(toBinary(ConnectRequestSchema, create(ConnectRequestSchema, { requestId: id, payload: { case: "sendMessage", value: { groupId: gid, text: TEXT, clientMessageId: id } } })));
      }),
    close: () => ws.close(1000),
  };
}

const allWays: SendWay[] = [
  unaryWay("unary gRPC (HTTP/2)", createClient(MessageService, createGrpcTransport({ baseUrl, interceptors: bearer(sender.token) }))),
  unaryWay(
    "unary Connect binary (HTTP/1.1)",
    createClient(MessageService, createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, interceptors: bearer(sender.token) })),
  ),
  unaryWay("unary Connect JSON (HTTP/1.1)", createClient(MessageService, createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: bearer(sender.token) }))),
  wsConnectWay,
];
const ways = allWays.filter((w) => !values.only || w.name.includes(values.only));

let sent = 0;
/** phase sends `n` messages at RATE/s, one at a time; returns the latencies (ms) and the server's CPU seconds. */
async function phase(way: SendWay, n: number): Promise<{ latencies: number[]; cpu: number; clientCpu: number; seconds: number }> {
  const opened = await way.open();
  const expected = receiver.count() + n;
  const cpu0 = sampleTree(server?.pid ?? 0).cpuSeconds;
  const client0 = process.cpuUsage();
  const t0 = performance.now();
  const latencies: number[] = [];
  for (let i = 0; i < n; i++) {
    const due = t0 + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const id = `m${sent++}`;
    const start = performance.now();
    await opened.send(id);
    latencies.push(performance.now() - start);
  }
  const deadline = Date.now() + 30_000;
  while (receiver.count() < expected) {
    if (Date.now() > deadline) throw new Error(`${way.name}: the receiver got ${receiver.count()} of ${expected} messages`);
    await new Promise((r) => setTimeout(r, 5));
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = sampleTree(server?.pid ?? 0).cpuSeconds - cpu0;
  const client = process.cpuUsage(client0);
  opened.close();
  return { latencies, cpu, clientCpu: (client.user + client.system) / 1e6, seconds };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

for (const way of ways) await phase(way, WARMUP);
const results = new Map<string, { latencies: number[]; cpu: number; clientCpu: number; n: number; seconds: number }>();
for (let round = 1; round <= ROUNDS; round++) {
  for (const way of ways) {
    const r = await phase(way, N);
    const acc = results.get(way.name) ?? { latencies: [], cpu: 0, clientCpu: 0, n: 0, seconds: 0 };
    acc.seconds += r.seconds;
    acc.latencies.push(...r.latencies);
    acc.cpu += r.cpu;
    acc.clientCpu += r.clientCpu;
    acc.n += N;
    results.set(way.name, acc);
    const sorted = [...r.latencies].sort((a, b) => a - b);
    process.stderr.write(
      `round ${round} ${way.name}: ${Math.round((r.cpu * 1e6) / N)} µs server CPU/send (client ${Math.round((r.clientCpu * 1e6) / N)}), p50 ${percentile(sorted, 50).toFixed(2)} ms, p99 ${percentile(sorted, 99).toFixed(2)} ms, ${(N / r.seconds).toFixed(0)}/s\n`,
    );
  }
}
console.log(`${N} sends x ${ROUNDS} rounds per way at ${RATE}/s, 100-byte texts, one sender, a group of 3 (2 live WebSocket streams)`);
console.log("| way | server CPU µs/send | p50 ms | p99 ms | sends/s reached | bench client CPU µs/send |");
console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
for (const [name, r] of results) {
  const sorted = r.latencies.sort((a, b) => a - b);
  const us = (seconds: number) => Math.round((seconds * 1e6) / r.n);
  console.log(`| ${name} | ${us(r.cpu)} | ${percentile(sorted, 50).toFixed(2)} | ${percentile(sorted, 99).toFixed(2)} | ${(r.n / r.seconds).toFixed(0)} | ${us(r.clientCpu)} |`);
}
receiver.ws.close();
await target.stop();
process.exit(0);
