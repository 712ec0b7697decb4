/**
 * RedisMembershipCache against a real Redis: the contract suite and the
 * Redis-specific behaviour on the shared server at REDIS_URL (keys under a
 * unique prefix, deleted afterwards), and a fault test on a private
 * redis-server. Skipped unless REDIS_URL is set.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Redis } from "ioredis";
import { membershipCacheContract } from "../../../test/contract/membership-cache.contract.js";
import {
  connectRedis,
  hasRedisServerBin,
  PrivateRedis,
  sharedRedis,
  uniquePrefix,
  waitUntil,
} from "../../../test/support/redis-test-helpers.js";
import { isChatError } from "../../core/errors.js";
import { newId } from "../../core/ids.js";
import { RedisMembershipCache } from "./redis-membership-cache.js";

const url = process.env.REDIS_URL;
const skip = !url;

const shared = (label: string) => sharedRedis(url ?? "", label);

const contract = shared("mc-contract");
membershipCacheContract("redis", async () => new RedisMembershipCache(await contract.client(), { prefix: contract.prefix }), {
  skip,
  cleanup: () => contract.close(),
});

/** rejectsUnavailable asserts that `op` rejects with ChatError Unavailable within `withinMs`. */
async function rejectsUnavailable(op: () => Promise<unknown>, withinMs: number, what: string): Promise<void> {
  const t0 = performance.now();
  await assert.rejects(op(), (e: unknown) => isChatError(e, "Unavailable") && e.cause instanceof Error, what);
  const ms = performance.now() - t0;
  assert.ok(ms < withinMs, `${what}: rejected after ${ms.toFixed(0)} ms (limit ${withinMs})`);
}

describe("RedisMembershipCache (Redis)", { skip }, () => {
  const env = shared("mc");
  let client: Redis;

  before(async () => {
    client = await env.client();
  });

  after(async () => {
    await env.close();
  });

  it("stores one key per pair with PX = ttlMs, and the answer expires", async () => {
    const cache = new RedisMembershipCache(client, { prefix: env.prefix, ttlMs: 300 });
    const [g, member, stranger] = [newId(), newId(), newId()];
    await cache.setRole(g, member, "admin");
    await cache.setRole(g, stranger, null);
    const pttl = await client.pttl(cache.key(g, member));
    assert.ok(pttl > 0 && pttl <= 300, `PTTL ${pttl} in (0, 300]`);
    assert.equal(await cache.getRole(g, member), "admin");
    assert.equal(await cache.getRole(g, stranger), null);
    await sleep(450);
    assert.equal(await cache.getRole(g, member), undefined);
    assert.equal(await cache.getRole(g, stranger), undefined);
    assert.equal(await client.exists(cache.key(g, member), cache.key(g, stranger)), 0, "Redis dropped both keys");
  });

  it("holds an invalidated pair for holdMs (a tombstone with PX), then caches it again", async () => {
    const cache = new RedisMembershipCache(client, { prefix: env.prefix, ttlMs: 60_000, holdMs: 1_000 });
    const [g, u] = [newId(), newId()];
    await cache.setRole(g, u, "admin");
    const t0 = performance.now();
    await cache.invalidate(g, u);
    const pttl = await client.pttl(cache.key(g, u));
    assert.ok(pttl > 0 && pttl <= 1_000, `tombstone PTTL ${pttl} in (0, 1000]`);
    await cache.setRole(g, u, "admin"); // a read that raced the change
    assert.equal(await cache.getRole(g, u), undefined);
    assert.ok((await client.pttl(cache.key(g, u))) <= 1_000, "the held setRole did not extend or replace the tombstone");

    let tries = 0;
    while ((await cache.getRole(g, u)) !== "member") {
      assert.ok(++tries < 150, "cached again within 3 s");
      await sleep(20);
      await cache.setRole(g, u, "member");
    }
    const heldMs = performance.now() - t0;
    assert.ok(heldMs >= 990 && heldMs < 3_000, `held ${heldMs.toFixed(0)} ms (holdMs 1000)`);
  });

  it("shares answers and holds between processes (two caches on two connections)", async () => {
    const other = await env.client();
    const a = new RedisMembershipCache(client, { prefix: env.prefix, holdMs: 1_000 });
    const b = new RedisMembershipCache(other, { prefix: env.prefix, holdMs: 1_000 });
    const [g, u] = [newId(), newId()];
    await a.setRole(g, u, "owner");
    assert.equal(await b.getRole(g, u), "owner");
    await b.invalidate(g, u);
    await a.setRole(g, u, "owner");
    assert.equal(await a.getRole(g, u), undefined, "the other process's hold applies");
    assert.equal(await b.getRole(g, u), undefined);
  });

  it("keeps apart ids that UTF-8 cannot tell apart (lone surrogates)", async () => {
    const cache = new RedisMembershipCache(client, { prefix: env.prefix });
    const u = newId();
    const base = newId();
    const ids = [`${base}\uD800`, `${base}\uDC00`, `${base}\uFFFD`, `${base}x`, `${base}\uD83D\uDE00`];
    const roles = ["member", "admin", "owner", null, "admin"] as const;
    for (const [i, g] of ids.entries()) await cache.setRole(g, u, roles[i] ?? null);
    for (const [i, g] of ids.entries()) assert.equal(await cache.getRole(g, u), roles[i], `id ${i}`);
    assert.equal(new Set(ids.map((g) => cache.key(g, u))).size, ids.length);
  });

  it("treats a value it does not know as a miss", async () => {
    const cache = new RedisMembershipCache(client, { prefix: env.prefix });
    const [g, u] = [newId(), newId()];
    await client.set(cache.key(g, u), "superuser", "PX", 10_000);
    assert.equal(await cache.getRole(g, u), undefined);
  });

  it("rejects a hold under 1 s and a ttl under 1 ms at construction", () => {
    assert.throws(() => new RedisMembershipCache(client, { prefix: env.prefix, holdMs: 999 }), RangeError);
    assert.throws(() => new RedisMembershipCache(client, { prefix: env.prefix, ttlMs: 0 }), RangeError);
    assert.throws(() => new RedisMembershipCache(client, { prefix: env.prefix, ttlMs: 1.5 }), RangeError);
  });
});

