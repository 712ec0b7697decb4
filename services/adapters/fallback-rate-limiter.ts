import type { RateDecision, RateLimit, RateLimiter } from "../core/ports.js";

/**
 * FallbackRateLimiter asks `primary` (Redis: one budget for the whole
 * cluster) and, when it fails, `fallback` (this process's memory), so a
 * Redis outage neither blocks every login nor lifts the limits: they become
 * per process, looser but still bounded. `onError` hears about each failure.
 */
export class FallbackRateLimiter implements RateLimiter {
  constructor(
    private readonly primary: RateLimiter,
    private readonly fallback: RateLimiter,
    private readonly onError: (e: unknown) => void = () => {},
  ) {}

  async take(key: string, limit: RateLimit): Promise<RateDecision> {
    try {
      return await this.primary.take(key, limit);
    } catch (e) {
      this.onError(e);
      return this.fallback.take(key, limit);
    }
  }
}
