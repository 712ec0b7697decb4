import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { rateLimiterContract } from "../../../test/contract/rate-limiter.contract.js";
import { MemoryRateLimiter } from "./memory-rate-limiter.js";

rateLimiterContract("memory", async () => new MemoryRateLimiter());

/** bucketCount reads the private bucket map: the sweep is what the class doc promises. */
function bucketCount(limiter: MemoryRateLimiter): number {
  return (limiter as unknown as { buckets: Map<string, unknown> }).buckets.size;
}

describe("MemoryRateLimiter", () => {
  it("refills exactly at perSecond on an injected clock", async () => {
    let t = 1_000_000;
    const limiter = new MemoryRateLimiter(() => t);
    const limit = { burst: 2, perSecond: 20 };
    assert.equal((await limiter.take("k", limit)).allowed, true);
    assert.equal((await limiter.take("k", limit)).allowed, true);
    assert.deepEqual(await limiter.take("k", limit), { allowed: false, retryAfterMs: 50 });
    t += 49;
    assert.deepEqual(await limiter.take("k", limit), { allowed: false, retryAfterMs: 1 });
    t += 1;
    assert.deepEqual(await limiter.take("k", limit), { allowed: true, retryAfterMs: 0 });
    t += 10_000;
    assert.equal((await limiter.take("k", limit)).allowed, true);
    assert.equal((await limiter.take("k", limit)).allowed, true);
    assert.equal((await limiter.take("k", limit)).allowed, false, "capped at burst");
  });

  it("has a token exactly retryAfterMs after a refusal, not a millisecond earlier", async () => {
    let t = 1_700_000_000_000;
    const limiter = new MemoryRateLimiter(() => t);
    let checked = 0;
    for (const perSecond of [1, 3, 7, 10, 20, 100, 1 / 60]) {
      for (let elapsed = 0; elapsed < 50; elapsed++) {
        const limit = { burst: 1 + (elapsed % 3), perSecond };
        const k = `k-${perSecond}-${elapsed}`;
        while ((await limiter.take(k, limit)).allowed) t += 7;
        t += elapsed;
        const refusal = await limiter.take(k, limit);
        if (refusal.allowed) continue;
        checked++;
        t += refusal.retryAfterMs - 1;
        if (refusal.retryAfterMs > 1) assert.equal((await limiter.take(k, limit)).allowed, false, `${k}: 1 ms early`);
        t += 1;
        assert.equal((await limiter.take(k, limit)).allowed, true, `${k}: after retryAfterMs ${refusal.retryAfterMs}`);
      }
    }
    assert.ok(checked > 200, `checked ${checked} refusals`);
  });

  it("sweeps buckets that have refilled completely, at most once a minute", async () => {
    let t = 1_000_000;
    const limiter = new MemoryRateLimiter(() => t);
    const slow = { burst: 2, perSecond: 1 / 120 }; // refills in 4 minutes
    const fast = { burst: 2, perSecond: 1 }; // refills in 2 seconds
    await limiter.take("fast-1", fast);
    await limiter.take("fast-2", fast);
    await limiter.take("slow", slow);
    assert.equal(bucketCount(limiter), 3);

    t += 30_000; // all fast buckets full, but the last sweep was under a minute ago
    await limiter.take("other", fast);
    assert.equal(bucketCount(limiter), 4);

    t += 30_000; // a minute since the first sweep: full buckets go, "slow" stays
    await limiter.take("other", fast);
    assert.equal(bucketCount(limiter), 2, "only 'slow' and 'other' (just taken from) remain");
    // A swept key starts full again.
    assert.equal((await limiter.take("fast-1", fast)).allowed, true);
    assert.equal((await limiter.take("fast-1", fast)).allowed, true);
    assert.equal((await limiter.take("fast-1", fast)).allowed, false);
    // The kept bucket kept its state: 1 of 2 tokens taken, half a token refilled since.
    assert.equal((await limiter.take("slow", slow)).allowed, true);
    assert.equal((await limiter.take("slow", slow)).allowed, false);
  });
});
