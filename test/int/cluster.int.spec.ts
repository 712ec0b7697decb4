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
import { setTimeout as sleep } from "node:timers/promises";
import type { GroupEvent } from "../../gen/chat/v1/message_pb.js";
import { type TestKeyspace, openTestKeyspace } from "../support/test-keyspace.js";
import { PrivateNatsCluster } from "../support/private-nats-cluster.js";
import { PrivateNatsServer } from "../support/private-nats-server.js";
import { freePort, range, sendMany } from "../support/helpers.js";
import { PrivateRedis } from "../support/redis-test-helpers.js";
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

/** StoredMessage is what the store holds at one seq: the message's id and text. */
interface StoredMessage {
  readonly id: string;
  readonly text: string;
}

/** storedMessages reads a group's whole message history (at most 50 pages of 200), by seq. */
async function storedMessages(c: Clients, groupId: string): Promise<Map<number, StoredMessage>> {
  const out = new Map<number, StoredMessage>();
  let before: bigint | undefined;
  for (let page = 0; page < 50; page++) {
    const res = await c.messages.listMessages({ groupId, limit: 200, ...(before ? { anchor: { case: "beforeSeq", value: before } } : {}) });
    for (const m of res.messages) out.set(Number(m.seq), { id: m.messageId, text: m.text });
    if (!res.hasMore || res.messages.length === 0) return out;
    before = res.messages[0]?.seq;
  }
  throw new Error("more than 50 pages of history");
}

/**
 * assertStoredAtEachSeq checks that each delivered message event carries
 * the very message the store holds at its seq (id and text), not merely one
 * with that seq.
 */
function assertStoredAtEachSeq(what: string, events: readonly GroupEvent[], stored: Map<number, StoredMessage>): void {
  const delivered = events.flatMap((e) => (e.kind.case === "message" ? [{ seq: Number(e.seq), id: e.kind.value.messageId, text: e.kind.value.text }] : []));
  const expected = delivered.map((d) => ({ seq: d.seq, ...(stored.get(d.seq) ?? { id: "(not stored)", text: "" }) }));
  assert.deepEqual(delivered, expected, `${what}: each seq carries the event the store holds at it`);
}

/**
 * The suite runs on two NATS topologies: one nats-server (the timeline stream
 * R1), and a 3-node NATS cluster with the timeline stream on 3 replicas
 * (TIMELINE_REPLICAS=3, production's shape), where the NATS fault is the
 * SIGKILL of the stream leader's node mid-traffic and its restart.
 */
