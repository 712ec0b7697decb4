import type { Redis } from "ioredis";
import type { RateDecision, RateLimit, RateLimiter } from "../../core/ports.js";
import { isRedisReady, keyPart, redisUnavailable } from "./redis-client.js";

/** RedisRateLimiterOptions configures a RedisRateLimiter. */
export interface RedisRateLimiterOptions {
  /** prefix starts every key this limiter writes (e.g. "chat:"); keys are `${prefix}rl:<key>`. */
  readonly prefix: string;
}

/**
 * TAKE_LUA is one token-bucket step, atomic in Redis. KEYS[1] is a hash
 * {tokens, at} (at = server time in µs); ARGV = burst, perSecond. The time
 * comes from the server's TIME, so every process sharing the bucket agrees
 * on it whatever their own clocks say (time going backwards refills
 * nothing). The arithmetic matches MemoryRateLimiter: a bucket starts full,
 * a refusal takes nothing, retryAfterMs is the exact time to one token,
 * rounded up, and 1e-6 absorbs float error so that waiting it yields a token.
 * The key expires (PEXPIRE) when the bucket would be full again, which is
 * the same as forgetting it. Returns {allowed 0|1, retryAfterMs}.
 */
const TAKE_LUA = `
local burst = tonumber(ARGV[1])
local perUs = tonumber(ARGV[2]) / 1000000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local h = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(h[1])
local at = tonumber(h[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then tokens = math.min(burst, tokens + (now - at) * perUs) end
local eps = 1e-6
local allowed = 0
local retry = 0
if tokens + eps >= 1 then
  tokens = math.max(0, tokens - 1)
  allowed = 1
else
  retry = math.max(1, math.ceil((1 - tokens) / perUs / 1000 - eps))
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.min(1e15, math.max(1, math.ceil((burst - tokens) / perUs / 1000)))))
return {allowed, retry}
`;

/** TAKE_COMMAND is the ioredis custom command name (EVALSHA, falling back to EVAL after a NOSCRIPT). */
const TAKE_COMMAND = "chatRateLimitTake";

interface ScriptedClient {
  [TAKE_COMMAND](key: string, burst: number, perSecond: number): Promise<[number, number]>;
}

/**
 * RedisRateLimiter is the RateLimiter shared by every process: one hash per
 * bucket key, updated by a Lua script on the server's clock, so any number
 * of processes (or connections) taking from one key share one bucket and
 * never allow more than `burst` at once between them.
 *
 * Errors: `take` rejects with RangeError if `limit.burst` < 1 or
 * `limit.perSecond` is not a positive finite number (a programming error),
 * and with ChatError Unavailable (cause = the ioredis error) when Redis
 * cannot answer, promptly if the client comes from createRedisClient. A
 * take that timed out may still have consumed its token. Nothing else is
 * thrown.
 */
export class RedisRateLimiter implements RateLimiter {
  private readonly prefix: string;

  /** The client is the caller's (see createRedisClient); the limiter never closes it. */
  constructor(
    private readonly client: Redis,
    opts: RedisRateLimiterOptions,
  ) {
    this.prefix = opts.prefix;
    if (typeof (client as unknown as Partial<ScriptedClient>)[TAKE_COMMAND] !== "function") {
      client.defineCommand(TAKE_COMMAND, { lua: TAKE_LUA, numberOfKeys: 1 });
    }
  }

  async take(key: string, limit: RateLimit): Promise<RateDecision> {
    if (!(limit.burst >= 1) || !(limit.perSecond > 0) || !Number.isFinite(limit.burst) || !Number.isFinite(limit.perSecond)) {
      throw new RangeError(`invalid rate limit: burst ${limit.burst}, perSecond ${limit.perSecond}`);
    }
    let reply: [number, number];
    try {
      reply = await (this.client as unknown as ScriptedClient)[TAKE_COMMAND](this.key(key), limit.burst, limit.perSecond);
    } catch (e) {
      throw redisUnavailable("rate limiter", e);
    }
    const [allowed, retryAfterMs] = reply;
    return allowed === 1 ? { allowed: true, retryAfterMs: 0 } : { allowed: false, retryAfterMs: Number(retryAfterMs) };
  }

  /** isHealthy tells whether the Redis connection is ready (for health checks; it sends nothing). */
  isHealthy(): boolean {
    return isRedisReady(this.client);
  }

  /** key is the bucket's Redis key (exposed for tests). */
  key(bucket: string): string {
    return `${this.prefix}rl:${keyPart(bucket)}`;
  }
}
