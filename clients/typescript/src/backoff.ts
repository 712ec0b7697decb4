/** Reconnect and retry delays: exponential backoff with full jitter. */

/** BackoffOptions shape the delays; every field has a default. */
export interface BackoffOptions {
  /** initialMs is the cap of the first delay (default 500). */
  readonly initialMs?: number;
  /** maxMs is the largest cap (default 30,000). */
  readonly maxMs?: number;
  /** stableMs: a live connection that lasted this long resets the backoff (default 10,000). */
  readonly stableMs?: number;
}

/** ResolvedBackoff is BackoffOptions with the defaults applied. */
export type ResolvedBackoff = Required<BackoffOptions>;

/** resolveBackoff applies the defaults. */
export function resolveBackoff(o: BackoffOptions = {}): ResolvedBackoff {
  return { initialMs: o.initialMs ?? 500, maxMs: o.maxMs ?? 30_000, stableMs: o.stableMs ?? 10_000 };
}

/**
 * backoffDelay is the delay before retry number `attempt` (0 for the first retry): uniformly random in
 * [0, min(maxMs, initialMs × 2^attempt)] ("full jitter"), so clients that lost the same server spread out.
 */
export function backoffDelay(b: ResolvedBackoff, attempt: number): number {
  const cap = Math.min(b.maxMs, b.initialMs * 2 ** Math.min(attempt, 30));
  return Math.random() * cap;
}
