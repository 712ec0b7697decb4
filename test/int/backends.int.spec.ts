/**
 * The app on its remote backends: on Redis (CACHE_URL=redis://) rate limits
 * are shared by every process and losing Redis degrades gracefully (nothing
 * lost, limits per process, health reports the backend); losing NATS (the
 * bus) makes the process NOT_SERVING until it is back. Needs REDIS_URL /
 * NATS_URL.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { pino } from "pino";
import { HealthCheckResponse_ServingStatus, Health } from "../../gen/grpc/health/v1/health_pb.js";
import { PrivateNatsServer } from "../support/private-nats-server.js";
import { rejectsWith } from "../support/assertions.js";
import { historySnapshot, sendMany } from "../support/helpers.js";
import { scrape } from "../support/metrics-scrape.js";
import { PrivateRedis, connectRedis, deleteKeysByPrefix, uniquePrefix } from "../support/redis-test-helpers.js";
import { type TestServer, clientsFor, registerUser, startTestServer, transportFor, uniqueName } from "../support/test-server.js";

const REDIS_URL = process.env.REDIS_URL;

describe("topology on Redis", { skip: !REDIS_URL }, () => {
  const namespace = uniquePrefix("it").replace(/[^A-Za-z0-9_-]/g, "").slice(0, 32);
  let a: TestServer;
  let b: TestServer;
  before(async () => {
    const env = { CACHE_URL: REDIS_URL ?? "", NAMESPACE: namespace, LOGIN_ATTEMPTS_PER_MINUTE: "3" };
    a = await startTestServer(env);
    b = await startTestServer(env);
  });
  after(async () => {
    await a.stop();
    await b.stop();
    const client = await connectRedis(REDIS_URL ?? "");
    await deleteKeysByPrefix(client, `${namespace}:`);
    client.disconnect();
  });

  it("shares login limits between processes", async () => {
    const name = uniqueName("shared");
    await clientsFor(a.baseUrl).auth.register({ username: name, password: "correct horse battery" });
    const wrong = { username: name, password: "wrong password!" };
    await rejectsWith(clientsFor(a.baseUrl).auth.login(wrong), Code.Unauthenticated);
    await rejectsWith(clientsFor(b.baseUrl).auth.login(wrong), Code.Unauthenticated);
    await rejectsWith(clientsFor(a.baseUrl).auth.login(wrong), Code.Unauthenticated);
    // The fourth attempt is refused on the *other* process too: one budget in Redis.
    await rejectsWith(clientsFor(b.baseUrl).auth.login(wrong), Code.ResourceExhausted, /too many login attempts for this username/);
  });

  it("answers history with the store's pages from Redis, and from the store once Redis lost its keys", async () => {
    const alice = await registerUser(a.baseUrl, "grpc", "hist");
    const { group } = await alice.groups.createGroup({ name: "history" });
    assert.ok(group);
    const gid = group.groupId;
    await sendMany(alice, gid, 8, { concurrency: 1, prefix: "first" });
    await alice.groups.updateGroup({ groupId: gid, name: "history 2" });
    await sendMany(alice, gid, 4, { concurrency: 1, prefix: "second" });
    const client = await connectRedis(REDIS_URL ?? "");
    try {
      for (const more of [0, 3]) {
        await sendMany(alice, gid, more, { concurrency: 1, prefix: `more${more}` });
        const head = 14 + more;
        assert.ok((await client.keys(`${namespace}:rm:*`)).length >= 2, "the group's window and messages are in Redis");
        const before = (await scrape(a)).get("chat_history_pages_total", { source: "cache" });
        const warm = await historySnapshot(alice, gid, head);
        assert.ok((await scrape(a)).get("chat_history_pages_total", { source: "cache" }) > before, "Redis answered pages");
        await deleteKeysByPrefix(client, `${namespace}:rm:`); // as a flush or an eviction would
        const cold = await historySnapshot(alice, gid, head);
        assert.deepEqual(warm, cold);
      }
    } finally {
      client.disconnect();
    }
  });

  it("logs Redis coming up after the process started as 'reachable' (info), not as an outage that ended", async () => {
    const lines: { level: number; msg: string; backend?: string }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split("\n")) if (l.trim()) lines.push(JSON.parse(l) as (typeof lines)[number]);
        done();
      },
    });
    // A Redis that comes up 1.5 s after the process: what a slow start or a busy machine looks like.
    const redis = await PrivateRedis.start();
    await redis.stop();
    const c = await startTestServer({ CACHE_URL: redis.url, NAMESPACE: namespace }, { logger: pino({ level: "info" }, sink) });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      await redis.restart();
      await new Promise((r) => setTimeout(r, 2500)); // two health reports after Redis is up
      assert.ok(lines.some((l) => l.msg === "chat server listening"), "the logger is the server's");
      // (The Redis client's own connection errors are warned about, throttled: Redis really was down for 1.5 s.)
      assert.deepEqual(
        lines.filter((l) => l.backend === "redis").map((l) => [l.level, l.msg]),
        [[30, "backend reachable"]],
        "coming up after start is one info line, not 'reachable again'",
      );
    } finally {
      await c.stop();
      await redis.close();
    }
  });

  it("reports Redis in health as a backend of its own", async () => {
    const health = createClient(Health, transportFor(a.baseUrl, "grpc"));
    assert.equal((await health.check({ service: "backend.redis" })).status, HealthCheckResponse_ServingStatus.SERVING);
    assert.equal((await health.check({ service: "" })).status, HealthCheckResponse_ServingStatus.SERVING);
  });
});

describe("topology when Redis goes away", { skip: !REDIS_URL }, () => {
  let redis: PrivateRedis;
  let server: TestServer;
  before(async () => {
    redis = await PrivateRedis.start();
    server = await startTestServer({ CACHE_URL: redis.url, NAMESPACE: "down" });
  });
  after(async () => {
    await server.stop();
    await redis.close();
  });

  it("keeps serving from the store, says so in health, and recovers", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "rd");
    const { group } = await alice.groups.createGroup({ name: "redis-down" });
    assert.ok(group);
    await sendMany(alice, group.groupId, 3);
    const health = createClient(Health, transportFor(server.baseUrl, "grpc"));

    await redis.stop();
    const sent = await sendMany(alice, group.groupId, 5, { prefix: "during" });
    assert.equal(sent.length, 5, "sends work without Redis");
    const history = await alice.messages.listMessages({ groupId: group.groupId });
    assert.equal(history.messages.length, 8);
    await clientsFor(server.baseUrl).auth.login({ username: alice.username, password: "correct horse battery" });
    let status = HealthCheckResponse_ServingStatus.SERVING;
    for (let i = 0; i < 50 && status === HealthCheckResponse_ServingStatus.SERVING; i++) {
      status = (await health.check({ service: "backend.redis" })).status;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, HealthCheckResponse_ServingStatus.NOT_SERVING);
    assert.equal((await health.check({ service: "" })).status, HealthCheckResponse_ServingStatus.SERVING, "Redis is not critical");

    await redis.restart();
    for (let i = 0; i < 100 && status !== HealthCheckResponse_ServingStatus.SERVING; i++) {
      status = (await health.check({ service: "backend.redis" })).status;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, HealthCheckResponse_ServingStatus.SERVING);
  });
});

describe("topology when NATS goes away", { skip: !process.env.NATS_URL }, () => {
  let nats: PrivateNatsServer;
  let server: TestServer;
  before(async () => {
    nats = await PrivateNatsServer.create();
    await nats.start();
    server = await startTestServer({ BUS_URL: nats.url, NAMESPACE: "natsdown" });
  });
  after(async () => {
    await server.stop();
    await nats.dispose();
  });

  it("is NOT_SERVING while its bus is unreachable and SERVING again when it is back", async () => {
    const health = createClient(Health, transportFor(server.baseUrl, "grpc"));
    const statusOf = async (service: string) => (await health.check({ service })).status;
    const waitFor = async (service: string, want: HealthCheckResponse_ServingStatus) => {
      for (let i = 0; i < 100 && (await statusOf(service)) !== want; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(await statusOf(service), want, `${service || "(overall)"}`);
    };
    await waitFor("", HealthCheckResponse_ServingStatus.SERVING);
    await nats.kill("SIGKILL");
    await waitFor("backend.nats", HealthCheckResponse_ServingStatus.NOT_SERVING);
    await waitFor("", HealthCheckResponse_ServingStatus.NOT_SERVING);
    await waitFor("chat.v1.MessageService", HealthCheckResponse_ServingStatus.NOT_SERVING);
    await nats.start();
    await waitFor("", HealthCheckResponse_ServingStatus.SERVING);
  });
});
