/**
 * Contract suite for the RateLimiter port (services/core/ports.ts). Every
 * RateLimiter adapter (memory, Redis, ...) runs it; it tests only what the
 * port's doc comments promise: token buckets of `burst` tokens refilled at
 * `perSecond`, one per key.
 *
 * The suite may run against a shared, long-lived server: every test uses
 * fresh keys (newId()). It runs on the real clock, so its limits are chosen
 * to leave room for scheduling delays: slow refills (1 token/s) where no
 * refill may happen, and bounds with one token of slack where time matters.
 */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { newId } from "../../services/core/ids.js";
import type { RateDecision, RateLimit, RateLimiter } from "../../services/core/ports.js";

/** RateLimiterContractOptions tunes rateLimiterContract for one adapter. */
export interface RateLimiterContractOptions {
  /** Skip the whole suite (e.g. when the adapter's server is not configured). */
  readonly skip?: boolean;
  /** cleanup runs once after the suite (delete the run's keys, close clients). */
  readonly cleanup?: () => Promise<void>;
}

/** key returns a fresh bucket key. */
function key(): string {
  return `rl-contract-${newId()}`;
}

/** takeN takes `n` tokens one after another and returns the decisions. */
async function takeN(limiter: RateLimiter, k: string, limit: RateLimit, n: number): Promise<RateDecision[]> {
  const out: RateDecision[] = [];
  for (let i = 0; i < n; i++) out.push(await limiter.take(k, limit));
  return out;
}

function allowedCount(decisions: readonly RateDecision[]): number {
  return decisions.filter((d) => d.allowed).length;
}

/** assertRefusal checks a refusal's retryAfterMs: positive and at most one token's refill time (+1 ms rounding). */
function assertRefusal(d: RateDecision | undefined, limit: RateLimit, what: string): void {
  assert.ok(d, what);
  assert.equal(d.allowed, false, `${what}: refused`);
  assert.ok(d.retryAfterMs > 0, `${what}: retryAfterMs ${d.retryAfterMs} > 0`);
  const max = Math.ceil(1000 / limit.perSecond) + 1;
  assert.ok(d.retryAfterMs <= max, `${what}: retryAfterMs ${d.retryAfterMs} <= ${max}`);
}

/**
 * rateLimiterContract registers the RateLimiter contract tests for one
 * adapter. `make` is called once per suite; `opts.cleanup` runs after it.
 */
export function rateLimiterContract(name: string, make: () => Promise<RateLimiter>, opts: RateLimiterContractOptions = {}): void {
  describe(`RateLimiter contract: ${name}`, { skip: opts.skip ?? false }, () => {
    let limiter: RateLimiter;

    before(async () => {
      limiter = await make();
    });

    after(async () => {
      await opts.cleanup?.();
    });

    it("allows burst takes from a fresh key, then refuses with 0 < retryAfterMs <= one token's time", async () => {
      for (const limit of [
        { burst: 1, perSecond: 1 },
        { burst: 5, perSecond: 1 },
        { burst: 3, perSecond: 4 },
      ]) {
        const k = key();
        const decisions = await takeN(limiter, k, limit, limit.burst + 2);
        assert.deepEqual(
          decisions.map((d) => d.allowed),
          [...Array<boolean>(limit.burst).fill(true), false, false],
          `burst ${limit.burst}`,
        );
        assertRefusal(decisions[limit.burst], limit, `burst ${limit.burst}, first refusal`);
        assertRefusal(decisions[limit.burst + 1], limit, `burst ${limit.burst}, second refusal`);
      }
    });

    it("keeps keys independent", async () => {
      const limit = { burst: 2, perSecond: 1 };
      const k1 = key();
      const k2 = key();
      assert.equal(allowedCount(await takeN(limiter, k1, limit, 3)), 2);
      assert.equal(allowedCount(await takeN(limiter, k2, limit, 3)), 2, "a second key has its own bucket");
      assertRefusal(await limiter.take(k1, limit), limit, "the first key stays empty");
    });

    it("takes nothing on a refusal: a token is there once retryAfterMs has passed", async () => {
      const limit = { burst: 1, perSecond: 20 };
      const k = key();
      assert.equal((await limiter.take(k, limit)).allowed, true);
      let last: RateDecision | undefined;
      for (let i = 0; i < 5; i++) {
        last = await limiter.take(k, limit);
        assertRefusal(last, limit, `refusal ${i + 1}`);
      }
      await sleep((last?.retryAfterMs ?? 0) + 25);
      assert.equal((await limiter.take(k, limit)).allowed, true, "allowed after retryAfterMs");
    });

    it("refills over time, but never beyond burst", async () => {
      const limit = { burst: 2, perSecond: 20 };
      const k = key();
      assert.equal(allowedCount(await takeN(limiter, k, limit, 3)), 2);

      // 120 ms refill 2.4 tokens, capped at 2; a further token needs 50 ms more.
      await sleep(120);
      const refilled = allowedCount(await takeN(limiter, k, limit, 5));
      assert.ok(refilled >= 2 && refilled <= 3, `allowed ${refilled} of 5 after 120 ms (expected 2, or 3 if 50 ms passed)`);

      // 300 ms would refill 6 tokens without the cap.
      await sleep(300);
      const capped = allowedCount(await takeN(limiter, k, limit, 5));
      assert.ok(capped >= 2 && capped <= 3, `allowed ${capped} of 5 after 300 ms (burst 2)`);
    });

    it("never allows more than burst to concurrent takes", async () => {
      const limit = { burst: 10, perSecond: 1 };
      const k = key();
      const decisions = await Promise.all(Array.from({ length: 50 }, () => limiter.take(k, limit)));
      const allowed = allowedCount(decisions);
      // One token of slack for a refill while the takes are in flight.
      assert.ok(allowed >= limit.burst && allowed <= limit.burst + 1, `allowed ${allowed} of 50 (burst 10)`);
      for (const d of decisions) if (!d.allowed) assert.ok(d.retryAfterMs > 0, `retryAfterMs ${d.retryAfterMs} > 0`);
    });
  });
}
