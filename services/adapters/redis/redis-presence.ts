import type { Redis } from "ioredis";
import type { Presence } from "../../core/ports.js";
import { keyPart, redisUnavailable, requireInt } from "./redis-client.js";

/**
 * SET_ONLINE_LUA: for each key (a user), ZADD holder with score = Redis's
 * now + ttl, drop expired holders, and keep the key at least ttl long.
 * ARGV: holder, ttlMs. Redis's own clock is used so that processes with
 * skewed clocks agree on expiry.
 */
const SET_ONLINE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('ZADD', key, now + ttl, ARGV[1])
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
return #KEYS
`;

/** ONLINE_LUA returns, per key, 1 if some holder's entry is still live, else 0. */
const ONLINE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZCOUNT', key, '(' .. now, '+inf') > 0 and 1 or 0
end
return out
`;

const SET_ONLINE_COMMAND = "chatPresenceSetOnline";
const ONLINE_COMMAND = "chatPresenceOnline";

interface ScriptedClient {
  [SET_ONLINE_COMMAND](numKeys: number, ...args: (string | number)[]): Promise<number>;
  [ONLINE_COMMAND](numKeys: number, ...keys: string[]): Promise<number[]>;
}

/** BATCH bounds the keys one script call touches, so a large refresh does not block Redis for long. */
const BATCH = 500;

/**
 * RedisPresence is the Presence shared by every process: per user, a
 * sorted set `${prefix}pr:<user>` of holders scored by expiry (Redis
 * time, ms). Errors: every method rejects with ChatError Unavailable when
 * Redis cannot answer; presence is a hint, so callers log and go on.
 */
export class RedisPresence implements Presence {
  constructor(
    private readonly client: Redis,
    private readonly opts: { readonly prefix: string },
  ) {
    const scripted = client as unknown as Partial<ScriptedClient>;
    if (typeof scripted[SET_ONLINE_COMMAND] !== "function") client.defineCommand(SET_ONLINE_COMMAND, { lua: SET_ONLINE_LUA });
    if (typeof scripted[ONLINE_COMMAND] !== "function") client.defineCommand(ONLINE_COMMAND, { lua: ONLINE_LUA });
  }

  async setOnline(holder: string, userIds: readonly string[], ttlMs: number): Promise<void> {
    requireInt("ttlMs", ttlMs, 1);
    const c = this.client as unknown as ScriptedClient;
    for (let i = 0; i < userIds.length; i += BATCH) {
      const keys = userIds.slice(i, i + BATCH).map((u) => this.key(u));
      await this.call(() => c[SET_ONLINE_COMMAND](keys.length, ...keys, holder, ttlMs));
    }
  }

  async setOffline(holder: string, userIds: readonly string[]): Promise<void> {
    // Plain commands, not an explicit pipeline: the client auto-pipelines them
    // behind the commands issued before (an explicit pipeline is written at
    // once and could overtake an earlier setOnline still queued).
    for (let i = 0; i < userIds.length; i += BATCH) {
      const batch = userIds.slice(i, i + BATCH);
      await this.call(() => Promise.all(batch.map((u) => this.client.zrem(this.key(u), holder))));
    }
  }

  async online(userIds: readonly string[]): Promise<ReadonlySet<string>> {
    const out = new Set<string>();
    const c = this.client as unknown as ScriptedClient;
    for (let i = 0; i < userIds.length; i += BATCH) {
      const batch = userIds.slice(i, i + BATCH);
      const flags = await this.call(() => c[ONLINE_COMMAND](batch.length, ...batch.map((u) => this.key(u))));
      batch.forEach((u, j) => {
        if (flags[j] === 1) out.add(u);
      });
    }
    return out;
  }

  /** key is the user's presence key (exposed for tests). */
  key(userId: string): string {
    return `${this.opts.prefix}pr:${keyPart(userId)}`;
  }

  private async call<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (e) {
      throw redisUnavailable("presence", e);
    }
  }
}
