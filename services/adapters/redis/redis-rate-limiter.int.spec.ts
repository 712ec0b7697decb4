/**
 * RedisRateLimiter against a real Redis: the contract suite and the
 * Redis-specific behaviour on the shared server at REDIS_URL (keys under a
 * unique prefix, deleted afterwards), and a fault test on a private
 * redis-server. Skipped unless REDIS_URL is set.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Redis } from "ioredis";
import { rateLimiterContract } from "../../../test/contract/rate-limiter.contract.js";
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
import type { RateDecision } from "../../core/ports.js";
import { RedisRateLimiter } from "./redis-rate-limiter.js";

const url = process.env.REDIS_URL;
const skip = !url;

const shared = (label: string) => sharedRedis(url ?? "", label);

const contract = shared("rl-contract");
rateLimiterContract("redis", async () => new RedisRateLimiter(await contract.client(), { prefix: contract.prefix }), {
  skip,
  cleanup: () => contract.close(),
});

function allowedCount(decisions: readonly RateDecision[]): number {
  return decisions.filter((d) => d.allowed).length;
}

/** rejectsUnavailable asserts that `op` rejects with ChatError Unavailable within `withinMs`. */
async function rejectsUnavailable(op: () => Promise<unknown>, withinMs: number, what: string): Promise<void> {
  const t0 = performance.now();
  await assert.rejects(op(), (e: unknown) => isChatError(e, "Unavailable") && e.cause instanceof Error, what);
  const ms = performance.now() - t0;
  assert.ok(ms < withinMs, `${what}: rejected after ${ms.toFixed(0)} ms (limit ${withinMs})`);
}

describe("RedisRateLimiter (Redis)", { skip }, () => {
  const env = shared("rl");
  let client: Redis;
  let limiter: RedisRateLimiter;

  before(async () => {
    client = await env.client();
    limiter = new RedisRateLimiter(client, { prefix: env.prefix });
  });

  after(async () => {
    await env.close();
  });

  it("shares one bucket between limiters on two connections (two processes)", async () => {
    const other = new RedisRateLimiter(await env.client(), { prefix: env.prefix });
    const limit = { burst: 5, perSecond: 1 };

    const k = newId();
    const alternating: RateDecision[] = [];
    for (let i = 0; i < 6; i++) alternating.push(await (i % 2 === 0 ? limiter : other).take(k, limit));
    assert.deepEqual(
      alternating.map((d) => d.allowed),
      [true, true, true, true, true, false],
    );

    const k2 = newId();
    const concurrent = await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? limiter : other).take(k2, limit)),
    );
    const allowed = allowedCount(concurrent);
    assert.ok(allowed >= 5 && allowed <= 6, `allowed ${allowed} of 40 across two connections (burst 5, one token of slack)`);
  });

  it("expires the bucket key when it would be full again, which forgets it", async () => {
    const limit = { burst: 2, perSecond: 10 }; // one token per 100 ms
    const k = newId();
    assert.equal((await limiter.take(k, limit)).allowed, true);
    const afterOne = await client.pttl(limiter.key(k));
    assert.ok(afterOne > 0 && afterOne <= 100, `PTTL ${afterOne} in (0, 100] with 1 of 2 tokens left`);
    assert.equal((await limiter.take(k, limit)).allowed, true);
    const afterTwo = await client.pttl(limiter.key(k));
    assert.ok(afterTwo > 100 && afterTwo <= 200, `PTTL ${afterTwo} in (100, 200] with 0 of 2 tokens left`);
    const refusal = await limiter.take(k, limit);
    assert.equal(refusal.allowed, false);
    assert.ok((await client.pttl(limiter.key(k))) <= 200, "a refusal does not push the expiry out");

    let tries = 0;
    while ((await client.exists(limiter.key(k))) === 1) {
      assert.ok(++tries < 50, "key gone within 1 s");
      await sleep(20);
    }
    assert.equal(allowedCount(await Promise.all([0, 1, 2].map(() => limiter.take(k, limit)))), 2, "a forgotten bucket is full");
  });

  it("has a token once retryAfterMs has passed, for slow and fast refills", async () => {
    for (const limit of [
      { burst: 1, perSecond: 20 },
      { burst: 2, perSecond: 7 },
      { burst: 3, perSecond: 33 },
    ]) {
      const k = newId();
      let refusal: RateDecision | undefined;
      for (let i = 0; i < limit.burst + 1; i++) refusal = await limiter.take(k, limit);
      assert.ok(refusal && !refusal.allowed, `refused after burst ${limit.burst}`);
      assert.ok(refusal.retryAfterMs > 0 && refusal.retryAfterMs <= Math.ceil(1000 / limit.perSecond), `retryAfterMs ${refusal.retryAfterMs}`);
      await sleep(refusal.retryAfterMs);
      assert.equal((await limiter.take(k, limit)).allowed, true, `allowed ${refusal.retryAfterMs} ms later (${limit.perSecond}/s)`);
    }
  });

  it("keeps the buckets of two prefixes apart", async () => {
    const otherPrefix = new RedisRateLimiter(client, { prefix: `${env.prefix}other:` });
    const limit = { burst: 1, perSecond: 1 };
    const k = newId();
    assert.equal((await limiter.take(k, limit)).allowed, true);
    assert.equal((await otherPrefix.take(k, limit)).allowed, true);
    assert.equal((await limiter.take(k, limit)).allowed, false);
  });

  it("rejects limits that describe no bucket with RangeError", async () => {
    for (const limit of [
      { burst: 0, perSecond: 1 },
      { burst: 1, perSecond: 0 },
      { burst: 1, perSecond: -1 },
      { burst: Number.NaN, perSecond: 1 },
      { burst: 1, perSecond: Number.POSITIVE_INFINITY },
    ]) {
      await assert.rejects(limiter.take(newId(), limit), RangeError, JSON.stringify(limit));
    }
  });
});

describe("RedisRateLimiter faults (private redis-server)", { skip: skip || !hasRedisServerBin() }, () => {
  let server: PrivateRedis | undefined;
  let client: Redis | undefined;

  after(async () => {
    client?.disconnect();
    await server?.close();
  });

  it("rejects promptly with Unavailable while Redis is hung or down, and works again after a restart on the same client", async () => {
    server = await PrivateRedis.start();
    client = await connectRedis(server.url, { commandTimeoutMs: 300, maxReconnectDelayMs: 100 });
    const limiter = new RedisRateLimiter(client, { prefix: uniquePrefix("rl-fault") });
    const limit = { burst: 2, perSecond: 1 };
    const k = newId();
    assert.equal((await limiter.take(k, limit)).allowed, true);
    assert.equal(limiter.isHealthy(), true);

    // Hung: the command timeout ends each call.
    server.pause();
    try {
      await rejectsUnavailable(() => limiter.take(k, limit), 1_000, "take while hung");
    } finally {
      server.resume();
    }

    // Down: calls reject at once, across reconnect attempts.
    await server.stop();
    await waitUntil(() => !limiter.isHealthy(), 2_000, "isHealthy() false after the kill");
    for (let i = 0; i < 5; i++) {
      await rejectsUnavailable(() => limiter.take(k, limit), 1_000, `take while down (${i})`);
      await sleep(100);
    }

    // Back, empty and without the script loaded: the same client works again, with a full bucket.
    await server.restart();
    await waitUntil(() => limiter.isHealthy(), 5_000, "isHealthy() true after the restart");
    const decisions = await Promise.all([0, 1, 2].map(() => limiter.take(k, limit)));
    assert.deepEqual(
      decisions.map((d) => d.allowed),
      [true, true, false],
    );
  });
});
