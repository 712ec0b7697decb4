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
    // EPSILON absorbs float error: waiting exactly retryAfterMs must yield a token (not 0.9999999999999999).
    if (tokens + EPSILON >= 1) {
      const left = Math.max(0, tokens - 1);
      this.buckets.set(key, { tokens: left, at: now, fullAt: fullAt(now, left, limit) });
      return { allowed: true, retryAfterMs: 0 };
    }
    this.buckets.set(key, { tokens, at: now, fullAt: fullAt(now, tokens, limit) });
    return { allowed: false, retryAfterMs: Math.max(1, Math.ceil(((1 - tokens) / limit.perSecond) * 1000 - EPSILON)) };
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

const EPSILON = 1e-6;

function fullAt(now: number, tokens: number, limit: RateLimit): number {
  return now + ((limit.burst - tokens) / limit.perSecond) * 1000;
}
