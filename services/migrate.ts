/**
 * `npm run migrate`: applies the store's schema migrations and exits,
 * configured by the same environment as the server (server/config.ts).
 *
 * - cassandra:// STORE_URL: creates the keyspace if missing (with the URL's
 *   replication) and applies every pending versioned migration; also aligns
 *   the expiring tables' TTL with RETENTION. Safe to run while servers run
 *   and from several hosts at once (migrations.ts takes a lease).
 * - sqlite: STORE_URL: opens the database, which applies its migrations.
 *
 * Exit codes: 0 done, 1 the migration failed, 2 invalid configuration.
 */
import { migrateCassandra } from "./adapters/jetstream-cassandra/cassandra-store.js";
import { createSqliteStore } from "./adapters/sqlite/sqlite-store.js";
import { systemClock } from "./core/ports.js";
import { ConfigError, loadConfig } from "./server/config.js";

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  if (config.storeUrl.startsWith("cassandra://")) {
    const result = await migrateCassandra(config.storeUrl, config.retentionMs);
    const applied = result.applied.length > 0 ? `applied ${result.applied.join(", ")}` : "nothing to apply";
    const ttl = result.retentionUpdated.length > 0 ? `; retention updated on ${result.retentionUpdated.join(", ")}` : "";
    process.stdout.write(`cassandra migrations: ${applied}${ttl}\n`);
    return;
  }
  const store = createSqliteStore({ path: config.storeUrl.slice("sqlite:".length), retentionMs: config.retentionMs, clock: systemClock });
  await store.close();
  process.stdout.write(`sqlite migrations: ${config.storeUrl} is up to date\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`migration failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
