import type { Redis } from "ioredis";
import type { Role } from "../../core/model.js";
import type { MembershipCache } from "../../core/ports.js";
import { isRedisReady, keyPart, redisUnavailable, requireInt } from "./redis-client.js";

/** RedisMembershipCacheOptions configures a RedisMembershipCache. */
export interface RedisMembershipCacheOptions {
  /** prefix starts every key this cache writes (e.g. "chat:"); keys are `${prefix}mc:<group><user>`. */
  readonly prefix: string;
  /** ttlMs is how long a cached answer lives (PX), so a missed invalidation heals by itself. Default 60 000; >= 1. */
  readonly ttlMs?: number;
  /** holdMs is how long an invalidated pair is held (see MembershipCache). Default 5 000; >= 1 000 as the port requires. */
  readonly holdMs?: number;
}

/** DEFAULT_HOLD_MS is the default invalidation hold. */
export const DEFAULT_HOLD_MS = 5_000;

/** DEFAULT_TTL_MS is the default lifetime of a cached answer. */
export const DEFAULT_TTL_MS = 60_000;

/** Stored values: a role as its name, "not a member" and the invalidation tombstone as one-character markers. */
const NOT_A_MEMBER = "-";
const TOMBSTONE = "!";

/**
 * SET_ROLE_LUA writes the value with PX unless the key holds a live
 * tombstone, atomically (a tombstone that expired is gone from Redis, so it
 * no longer blocks). Returns 1 if written, 0 if held.
 */
const SET_ROLE_LUA = `
if redis.call('GET', KEYS[1]) == '${TOMBSTONE}' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`;

/** SET_ROLE_COMMAND is the ioredis custom command name (EVALSHA, falling back to EVAL after a NOSCRIPT). */
const SET_ROLE_COMMAND = "chatMembershipSetRole";

interface ScriptedClient {
  [SET_ROLE_COMMAND](key: string, value: string, ttlMs: number): Promise<number>;
}

/**
 * RedisMembershipCache is the MembershipCache shared by every process: one
 * string key per (group, user) (ids length-prefixed, so any characters are
 * safe), holding the role or a "not a member" marker with PX = ttlMs.
 * `invalidate` overwrites it with a tombstone that lives holdMs; `setRole`
 * is a Lua script that leaves a live tombstone alone, so a reader that
 * raced a change cannot write the old answer back during the hold.
 *
 * Errors: every method rejects with ChatError Unavailable (cause = the
 * ioredis error) when Redis cannot answer, promptly if the client comes
 * from createRedisClient (no offline queue, command timeout). Callers
 * should treat a getRole failure as a miss and a setRole failure as
 * harmless; an invalidate failure leaves the old answer cached for up to
 * ttlMs. Nothing else is thrown.
 *
 * Limits: the hold relies on Redis keeping the tombstone, so it is lost if
 * Redis restarts without persistence or evicts it (use a `volatile-*` or
 * `noeviction` maxmemory policy on a dedicated instance); a reader slower
 * than holdMs between its store read and its setRole can still write back
 * a stale answer, for at most ttlMs.
 */
export class RedisMembershipCache implements MembershipCache {
  private readonly prefix: string;
  private readonly ttlMs: number;
  private readonly holdMs: number;

  /** The client is the caller's (see createRedisClient); the cache never closes it. */
  constructor(
    private readonly client: Redis,
    opts: RedisMembershipCacheOptions,
  ) {
    this.prefix = opts.prefix;
    this.ttlMs = requireInt("ttlMs", opts.ttlMs ?? DEFAULT_TTL_MS, 1);
    this.holdMs = requireInt("holdMs", opts.holdMs ?? DEFAULT_HOLD_MS, 1_000);
    if (typeof (client as unknown as Partial<ScriptedClient>)[SET_ROLE_COMMAND] !== "function") {
      client.defineCommand(SET_ROLE_COMMAND, { lua: SET_ROLE_LUA, numberOfKeys: 1 });
    }
  }

  async getRole(groupId: string, userId: string): Promise<Role | null | undefined> {
    let value: string | null;
    try {
      value = await this.client.get(this.key(groupId, userId));
    } catch (e) {
      throw redisUnavailable("membership cache", e);
    }
    switch (value) {
      case "member":
      case "admin":
      case "owner":
        return value;
      case NOT_A_MEMBER:
        return null;
      default:
        return undefined; // miss, tombstone, or a value this version does not know
    }
  }

  async setRole(groupId: string, userId: string, role: Role | null): Promise<void> {
    try {
      await (this.client as unknown as ScriptedClient)[SET_ROLE_COMMAND](this.key(groupId, userId), role ?? NOT_A_MEMBER, this.ttlMs);
    } catch (e) {
      throw redisUnavailable("membership cache", e);
    }
  }

  async invalidate(groupId: string, userId: string): Promise<void> {
    try {
      await this.client.set(this.key(groupId, userId), TOMBSTONE, "PX", this.holdMs);
    } catch (e) {
      throw redisUnavailable("membership cache", e);
    }
  }

  /** isHealthy tells whether the Redis connection is ready (for health checks; it sends nothing). */
  isHealthy(): boolean {
    return isRedisReady(this.client);
  }

  /** key is the pair's Redis key (exposed for tests). */
  key(groupId: string, userId: string): string {
    return `${this.prefix}mc:${keyPart(groupId)}${keyPart(userId)}`;
  }
}
