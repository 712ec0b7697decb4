import { createCassandraStore } from "../adapters/jetstream-cassandra/cassandra-store.js";
import { createJetStreamEventFeed } from "../adapters/jetstream-cassandra/jetstream-event-feed.js";
import { startPersister } from "../adapters/jetstream-cassandra/persister.js";
import { FallbackRateLimiter } from "../adapters/fallback-rate-limiter.js";
import { MemoryEventBus } from "../adapters/memory/memory-bus.js";
import { MemoryMembershipCache } from "../adapters/memory/memory-membership-cache.js";
import { MemoryPresence } from "../adapters/memory/memory-presence.js";
import { MemoryRateLimiter } from "../adapters/memory/memory-rate-limiter.js";
import { MemoryRecentMessages } from "../adapters/memory/memory-recent-messages.js";
import { storePublishesEvents } from "../adapters/jetstream-cassandra/jetstream-sequencer.js";
import { createNatsEventBus } from "../adapters/jetstream-cassandra/nats-event-bus.js";
import { createRedisClient, isRedisReady } from "../adapters/redis/redis-client.js";
import { RedisMembershipCache } from "../adapters/redis/redis-membership-cache.js";
import { RedisPresence } from "../adapters/redis/redis-presence.js";
import { RedisRateLimiter } from "../adapters/redis/redis-rate-limiter.js";
import { RedisRecentMessages } from "../adapters/redis/redis-recent-messages.js";
import { createSqliteEventFeed } from "../adapters/sqlite/sqlite-event-feed.js";
import { createSqliteStore } from "../adapters/sqlite/sqlite-store.js";
import type { SqliteStore } from "../adapters/sqlite/sqlite-store.js";
import type { Logger } from "../core/logger.js";
import type { Clock, EventBus, EventFeed, MembershipCache, Presence, RateLimiter, RecentMessages, Store } from "../core/ports.js";
import type { Config } from "./config.js";

/** BackendCheck names a backend and tells whether it is reachable now (for health). */
export interface BackendCheck {
  readonly name: string;
  /** critical: without it the process cannot serve (NOT_SERVING); otherwise it only degrades. */
  readonly critical: boolean;
  healthy(): boolean;
}

/** BackendObservers hear what the adapters measure (metrics). */
export interface BackendObservers {
  /** onStoreCommit hears how long each group commit of the embedded store took, in seconds (SqliteStoreOptions.onCommit). */
  readonly onStoreCommit?: (seconds: number) => void;
}

/** Backends are the adapters behind every port, chosen from the config's URLs. */
export interface Backends {
  readonly store: Store;
  readonly bus: EventBus;
  readonly cache: MembershipCache;
  readonly recent: RecentMessages;
  readonly presence: Presence;
  readonly limiter: RateLimiter;
  /**
   * feed follows every group's durable events for named followers (the
   * notifier): a durable JetStream consumer per name on the store's NATS
   * connection with a cassandra:// store, else the SQLite file's `events`
   * table (the store's own connection for sqlite::memory:). Followers are
   * stopped by close().
   */
  readonly feed: EventFeed;
  /** checks lists the remote backends, for health. */
  readonly checks: readonly BackendCheck[];
  /** close releases every backend (store last, after pending writes). */
  close(): Promise<void>;
}

/**
 * openBackends is the one place that maps URL schemes to adapters
 * (STORE_URL, BUS_URL, CACHE_URL): `sqlite:` and `memory:` for the embedded
 * default, `cassandra://` for the store, `nats://` for the event bus and
 * `redis://` for the caches (membership, recent messages), presence and rate limits
 * of the production topology. Redis is optional for correctness: cache
 * failures fall back to the store and rate limits to per-process buckets.
 *
 * With a cassandra:// store (which requires a nats:// bus, see config.ts),
 * the store sequences every event through JetStream and that publish is the
 * fan-out, so the services' own publishEvent is skipped
 * (storePublishesEvents); processes serving "message" also run the
 * persister. The event feed follows the store: JetStream with a cassandra://
 * store, the SQLite file otherwise. Migrations run first when config.migrate
 * is set.
 */
