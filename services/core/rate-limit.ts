import { ChatError } from "./errors.js";
import type { RateLimit, RateLimiter } from "./ports.js";

/**
 * takeToken takes one token from the bucket `key`, or throws ChatError
 * ResourceExhausted naming `what` with the wait in seconds and
 * retryAfterMs (sent to clients as a retry-after header).
 */
export async function takeToken(limiter: RateLimiter, key: string, limit: RateLimit, what: string): Promise<void> {
  const decision = await limiter.take(key, limit);
  if (!decision.allowed) {
    const seconds = Math.ceil(decision.retryAfterMs / 1000);
    throw new ChatError("ResourceExhausted", `too many ${what}; retry in ${seconds} s`, { retryAfterMs: decision.retryAfterMs });
  }
}
