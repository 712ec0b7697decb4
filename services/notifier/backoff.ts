/**
 * How long the notifier waits before it tries a push again: exponential
 * backoff with full jitter (each wait uniform in [0, base * 2^(retry-1)],
 * capped), or what the push service asked for with Retry-After; bounded in
 * attempts and in time since the first attempt.
 */

/** RetryPolicy bounds the attempts of one push to one device. */
export interface RetryPolicy {
  /** Attempts in all, the first included (at least 1). */
  readonly maxAttempts: number;
  /** The first retry waits up to this long; each later one up to twice the previous bound. */
  readonly baseMs: number;
  /** No attempt starts later than this after the first one; a wait that would pass it gives up instead. */
  readonly windowMs: number;
}

/** MAX_BACKOFF_MS caps one jittered wait (a Retry-After is bounded by the window alone). */
export const MAX_BACKOFF_MS = 30_000;

/**
 * retryDelay is the wait before retry number `retry` (1 for the first
 * retry, after the first attempt failed): with `afterMs` (the service's
 * Retry-After) that long plus a jitter below `baseMs`, so devices told the
 * same instant do not all come back at once, and never less than afterMs;
 * else uniform in [0, min(MAX_BACKOFF_MS, baseMs * 2^(retry-1))) ("full
 * jitter"). `random` returns a number in [0, 1).
 */
export function retryDelay(retry: number, policy: RetryPolicy, afterMs: number | undefined, random: () => number): number {
  if (afterMs !== undefined && afterMs > 0) return Math.ceil(afterMs + random() * policy.baseMs);
  const bound = Math.min(MAX_BACKOFF_MS, policy.baseMs * 2 ** Math.min(retry - 1, 30));
  return Math.floor(random() * bound);
}

/**
 * nextRetry decides whether retry number `retry` happens and after how long:
 * undefined (give up) once `maxAttempts` attempts were made or when the wait
 * would start the attempt more than `windowMs` after the first one (which
 * started `elapsedMs` ago).
 */
export function nextRetry(
  retry: number,
  elapsedMs: number,
  policy: RetryPolicy,
  afterMs: number | undefined,
  random: () => number,
): number | undefined {
  if (retry >= policy.maxAttempts) return undefined;
  const delay = retryDelay(retry, policy, afterMs, random);
  return elapsedMs + delay > policy.windowMs ? undefined : delay;
}