export async function openBackends(config: Config, clock: Clock, logger: Logger, observers: BackendObservers = {}): Promise<Backends> {
  let cacheRef: MembershipCache | undefined;
  const closers: (() => Promise<void>)[] = [];
  const checks: BackendCheck[] = [];
  const connectionName = `chat-${config.services.join("+")}-${process.pid}`;
  const cassandra = config.storeUrl.startsWith("cassandra://")
    ? await createCassandraStore({
        url: config.storeUrl,
        retentionMs: config.retentionMs,
        refreshTtlMs: config.refreshTokenTtlMs,
        clock,
        nats: { servers: config.busUrl, name: `${connectionName}-store` },
        prefix: config.namespace,
        migrate: config.migrate,
        timeline: { replicas: config.timelineReplicas },
        sequencer: { publishLingerMs: config.timelinePublishLingerMs },
      })
    : undefined;
  const sqlitePath = config.storeUrl.slice("sqlite:".length);
  let sqlite: SqliteStore | undefined;
  const store: Store =
    cassandra ??
    (sqlite = createSqliteStore({
      path: sqlitePath,
      retentionMs: config.retentionMs,
      clock,
      onBackgroundError: (err) => logger.error({ err }, "sqlite background work failed"),
      ...(observers.onStoreCommit ? { onCommit: observers.onStoreCommit } : {}),
    }));
  try {
    let feed: EventFeed & { close(): Promise<void> };
    if (cassandra) {
      feed = await createJetStreamEventFeed({ nc: cassandra.nc, names: cassandra.names, logger });
    } else {
      const inMemory = sqlitePath === ":memory:" || sqlitePath === "";
      feed = createSqliteEventFeed({
        ...(inMemory && sqlite ? { db: sqlite.db } : { path: sqlitePath }),
        onError: (err) => logger.warn({ err }, "event feed background work failed"),
      });
    }
    closers.push(() => feed.close());
    if (cassandra) {
      checks.push({ name: "cassandra", critical: true, healthy: () => cassandra.isHealthy() });
      if (config.services.includes("message")) {
        // Every membership event passes the persister exactly once (one durable consumer for all message
        // processes): it invalidates the membership cache even when the process that made the change died.
        const persister = await startPersister({
          nc: cassandra.nc,
          names: cassandra.names,
          tables: cassandra.tables,
          logger,
          afterWrite: async (event) => {
            const b = event.body;
            if (b.type === "member_added" || b.type === "member_removed" || b.type === "member_role_changed") {
              await cacheRef?.invalidate(event.groupId, b.member.id);
            }
          },
        });
        closers.push(() => persister.stop());
      }
    }
    const backends = await openRest(config, clock, logger, store, feed, closers, checks, connectionName, cassandra !== undefined);
    cacheRef = backends.cache;
    return backends;
  } catch (e) {
    for (const close of closers.reverse()) await close().catch(() => {});
    await store.close().catch(() => {});
    throw e;
  }
}

/** openRest opens the bus, cache and limiter around an open store (see openBackends). */
async function openRest(
  config: Config,
  clock: Clock,
  logger: Logger,
  store: Store,
  feed: EventFeed,
  closers: (() => Promise<void>)[],
  checks: BackendCheck[],
  connectionName: string,
  storePublishes: boolean,
): Promise<Backends> {
  let bus: EventBus;
  if (config.busUrl.startsWith("nats://")) {
    const nats = await createNatsEventBus({
      servers: config.busUrl.split(","),
      prefix: config.namespace,
      name: connectionName,
      logger,
      replicas: config.timelineReplicas,
      groupSubscriptions: config.busGroupSubscriptions,
    });
    bus = storePublishes ? storePublishesEvents(nats) : nats;
    checks.push({ name: "nats", critical: true, healthy: () => nats.isHealthy() });
  } else {
    bus = new MemoryEventBus();
  }
  closers.push(() => bus.close());

  let cache: MembershipCache;
  let recent: RecentMessages;
  let presence: Presence;
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
    recent = new RedisRecentMessages(client, { prefix, perGroup: config.recentMessagesPerGroup });
    presence = new RedisPresence(client, { prefix });
    limiter = new FallbackRateLimiter(new RedisRateLimiter(client, { prefix }), memoryLimiter, warn);
    checks.push({ name: "redis", critical: false, healthy: () => isRedisReady(client) });
  } else {
    cache = new MemoryMembershipCache({ maxEntries: 100_000, ttlMs: 60_000, now: () => clock.now() });
    recent = new MemoryRecentMessages({ perGroup: config.recentMessagesPerGroup, maxGroups: 10_000 });
    presence = new MemoryPresence(() => clock.now());
    limiter = memoryLimiter;
  }

  return {
    store,
    bus,
    cache,
    recent,
    presence,
    limiter,
    feed,
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
