import assert from "node:assert/strict";
import { describe, it } from "node:test";
import cassandra from "cassandra-driver";
import {
  CONSISTENCY_LOCAL_QUORUM,
  CONSISTENCY_LOCAL_SERIAL,
  cassandraClientOptions,
  parseCassandraUrl,
  replicationCql,
} from "./cassandra-url.js";

describe("parseCassandraUrl", () => {
  it("parses one host with defaults", () => {
    assert.deepEqual(parseCassandraUrl("cassandra://127.0.0.1/chat"), {
      contactPoints: ["127.0.0.1:9042"],
      localDataCenter: "datacenter1",
      keyspace: "chat",
      replication: { class: "NetworkTopologyStrategy", dataCenters: { datacenter1: 1 } },
    });
  });

  it("parses several hosts, ports, IPv6, dc and a replication factor", () => {
    const u = parseCassandraUrl("cassandra://a.example:9043,b.example,[::1]:19042/Chat_1?dc=eu-west&replication=3");
    assert.deepEqual(u.contactPoints, ["a.example:9043", "b.example:9042", "[::1]:19042"]);
    assert.equal(u.localDataCenter, "eu-west");
    assert.equal(u.keyspace, "chat_1", "keyspace is folded to lower case like an unquoted CQL name");
    assert.deepEqual(u.replication.dataCenters, { "eu-west": 3 });
  });

  it("parses a per-data-center replication list", () => {
    const u = parseCassandraUrl("cassandra://h/ks?replication=dc1:3,dc2:2");
    assert.deepEqual(u.replication, { class: "NetworkTopologyStrategy", dataCenters: { dc1: 3, dc2: 2 } });
    assert.equal(replicationCql(u.replication), "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}");
  });

  for (const [url, why] of [
    ["redis://h/ks", "other scheme"],
    ["cassandra:///ks", "no host"],
    ["cassandra://h", "no keyspace"],
    ["cassandra://h/", "empty keyspace"],
    ["cassandra://h/1ks", "keyspace starting with a digit"],
    ["cassandra://h/ks;drop", "keyspace with punctuation"],
    [`cassandra://h/${"k".repeat(49)}`, "keyspace too long"],
    ["cassandra://h:0/ks", "port 0"],
    ["cassandra://h:70000/ks", "port too large"],
    ["cassandra://h,,i/ks", "empty host"],
    ["cassandra://h/ks?replication=0", "replication 0"],
    ["cassandra://h/ks?replication=dc1", "replication without factor"],
    ["cassandra://h/ks?replication=dc1:3,dc1:2", "data center twice"],
    ["cassandra://h/ks?dc=a'b", "quote in dc"],
    ["cassandra://h/ks?consistency=one", "unknown parameter"],
  ] as const) {
    it(`rejects ${why}`, () => {
      assert.throws(() => parseCassandraUrl(url), Error);
    });
  }
});

describe("cassandraClientOptions", () => {
  it("sets contact points, local dc and LOCAL_QUORUM / LOCAL_SERIAL, but no keyspace", () => {
    const o = cassandraClientOptions(parseCassandraUrl("cassandra://127.0.0.1:9042,127.0.0.2/chat?dc=dc9"));
    assert.deepEqual(o.contactPoints, ["127.0.0.1:9042", "127.0.0.2:9042"]);
    assert.equal(o.localDataCenter, "dc9");
    assert.equal(o.keyspace, undefined);
    assert.equal(o.queryOptions?.consistency, cassandra.types.consistencies.localQuorum);
    assert.equal(o.queryOptions?.serialConsistency, cassandra.types.consistencies.localSerial);
    assert.equal(CONSISTENCY_LOCAL_QUORUM, cassandra.types.consistencies.localQuorum);
    assert.equal(CONSISTENCY_LOCAL_SERIAL, cassandra.types.consistencies.localSerial);
  });
});
