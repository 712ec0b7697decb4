/**
 * Processes, not threads: one auth, one group, two message and two stream
 * processes, each `services/main.ts --services=…`, sharing a private
 * nats-server (JetStream), a private redis-server and one store: Cassandra
 * (a fresh keyspace, migrated by the processes themselves) when CASSANDRA_URL
 * is set, else a shared SQLite file in WAL mode. The processes share nothing
 * else. Needs NATS_URL (the integration run) and the nats-server and
 * redis-server binaries.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type TestKeyspace, openTestKeyspace } from "../../services/adapters/cassandra/test-keyspace.js";
import { PrivateNatsServer } from "../../services/adapters/nats/private-nats-server.js";
import { PrivateRedis } from "../../services/adapters/redis/redis-test-helpers.js";
import { freePort, range, sendMany } from "../support/helpers.js";
import { type StreamReader, seqs, subscribe, wsSubscribe } from "../support/stream-reader.js";
import { type Clients, clientsFor } from "../support/test-server.js";

const MAIN = join(import.meta.dirname, "../../services/main.ts");

interface Proc {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  child: ChildProcess;
  output: string;
}

describe("cluster of processes", { skip: !process.env.NATS_URL }, () => {
  let nats: PrivateNatsServer;
  let redis: PrivateRedis;
  let dataDir: string;
  let keyspace: TestKeyspace | undefined;
  const procs = new Map<string, Proc>();
  let env: Record<string, string>;

  async function startProc(name: string, services: string, port?: number): Promise<Proc> {
    const p = port ?? (await freePort());
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, `--services=${services}`], {
      env: { ...env, PORT: String(p), PATH: process.env.PATH ?? "" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const proc: Proc = { name, port: p, url: `http://127.0.0.1:${p}`, child, output: "" };
    child.stdout?.on("data", (d: Buffer) => {
      proc.output += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      proc.output += d.toString();
    });
    procs.set(name, proc);
    for (let i = 0; i < 400 && !proc.output.includes("chat server listening"); i++) {
      if (child.exitCode !== null) throw new Error(`${name} exited:\n${proc.output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!proc.output.includes("chat server listening")) throw new Error(`${name} did not start:\n${proc.output}`);
    return proc;
  }

  function stopProc(name: string, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const proc = procs.get(name);
    if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      proc.child.once("exit", () => resolve());
      proc.child.kill(signal);
    });
  }

  /** user returns clients of one user wired as a gateway would route: auth, groups and messages, streams. */
  function user(c: Clients, routes: { auth: Proc; api: Proc; stream: Proc }): Clients {
    const auth = clientsFor(routes.auth.url, "grpc");
    const api = clientsFor(routes.api.url, "grpc");
    const streams = clientsFor(routes.stream.url, "grpc");
    const out: Clients = { ...c, auth: auth.auth, groups: api.groups, messages: api.messages, streams: streams.streams };
    for (const x of [auth, api, streams]) {
      Object.defineProperty(x, "token", { get: () => out.token });
    }
    return out;
  }

  async function register(name: string, routes: { auth: Proc; api: Proc; stream: Proc }): Promise<Clients> {
    const c = clientsFor(routes.auth.url, "grpc");
    const res = await c.auth.register({ username: `${name}${process.pid % 10000}`, password: "correct horse battery" });
    const clients = user(c, routes);
    clients.token = res.tokens?.accessToken;
    clients.userId = res.user?.userId ?? "";
    clients.username = res.user?.username ?? "";
    return clients;
  }

  before(async () => {
    nats = await PrivateNatsServer.create();
    await nats.start();
    redis = await PrivateRedis.start();
    dataDir = await mkdtemp(join(tmpdir(), "chat-cluster-"));
    const authPort = await freePort();
    let storeUrl = `sqlite:${join(dataDir, "chat.db")}`;
    if (process.env.CASSANDRA_URL) {
      // A fresh, empty keyspace; the processes create the tables (MIGRATE, concurrently).
      keyspace = await openTestKeyspace(process.env.CASSANDRA_URL, { migrate: false });
      const u = new URL(process.env.CASSANDRA_URL);
      storeUrl = `cassandra://${u.host}/${keyspace.keyspace}${u.search}`;
    }
    env = {
      DATA_DIR: dataDir,
      STORE_URL: storeUrl,
      MIGRATE: "true",
      BUS_URL: nats.url,
      CACHE_URL: redis.url,
      NAMESPACE: "cluster",
      LOG_LEVEL: "info",
      HEARTBEAT_INTERVAL: "1s",
      SHUTDOWN_GRACE: "2s",
      REGISTRATIONS_PER_MINUTE_PER_ADDRESS: "1000",
      SEND_BURST: "100000",
      AUTH_JWKS_URL: `http://127.0.0.1:${authPort}/.well-known/jwks.json`,
    };
    await startProc("auth", "auth", authPort);
    await Promise.all([
      startProc("group", "group"),
      startProc("message-1", "message"),
      startProc("message-2", "message"),
      startProc("stream-1", "stream"),
      startProc("stream-2", "stream"),
    ]);
  });

  after(async () => {
    await Promise.all([...procs.keys()].map((n) => stopProc(n, "SIGKILL")));
    await nats?.dispose();
    await redis?.close();
    await keyspace?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("delivers across stream instances, survives SIGKILL of a stream instance, a message instance, and a NATS restart", async () => {
    const p = (n: string) => {
      const proc = procs.get(n);
      assert.ok(proc, n);
      return proc;
    };
    // alice talks to message-1 and stream-1; bob to message-2 and stream-2.
    const alice = await register("ca", { auth: p("auth"), api: p("group"), stream: p("stream-1") });
    const bob = await register("cb", { auth: p("auth"), api: p("group"), stream: p("stream-2") });
    const { group } = await alice.groups.createGroup({ name: "cluster", memberUsernames: [bob.username] });
    assert.ok(group);
    const gid = group.groupId;
    const aliceSend = user(alice, { auth: p("auth"), api: p("message-1"), stream: p("stream-1") });
    const bobSend = user(bob, { auth: p("auth"), api: p("message-2"), stream: p("stream-2") });

    const sa = subscribe(alice);
    const sb = subscribe(bob);
    await Promise.all([sa.waitReady(), sb.waitReady()]);
    // Presence: each stream instance reports its users to Redis; the group instance answers for both.
    let online: string[] = [];
    for (let i = 0; i < 100 && online.length < 2; i++) {
      online = (await alice.groups.listMembers({ groupId: gid })).onlineUserIds;
      if (online.length < 2) await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(online.slice().sort(), [alice.userId, bob.userId].sort(), "both members online, from two stream instances");
    // Bob's second device holds Subscribe over WebSocket on the other stream instance,
    // his third one over WebSocket on the instance that will be killed.
    const sw = wsSubscribe(p("stream-1").port, bob.token);
    const swKilled = wsSubscribe(p("stream-2").port, bob.token);
    await Promise.all([sw.waitReady(), swKilled.waitReady()]);
    await Promise.all([sendMany(aliceSend, gid, 30, { prefix: "a" }), sendMany(bobSend, gid, 30, { prefix: "b" })]);
    const head = Number(group.headSeq);
    for (const s of [sa, sb, sw, swKilled]) {
      await s.waitForEvents(gid, 60, 15_000);
      assert.deepEqual(seqs(s.eventsOf(gid)), range(head + 1, head + 60), "in order, across instances");
    }

    // SIGKILL stream-2 mid-traffic: bob reconnects to stream-1 with his cursor.
    const traffic = sendMany(aliceSend, gid, 100, { prefix: "during-kill", concurrency: 4 });
    await new Promise((r) => setTimeout(r, 30));
    await stopProc("stream-2", "SIGKILL");
    await Promise.all([sb.waitDone(5000), swKilled.waitDone(5000)]);
    const bobCursor = sb.eventsOf(gid).at(-1)?.seq ?? 0n;
    const bobMoved = user(bob, { auth: p("auth"), api: p("message-2"), stream: p("stream-1") });
    const sb2 = subscribe(bobMoved, [{ groupId: gid, seq: bobCursor }]);
    // The WebSocket resumes on the surviving instance from its own cursor.
    const wsCursor = swKilled.eventsOf(gid).at(-1)?.seq ?? 0n;
    const swMoved = wsSubscribe(p("stream-1").port, bob.token, [{ groupId: gid, seq: wsCursor }]);
    await traffic;
    const total = 160;
    await sb2.waitForEvents(gid, head + total - Number(bobCursor), 15_000);
    assert.deepEqual([...seqs(sb.eventsOf(gid)), ...seqs(sb2.eventsOf(gid))], range(head + 1, head + total), "nothing lost, nothing twice");
    await swMoved.waitForEvents(gid, head + total - Number(wsCursor), 15_000);
    assert.deepEqual(
      [...seqs(swKilled.eventsOf(gid)), ...seqs(swMoved.eventsOf(gid))],
      range(head + 1, head + total),
      "WebSocket across the death of its own instance: nothing lost, nothing twice",
    );

    // SIGKILL message-2 while bob sends: every acknowledged message is stored.
    const acked: string[] = [];
    const sending = (async () => {
      for (let i = 0; i < 200; i++) {
        try {
          const r = await bobSend.messages.sendMessage({ groupId: gid, text: `k${i}`, clientMessageId: `kill-${i}` });
          acked.push(r.message?.clientMessageId ?? "");
        } catch {
          return; // the instance is gone: a client would retry elsewhere with the same ids
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 50));
    await stopProc("message-2", "SIGKILL");
    await sending;
    assert.ok(acked.length > 0);
    const stored = new Set<string>();
    for (let before: bigint | undefined; ; ) {
      const page = await aliceSend.messages.listMessages({ groupId: gid, limit: 200, ...(before ? { anchor: { case: "beforeSeq", value: before } } : {}) });
      for (const m of page.messages) stored.add(m.clientMessageId);
      if (!page.hasMore || page.messages.length === 0) break;
      before = page.messages[0]?.seq;
    }
    for (const id of acked) assert.ok(stored.has(id), `acknowledged ${id} is stored`);

    // Restart nats-server: acknowledged messages are neither lost nor doubled on the open streams.
    const beforeRestart = await sendMany(aliceSend, gid, 5, { prefix: "pre-nats" });
    await nats.kill("SIGKILL");
    await nats.start();
    const afterRestart: string[] = [];
    for (let i = 0; i < 20; i++) {
      try {
        const r = await aliceSend.messages.sendMessage({ groupId: gid, text: `n${i}`, clientMessageId: `post-nats-${i}` });
        afterRestart.push(r.message?.clientMessageId ?? "");
      } catch {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    assert.ok(afterRestart.length > 0, "sends work again after NATS is back");
    const headNow = Number((await alice.groups.getGroup({ groupId: gid })).group?.headSeq ?? 0);
    for (const [name, s] of [["alice's stream", sa], ["bob's WebSocket", sw]] as const) {
      await s.waitFor((r: StreamReader) => r.eventsOf(gid).some((e) => Number(e.seq) === headNow), 20_000, `${name} to catch up`);
      assert.deepEqual(seqs(s.eventsOf(gid)), range(head + 1, headNow), `${name}: dense, no duplicate, across everything`);
    }
    await swMoved.waitFor((r: StreamReader) => r.eventsOf(gid).some((e) => Number(e.seq) === headNow), 20_000, "the resumed WebSocket to catch up");
    assert.deepEqual(
      [...seqs(swKilled.eventsOf(gid)), ...seqs(swMoved.eventsOf(gid))],
      range(head + 1, headNow),
      "the resumed WebSocket: dense, no duplicate, across everything",
    );
    assert.ok(beforeRestart.length === 5);
    sa.close();
    sb2.close();
    sw.close();
    swMoved.close();
  });
});
