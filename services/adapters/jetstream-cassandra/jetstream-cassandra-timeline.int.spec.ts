/**
 * The Timeline contract on the production deployment: the JetStream log
 * (slots, acked on the stream's quorum; the shared nats-server here, R1; the
 * R3 cluster runs in test/int/timeline-cluster.int.spec.ts) with Cassandra
 * written by the persister, reads merging the log's not-yet-persisted tail,
 * and live delivery by the log's republish (NatsEventBus). Each writer has
 * its own NATS and Cassandra connections, and publishes with a 5 ms linger
 * (SequencerOptions.publishLingerMs), so racing appends also meet in one
 * batch of publishes. Gated on CASSANDRA_URL and NATS_URL.
 */
import { randomBytes } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { timelineContract } from "../../../test/contract/timeline.contract.js";
import { systemClock } from "../../core/ports.js";
import { StoreTimeline } from "../../core/timeline.js";
import { createNatsEventBus } from "./nats-event-bus.js";
import { NatsNames } from "./subjects.js";
import { createCassandraStore } from "./cassandra-store.js";
import { startPersister } from "./persister.js";
import { openTestKeyspace } from "../../../test/support/test-keyspace.js";

const CASSANDRA_URL = process.env.CASSANDRA_URL;
const NATS_URL = process.env.NATS_URL;
const DAY = 86_400_000;

timelineContract(
  "production (JetStream log + Cassandra via the persister + republish)",
  async () => {
    const ks = await openTestKeyspace(CASSANDRA_URL ?? "", { retentionMs: 30 * DAY });
    const url = `cassandra://${ks.url.contactPoints.join(",")}/${ks.keyspace}?dc=${ks.url.localDataCenter}`;
    const prefix = `ttl${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
    const openStore = () => createCassandraStore({ url, retentionMs: 30 * DAY, refreshTtlMs: 30 * DAY, clock: systemClock, nats: { servers: NATS_URL ?? "" }, prefix, sequencer: { publishLingerMs: 5 } });
    const persisterStore = await openStore();
    const persister = await startPersister({ nc: persisterStore.nc, names: persisterStore.names, tables: persisterStore.tables });
    return {
      async open(fault) {
        const store = await openStore();
        const bus = await createNatsEventBus({ servers: NATS_URL ?? "", prefix, name: "timeline-contract" });
        return {
          store,
          timeline: new StoreTimeline(store, bus, { storePublishes: true, ...(fault ? { fault } : {}) }),
          close: async () => {
            await bus.close();
            await store.close();
          },
        };
      },
      async dispose() {
        await persister.stop();
        await persisterStore.close();
        const nc = await connect({ servers: NATS_URL ?? "" });
        await (await jetstreamManager(nc)).streams.delete(new NatsNames(prefix).timelineStream).catch(() => false);
        await nc.close();
        await ks.drop();
      },
    };
  },
  { skip: CASSANDRA_URL && NATS_URL ? false : "CASSANDRA_URL and NATS_URL are not both set" },
);