for (const topology of ["one nats-server", "3-node NATS cluster, R3 timeline"] as const) {
describe(`cluster of processes (${topology})`, { skip: !process.env.NATS_URL }, () => {
  const replicated = topology !== "one nats-server";
  let nats: PrivateNatsServer | undefined;
  let natsCluster: PrivateNatsCluster | undefined;
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
    let busUrl: string;
    if (replicated) {
      natsCluster = await PrivateNatsCluster.start();
      busUrl = natsCluster.urls;
    } else {
      nats = await PrivateNatsServer.create();
      await nats.start();
      busUrl = nats.url;
    }
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
      BUS_URL: busUrl,
      TIMELINE_REPLICAS: replicated ? "3" : "1",
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
    await natsCluster?.dispose();
    await redis?.close();
    await keyspace?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("delivers at each seq the very event the store holds, under two racing message processes and client retries", { timeout: 120_000 }, async () => {
    const p = (n: string) => {
      const proc = procs.get(n);
      assert.ok(proc, n);
      return proc;
    };
    const alice = await register("ra", { auth: p("auth"), api: p("group"), stream: p("stream-1") });
    const bob = await register("rb", { auth: p("auth"), api: p("group"), stream: p("stream-2") });
    const { group } = await alice.groups.createGroup({ name: "races", memberUsernames: [bob.username] });
    assert.ok(group);
    const gid = group.groupId;
    // Each user sends through both message processes: the same group sequenced from two processes at once.
    const alice1 = user(alice, { auth: p("auth"), api: p("message-1"), stream: p("stream-1") });
    const alice2 = user(alice, { auth: p("auth"), api: p("message-2"), stream: p("stream-1") });
    const bob2 = user(bob, { auth: p("auth"), api: p("message-2"), stream: p("stream-2") });
    const bob1 = user(bob, { auth: p("auth"), api: p("message-1"), stream: p("stream-2") });
    // Each worker: [sends through, retries through].
    const workers: [Clients, Clients][] = [
      [alice1, alice2],
      [alice2, alice1],
      [bob2, bob1],
      [bob1, bob2],
    ];
    const sa = subscribe(alice);
    const sb = subscribe(bob);
    await Promise.all([sa.waitReady(), sb.waitReady()]);

    // 4 workers × 30 sends; every send is retried at once through the other message process with the same
    // client message id (a client that timed out and tried elsewhere), so retries race their originals.
    const acked: string[] = [];
    await Promise.all(
      workers.map(async ([first, other], w) => {
        for (let i = 0; i < 30; i++) {
          const req = { groupId: gid, text: `w${w} #${i}`, clientMessageId: `race-${w}-${i}` };
          const original = first.messages.sendMessage(req);
          const retry = sleep(i % 3).then(() => other.messages.sendMessage(req));
          const x = await original;
          const y = await retry;
          assert.equal(x.message?.messageId, y.message?.messageId, "a retry is answered with the original");
          acked.push(x.message?.messageId ?? "");
        }
      }),
    );
    const head = Number((await alice.groups.getGroup({ groupId: gid })).group?.headSeq ?? 0);
    assert.equal(head, Number(group.headSeq) + 120, "each send stored once");
    const stored = await storedMessages(alice1, gid);
    assert.equal(new Set(acked).size, 120);
    for (const id of acked) assert.ok([...stored.values()].some((m) => m.id === id), `acknowledged ${id} is stored`);
    for (const [name, s] of [["alice's stream", sa], ["bob's stream", sb]] as const) {
      await s.waitFor((r: StreamReader) => r.eventsOf(gid).some((e) => Number(e.seq) === head), 15_000, `${name} to reach the head`);
      assert.deepEqual(seqs(s.eventsOf(gid)), range(Number(group.headSeq) + 1, head), `${name}: dense, each seq once`);
      assertStoredAtEachSeq(name, s.eventsOf(gid), stored);
    }
    sa.close();
    sb.close();
  });

  it("delivers across stream instances, survives SIGKILL of a stream instance, a message instance, and a NATS restart", async (t) => {
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

    const beforeRestart = await sendMany(aliceSend, gid, 5, { prefix: "pre-nats" });
    if (nats) {
      // Restart nats-server: acknowledged messages are neither lost nor doubled on the open streams.
      // A send in flight when NATS dies: frozen first (SIGSTOP), so its publish is sent and never answered.
      nats.signal("SIGSTOP");
      const inFlight = aliceSend.messages.sendMessage({ groupId: gid, text: "in flight", clientMessageId: "in-flight-at-nats-restart" });
      await sleep(300);
      await nats.kill("SIGKILL");
      await nats.start();
      const back = Date.now();
      const inFlightAck = await inFlight;
      t.diagnostic(`the send in flight when NATS died was acknowledged ${Date.now() - back} ms after NATS was back`);
      assert.equal(inFlightAck.message?.text, "in flight");
    } else if (natsCluster) {
      // SIGKILL the timeline stream leader's node mid-traffic, bring it back: every acked send is stored once.
      const cluster = natsCluster;
      const leaderName = (await cluster.streamState(0, "CLUSTER_TIMELINE"))?.leader ?? (await cluster.streamState(1, "CLUSTER_TIMELINE"))?.leader;
      const leader = cluster.indexOf(leaderName ?? "");
      assert.ok(leader >= 0, `the timeline stream has a leader among our nodes (${leaderName})`);
      const ackedAcross: string[] = [];
      const across = (async () => {
        for (let i = 0; i < 60; i++) {
          const req = { groupId: gid, text: `leader-kill ${i}`, clientMessageId: `leader-kill-${i}` };
          // A client retries a failed send with the same client_message_id (bounded).
          for (let attempt = 0; attempt < 40; attempt++) {
            try {
              const r = await aliceSend.messages.sendMessage(req);
              ackedAcross.push(r.message?.clientMessageId ?? "");
              break;
            } catch {
              await sleep(250);
            }
          }
        }
      })();
      await sleep(200);
      const killedAt = Date.now();
      await cluster.kill(leader);
      await sleep(3000);
      await cluster.restart(leader);
      await across;
      t.diagnostic(`stream leader node ${leaderName} SIGKILLed mid-traffic and restarted after ${Date.now() - killedAt} ms; ${ackedAcross.length}/60 sends acked`);
      assert.equal(ackedAcross.length, 60, "every send was acknowledged (with retries) across the loss of a node");
      const storedIds = [...(await storedMessages(aliceSend, gid)).values()].map((m) => m.text);
      for (let i = 0; i < 60; i++) {
        assert.equal(storedIds.filter((x) => x === `leader-kill ${i}`).length, 1, `leader-kill ${i} is stored exactly once`);
      }
    }
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
    const storedAt = await storedMessages(aliceSend, gid);
    assertStoredAtEachSeq("alice's stream", sa.eventsOf(gid), storedAt);
    assertStoredAtEachSeq("bob's WebSocket", sw.eventsOf(gid), storedAt);
    assertStoredAtEachSeq("bob's streams", [...sb.eventsOf(gid), ...sb2.eventsOf(gid)], storedAt);
    assertStoredAtEachSeq("bob's resumed WebSocket", [...swKilled.eventsOf(gid), ...swMoved.eventsOf(gid)], storedAt);
    sa.close();
    sb2.close();
    sw.close();
    swMoved.close();
  });
});
}
