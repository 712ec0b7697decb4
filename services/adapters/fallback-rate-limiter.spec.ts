import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ChatError } from "../core/errors.js";
import type { RateLimiter } from "../core/ports.js";
import { FallbackRateLimiter } from "./fallback-rate-limiter.js";
import { MemoryRateLimiter } from "./memory/memory-rate-limiter.js";

describe("FallbackRateLimiter", () => {
  it("uses the primary while it answers, and the fallback's limits while it fails", async () => {
    let down = false;
    const primary = new MemoryRateLimiter();
    const flaky: RateLimiter = {
      take: (key, limit) => (down ? Promise.reject(new ChatError("Unavailable", "redis down")) : primary.take(key, limit)),
    };
    const errors: unknown[] = [];
    const limiter = new FallbackRateLimiter(flaky, new MemoryRateLimiter(), (e) => errors.push(e));
    const limit = { burst: 2, perSecond: 0.001 };
    assert.equal((await limiter.take("k", limit)).allowed, true);
    assert.equal((await limiter.take("k", limit)).allowed, true);
    assert.equal((await limiter.take("k", limit)).allowed, false, "primary's budget is spent");
    down = true;
    assert.equal((await limiter.take("k", limit)).allowed, true, "fallback has its own budget");
    assert.equal((await limiter.take("k", limit)).allowed, true);
    assert.equal((await limiter.take("k", limit)).allowed, false, "and it is bounded");
    assert.equal(errors.length, 3);
  });
});