describe("RedisMembershipCache faults (private redis-server)", { skip: skip || !hasRedisServerBin() }, () => {
  let server: PrivateRedis | undefined;
  let client: Redis | undefined;

  after(async () => {
    client?.disconnect();
    await server?.close();
  });

  it("rejects promptly with Unavailable while Redis is hung or down, and works again after a restart on the same client", async () => {
    server = await PrivateRedis.start();
    client = await connectRedis(server.url, { commandTimeoutMs: 300, maxReconnectDelayMs: 100 });
    const c = client;
    const cache = new RedisMembershipCache(c, { prefix: uniquePrefix("mc-fault"), holdMs: 1_000 });
    const [g, u] = [newId(), newId()];
    await cache.setRole(g, u, "admin");
    assert.equal(await cache.getRole(g, u), "admin");
    assert.equal(cache.isHealthy(), true);

    // Hung: the connection stays open, nothing answers; the command timeout ends each call.
    server.pause();
    try {
      await rejectsUnavailable(() => cache.getRole(g, u), 1_000, "getRole while hung");
      await rejectsUnavailable(() => cache.setRole(g, u, "member"), 1_000, "setRole while hung");
      await rejectsUnavailable(() => cache.invalidate(g, u), 1_000, "invalidate while hung");
    } finally {
      server.resume();
    }
    // The late replies to the timed-out commands must not be matched to later commands.
    await waitUntil(() => c.status === "ready", 2_000, "connection after resume");
    await sleep(100);
    assert.equal(await cache.getRole(g, u), undefined, "the invalidate sent while hung was applied late");
    await cache.setRole(g, newId(), "owner");

    // Down: a call in flight when the server dies (on a client whose command
    // timeout is far off, so the dropped connection is what ends it) ...
    const patient = await connectRedis(server.url, { commandTimeoutMs: 10_000 });
    try {
      const patientCache = new RedisMembershipCache(patient, { prefix: uniquePrefix("mc-fault") });
      server.pause();
      const inFlight = patientCache.getRole(g, u);
      inFlight.catch(() => {}); // asserted below
      await sleep(100);
      await server.stop();
      await rejectsUnavailable(() => inFlight, 1_000, "getRole in flight when the server died");
    } finally {
      patient.disconnect();
    }
    // ... then calls while it is down.
    await waitUntil(() => !cache.isHealthy(), 2_000, "isHealthy() false after the kill");
    for (let i = 0; i < 3; i++) {
      await rejectsUnavailable(() => cache.getRole(g, u), 1_000, `getRole while down (${i})`);
      await rejectsUnavailable(() => cache.setRole(g, u, "member"), 1_000, `setRole while down (${i})`);
      await rejectsUnavailable(() => cache.invalidate(g, u), 1_000, `invalidate while down (${i})`);
      await sleep(150); // across reconnect attempts
    }

    // Back (empty: no persistence, and no scripts loaded): the same client and cache work again.
    await server.restart();
    await waitUntil(() => cache.isHealthy(), 5_000, "isHealthy() true after the restart");
    assert.equal(await cache.getRole(g, u), undefined, "the restarted server is empty");
    await cache.setRole(g, u, "owner"); // EVALSHA → NOSCRIPT → EVAL
    assert.equal(await cache.getRole(g, u), "owner");
    await cache.invalidate(g, u);
    await cache.setRole(g, u, "owner");
    assert.equal(await cache.getRole(g, u), undefined, "the hold works after the restart");
  });
});
