/**
 * Parsing of `STORE_URL=cassandra://...` into cassandra-driver options.
 *
 * Form: `cassandra://host[:port][,host2[:port]...]/keyspace[?dc=<local dc>&replication=<spec>]`
 * - hosts: names, IPv4 or bracketed IPv6 (`[::1]:9042`); the port defaults to 9042.
 * - keyspace: required; a plain CQL identifier (letter first, then letters,
 *   digits, `_`; at most 48 characters), case-folded to lower case as CQL does.
 * - `dc`: the local data center for load balancing (default `datacenter1`).
 * - `replication`: either a replication factor `N` for the local data center,
 *   or a list `dc1:3,dc2:3`; always NetworkTopologyStrategy (default 1).
 *   It is used only when the keyspace is created.
 */
import type { DseClientOptions } from "cassandra-driver";

/** DEFAULT_CQL_PORT is the native-protocol port used when a host names none. */
export const DEFAULT_CQL_PORT = 9042;

/** DEFAULT_LOCAL_DC is the local data center when the URL has no `dc`; it is the name a fresh single-node Cassandra uses. */
export const DEFAULT_LOCAL_DC = "datacenter1";

/** Replication is a keyspace replication map: `class` and one replication factor per data center. */
export interface Replication {
  readonly class: "NetworkTopologyStrategy";
  /** Replication factor per data center, each 1..99. */
  readonly dataCenters: Readonly<Record<string, number>>;
}

/** CassandraUrl is a parsed `cassandra://` URL. */
export interface CassandraUrl {
  /** `host:port` strings, in URL order, never empty. IPv6 hosts keep their brackets. */
  readonly contactPoints: readonly string[];
  readonly localDataCenter: string;
  /** Lower-case keyspace name, safe to splice into CQL. */
  readonly keyspace: string;
  readonly replication: Replication;
}

const IDENTIFIER = /^[A-Za-z][A-Za-z0-9_]{0,47}$/;
const DC_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** isCqlIdentifier tells whether s is a plain (unquoted) CQL identifier of at most 48 characters. */
export function isCqlIdentifier(s: string): boolean {
  return IDENTIFIER.test(s);
}

/**
 * parseCassandraUrl parses `url` (see the module comment). Throws an Error
 * naming the problem for any other scheme, a missing host or keyspace, a bad
 * port, an invalid keyspace or data-center name, a bad replication spec or an
 * unknown query parameter.
 */
export function parseCassandraUrl(url: string): CassandraUrl {
  const m = /^cassandra:\/\/([^/?#]*)(?:\/([^?#]*))?(?:\?([^#]*))?$/.exec(url);
  if (!m) throw new Error(`not a cassandra:// URL: ${JSON.stringify(url)}`);
  const [, hostList = "", path = "", query = ""] = m;
  const contactPoints = hostList.split(",").map((h) => parseHost(h, url));
  const keyspace = decodeURIComponent(path);
  if (keyspace === "") throw new Error(`cassandra URL has no keyspace (cassandra://host/keyspace): ${url}`);
  if (!isCqlIdentifier(keyspace)) {
    throw new Error(`invalid keyspace ${JSON.stringify(keyspace)}: use a letter, then letters, digits or _ (at most 48)`);
  }
  const params = new URLSearchParams(query);
  for (const key of params.keys()) {
    if (key !== "dc" && key !== "replication") throw new Error(`unknown cassandra URL parameter ${JSON.stringify(key)}`);
  }
  const localDataCenter = params.get("dc") ?? DEFAULT_LOCAL_DC;
  if (!DC_NAME.test(localDataCenter)) throw new Error(`invalid data center name ${JSON.stringify(localDataCenter)}`);
  const replication = parseReplication(params.get("replication") ?? "1", localDataCenter);
  return { contactPoints, localDataCenter, keyspace: keyspace.toLowerCase(), replication };
}

/**
 * cassandraClientOptions turns a parsed URL into cassandra-driver Client
 * options. The keyspace is deliberately NOT set (it may not exist yet: create
 * it with createKeyspace, then qualify names or use `client.execute("USE ...")`).
 * Defaults: LOCAL_QUORUM reads and writes, LOCAL_SERIAL for LWTs, numbers
 * (not BigInt) as the JS side of `bigint` parameters.
 */
export function cassandraClientOptions(u: CassandraUrl): DseClientOptions {
  return {
    contactPoints: [...u.contactPoints],
    localDataCenter: u.localDataCenter,
    queryOptions: { consistency: CONSISTENCY_LOCAL_QUORUM, serialConsistency: CONSISTENCY_LOCAL_SERIAL },
  };
}

/** Values of cassandra-driver `types.consistencies` (repeated here so this module needs no runtime import). */
export const CONSISTENCY_LOCAL_QUORUM = 0x06;
/** CONSISTENCY_LOCAL_SERIAL is `types.consistencies.localSerial`. */
export const CONSISTENCY_LOCAL_SERIAL = 0x09;

/** replicationCql renders a Replication as a CQL map literal, e.g. `{'class': 'NetworkTopologyStrategy', 'dc1': 3}`. */
export function replicationCql(r: Replication): string {
  const entries = Object.entries(r.dataCenters);
  if (entries.length === 0) throw new Error("replication names no data center");
  const parts = [`'class': '${r.class}'`];
  for (const [dc, rf] of entries) {
    if (!DC_NAME.test(dc)) throw new Error(`invalid data center name ${JSON.stringify(dc)}`);
    if (!Number.isInteger(rf) || rf < 1 || rf > 99) throw new Error(`invalid replication factor ${rf} for ${dc}`);
    parts.push(`'${dc}': ${rf}`);
  }
  return `{${parts.join(", ")}}`;
}

function parseHost(raw: string, url: string): string {
  const h = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(raw);
  if (!h) throw new Error(`invalid host ${JSON.stringify(raw)} in cassandra URL ${url}`);
  const [, host = "", portText] = h;
  const port = portText === undefined ? DEFAULT_CQL_PORT : Number(portText);
  if (port < 1 || port > 65535) throw new Error(`invalid port ${portText} in cassandra URL ${url}`);
  return `${host}:${port}`;
}

function parseReplication(spec: string, localDataCenter: string): Replication {
  const rf = (text: string): number => {
    if (!/^\d{1,2}$/.test(text) || Number(text) < 1) throw new Error(`invalid replication factor ${JSON.stringify(text)}`);
    return Number(text);
  };
  if (/^\d+$/.test(spec)) return { class: "NetworkTopologyStrategy", dataCenters: { [localDataCenter]: rf(spec) } };
  const dataCenters: Record<string, number> = {};
  for (const part of spec.split(",")) {
    const [dc = "", factor = "", ...rest] = part.split(":");
    if (rest.length > 0 || !DC_NAME.test(dc)) throw new Error(`invalid replication ${JSON.stringify(spec)} (use N or dc1:3,dc2:3)`);
    if (dc in dataCenters) throw new Error(`replication names ${dc} twice`);
    dataCenters[dc] = rf(factor);
  }
  return { class: "NetworkTopologyStrategy", dataCenters };
}
