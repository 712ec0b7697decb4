import type { Logger } from "./logger.js";
import type { Config } from "./config.js";
import { FallbackRateLimiter } from "../adapters/fallback-rate-limiter.js";
import { MemoryEventBus } from "../adapters/memory/memory-bus.js";
import { MemoryMembershipCache } from "../adapters/memory/memory-membership-cache.js";
import { MemoryRateLimiter } from "../adapters/memory/memory-rate-limiter.js";
import { createNatsEventBus } from "../adapters/nats/nats-event-bus.js";
import { createRedisClient, isRedisReady } from "../adapters/redis/redis-client.js";
import { RedisMembershipCache } from "../adapters/redis/redis-membership-cache.js";
import { RedisRateLimiter } from "../adapters/redis/redis-rate-limiter.js";
import { createSqliteStore } from "../adapters/sqlite/sqlite-store.js";
import type { Clock, EventBus, MembershipCache, RateLimiter, Store } from "../core/ports.js";

/** BackendCheck names a backend and tells whether it is reachable now (for health). */
export interface BackendCheck {
  readonly name: string;
  /** critical: without it the process cannot serve (NOT_SERVING); otherwise it only degrades. */
  readonly critical: boolean;
  healthy(): boolean;
}

/** Backends are the adapters behind every port, chosen from the config's URLs. */
export interface Backends {
  readonly store: Store;
  readonly bus: EventBus;
  readonly cache: MembershipCache;
  readonly limiter: RateLimiter;
  /** checks lists the remote backends, for health. */
  readonly checks: readonly BackendCheck[];
  /** close releases every backend (store last, after pending writes). */
  close(): Promise<void>;
}

/**
 * openBackends is the one place that maps URL schemes to adapters
 * (STORE_URL, BUS_URL, CACHE_URL): `sqlite:` and `memory:` for the embedded
 * default, `nats://` for the event bus and `redis://` for the cache and rate
 * limits of the production topology. Redis is optional for correctness: cache failures fall back to
 * the store and rate limits to per-process buckets.
 */
export async function openBackends(config: Config, clock: Clock, logger: Logger): Promise<Backends> {
  const closers: (() => Promise<void>)[] = [];
  const checks: BackendCheck[] = [];
  const store = createSqliteStore({ path: config.storeUrl.slice("sqlite:".length), retentionMs: config.retentionMs, clock });
  let bus: EventBus;
  if (config.busUrl.startsWith("nats://")) {
    const nats = await createNatsEventBus({
      servers: config.busUrl.split(","),
      prefix: config.namespace,
      name: `chat-${config.services.join("+")}-${process.pid}`,
      logger,
    });
    bus = nats;
    checks.push({ name: "nats", critical: true, healthy: () => nats.isHealthy() });
  } else {
    bus = new MemoryEventBus();
  }
  closers.push(() => bus.close());

  let cache: MembershipCache;
  let limiter: RateLimiter;
  const memoryLimiter = new MemoryRateLimiter(() => clock.now());
  if (config.cacheUrl.startsWith("redis://")) {
    const warn = throttledWarn(logger, "redis unavailable; using the store and per-process rate limits");
    const client = createRedisClient(config.cacheUrl, { connectionName: `${config.namespace}-chat`, onError: warn });
    closers.push(async () => {
      client.disconnect();
    });
    const prefix = `${config.namespace}:`;
    cache = new RedisMembershipCache(client, { prefix });
    limiter = new FallbackRateLimiter(new RedisRateLimiter(client, { prefix }), memoryLimiter, warn);
    checks.push({ name: "redis", critical: false, healthy: () => isRedisReady(client) });
  } else {
    cache = new MemoryMembershipCache({ maxEntries: 100_000, ttlMs: 60_000, now: () => clock.now() });
    limiter = memoryLimiter;
  }

  return {
    store,
    bus,
    cache,
    limiter,
    checks,
    async close() {
      for (const close of closers.reverse()) await close().catch((err: unknown) => logger.warn({ err }, "closing a backend failed"));
      await store.close();
    },
  };
}

/** throttledWarn logs `message` with the error at most once every 10 s. */
function throttledWarn(logger: Logger, message: string): (err: unknown) => void {
  let last = 0;
  return (err) => {
    const now = Date.now();
    if (now - last < 10_000) return;
    last = now;
    logger.warn({ err }, message);
  };
}
