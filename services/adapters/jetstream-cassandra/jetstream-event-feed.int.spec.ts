/**
 * JetStreamEventFeed: the EventFeed contract on the production deployment
 * (the CassandraStore sequencing every event on the JetStream timeline
 * stream; the shared nats-server, R1). Each feed the suite opens has a NATS
 * connection of its own, like a notifier process. Gated on CASSANDRA_URL
 * and NATS_URL; the run's keyspace and timeline stream (under a prefix of
 * its own) are dropped at the end.
 */
import { randomBytes } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { eventFeedContract } from "../../../test/contract/event-feed.contract.js";
import { openTestKeyspace } from "../../../test/support/test-keyspace.js";
import { systemClock } from "../../core/ports.js";
import { createCassandraStore } from "./cassandra-store.js";
import { createJetStreamEventFeed } from "./jetstream-event-feed.js";
import { NatsNames } from "./subjects.js";

const CASSANDRA_URL = process.env.CASSANDRA_URL;
const NATS_URL = process.env.NATS_URL;
const DAY = 86_400_000;

eventFeedContract(
  "jetstream (durable pull consumer per name) + cassandra store",
  async () => {
    const ks = await openTestKeyspace(CASSANDRA_URL ?? "", { retentionMs: 30 * DAY });
    const url = `cassandra://${ks.url.contactPoints.join(",")}/${ks.keyspace}?dc=${ks.url.localDataCenter}`;
    const prefix = `tef${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
    const names = new NatsNames(prefix);
    const store = await createCassandraStore({ url, retentionMs: 30 * DAY, refreshTtlMs: 30 * DAY, clock: systemClock, nats: { servers: NATS_URL ?? "" }, prefix });
    return {
      store,
      async openFeed() {
        const nc = await connect({ servers: NATS_URL ?? "", name: `${prefix}-feed` });
        const feed = await createJetStreamEventFeed({ nc, names, retryDelayMs: 100 });
        return {
          follow: (name, handler, opts) => feed.follow(name, handler, opts),
          async close() {
            await feed.close();
            await nc.close();
          },
        };
      },
      async dispose() {
        await store.close();
        const nc = await connect({ servers: NATS_URL ?? "", name: "chat-test-cleanup" });
        try {
          await (await jetstreamManager(nc)).streams.delete(names.timelineStream).catch(() => false);
        } finally {
          await nc.close();
        }
        await ks.drop();
      },
    };
  },
  { skip: CASSANDRA_URL && NATS_URL ? false : "CASSANDRA_URL and NATS_URL are not both set" },
);
