/**
 * Test support: a private keyspace per test run on a shared Cassandra, so
 * runs never see each other's rows; `drop` removes it. Used by the
 * `*.int.spec.ts` files (gated on CASSANDRA_URL).
 */
import { randomBytes } from "node:crypto";
import cassandra from "cassandra-driver";
import type { Client } from "cassandra-driver";
import { cassandraClientOptions, parseCassandraUrl } from "../../services/adapters/jetstream-cassandra/cassandra-url.js";
import type { CassandraUrl } from "../../services/adapters/jetstream-cassandra/cassandra-url.js";
import { createKeyspace, migrate } from "../../services/adapters/jetstream-cassandra/migrations.js";
import type { MigrateResult } from "../../services/adapters/jetstream-cassandra/migrations.js";

/** TestKeyspace is a fresh keyspace and a client connected to its cluster. */
export interface TestKeyspace {
  readonly client: Client;
  readonly keyspace: string;
  readonly url: CassandraUrl;
  /** The result of the migration run by openTestKeyspace (undefined when not migrated). */
  readonly migrated: MigrateResult | undefined;
  /** newClient connects another client to the same cluster (closed by drop). */
  newClient(): Promise<Client>;
  /** drop drops the keyspace and shuts every client down. */
  drop(): Promise<void>;
}

/**
 * openTestKeyspace connects to the cluster of `baseUrl` and creates the
 * keyspace `<url keyspace>_<random>` (migrated with `retentionMs` unless
 * `migrate` is false).
 */
export async function openTestKeyspace(
  baseUrl: string,
  opts: { retentionMs?: number; migrate?: boolean } = {},
): Promise<TestKeyspace> {
  const url = parseCassandraUrl(baseUrl);
  const keyspace = `${url.keyspace.slice(0, 30)}_${randomBytes(6).toString("hex")}`;
  const clients: Client[] = [];
  const newClient = async () => {
    const c = new cassandra.Client(cassandraClientOptions(url));
    await c.connect();
    clients.push(c);
    return c;
  };
  const client = await newClient();
  await createKeyspace(client, keyspace, url.replication);
  const migrated =
    opts.migrate === false
      ? undefined
      : await migrate(client, keyspace, { retentionMs: opts.retentionMs ?? 30 * 86_400_000 });
  return {
    client,
    keyspace,
    url,
    migrated,
    newClient,
    async drop() {
      try {
        await client.execute(`DROP KEYSPACE IF EXISTS ${keyspace}`);
      } finally {
        await Promise.all(clients.map((c) => c.shutdown()));
      }
    },
  };
}
