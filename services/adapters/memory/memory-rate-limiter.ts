import type { RateDecision, RateLimit, RateLimiter } from "../../core/ports.js";

/**
 * MemoryRateLimiter keeps token buckets in process memory. A bucket starts
 * full (`burst` tokens) and refills continuously at `perSecond`. Full buckets
 * are forgotten, so memory is bounded by the number of keys recently limited.
 */
export class MemoryRateLimiter implements RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number; fullAt: number }>();
  private sweptAt = 0;

  constructor(private readonly now: () => number = Date.now) {}

  async take(key: string, limit: RateLimit): Promise<RateDecision> {
    const now = this.now();
    this.sweep(now);
    const bucket = this.buckets.get(key) ?? { tokens: limit.burst, at: now };
    const tokens = Math.min(limit.burst, bucket.tokens + ((now - bucket.at) / 1000) * limit.perSecond);
    if (tokens >= 1) {
      this.buckets.set(key, { tokens: tokens - 1, at: now, fullAt: fullAt(now, tokens - 1, limit) });
      return { allowed: true, retryAfterMs: 0 };
    }
    this.buckets.set(key, { tokens, at: now, fullAt: fullAt(now, tokens, limit) });
    return { allowed: false, retryAfterMs: Math.ceil(((1 - tokens) / limit.perSecond) * 1000) };
  }

  /** sweep drops buckets that have refilled completely (at most once a minute). */
  private sweep(now: number): void {
    if (now - this.sweptAt < 60_000) return;
    this.sweptAt = now;
    for (const [key, bucket] of this.buckets) {
      if (bucket.fullAt <= now) this.buckets.delete(key);
    }
  }
}

function fullAt(now: number, tokens: number, limit: RateLimit): number {
  return now + ((limit.burst - tokens) / limit.perSecond) * 1000;
}
