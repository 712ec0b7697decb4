/**
 * What a JetStream R3 file stream on a three-node cluster (nats-server
 * 2.9.10, PrivateNatsCluster) guarantees to the timeline, measured: the
 * groundwork of "One timeline, by contract" (the send's ack comes from an R3
 * stream). Gated on NATS_URL like the other integration specs (it never uses
 * that server: every node is a private child process).
 *
 * a. Compare-and-set under concurrency: two clients on different nodes
 *    publish to one subject at once with the same
 *    Nats-Expected-Last-Subject-Sequence: how many rounds store both? (On
 *    2.9.10 R3: many. See the comment above test a.)
 * b. Dedupe across nodes: one Nats-Msg-Id published via two nodes at once.
 * c. SIGKILL of the stream leader mid-traffic: the ack gap, no acked message
 *    lost, and the restarted node catching up.
 * d. Republish to a core subscriber on a follower: duplicates and gaps in
 *    normal operation (asserted none) and across the leader kill (reported).
 *
 * Every measured figure is printed as a `[cluster-facts]` line.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { RequestError, connect, headers, nanos } from "@nats-io/transport-node";
import type { Msg, MsgHdrs, NatsConnection, Subscription } from "@nats-io/transport-node";
import { jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import type { JetStreamManager, StreamConfig } from "@nats-io/jetstream";
import { PrivateNatsCluster } from "../../../test/support/private-nats-cluster.js";

const NATS_URL = process.env.NATS_URL;
const run = `jsc${Date.now().toString(36)}${randomBytes(2).toString("hex")}`;
/** WRONG_LAST_SEQUENCE is JetStream's err_code for a failed Nats-Expected-Last-Subject-Sequence. */
const WRONG_LAST_SEQUENCE = 10071;
const enc = new TextEncoder();

function fact(what: string, value: unknown): void {
  console.log(`[cluster-facts] ${what}: ${typeof value === "string" ? value : JSON.stringify(value)}`);
}

/** PubAck is a JetStream publish reply: stored (seq, maybe duplicate), or refused (err_code). */
type PubAck = { ok: true; seq: number; duplicate: boolean } | { ok: false; code: number; errCode: number; description: string };

function parseAck(m: Msg): PubAck {
  const status = m.headers?.code;
  if (m.data.length === 0) return { ok: false, code: status ?? 0, errCode: 0, description: m.headers?.description ?? "empty reply" };
  const j = JSON.parse(new TextDecoder().decode(m.data)) as { seq?: number; duplicate?: boolean; error?: { code: number; err_code: number; description: string } };
  if (j.error) return { ok: false, code: j.error.code, errCode: j.error.err_code, description: j.error.description };
  return { ok: true, seq: j.seq ?? 0, duplicate: j.duplicate === true };
}

/**
 * jsPublish publishes with `hdrs` and resolves with the JetStream reply (a timeout rejects). "No responders" is
 * retried for up to 2 s: a stream just added has its subjects' interest on the other nodes of the cluster only
 * once that news has reached them, and a publish nobody received stored nothing, so sending it again changes
 * nothing a round counts.
 */
async function jsPublish(nc: NatsConnection, subject: string, body: string, hdrs: MsgHdrs, timeoutMs = 2_000): Promise<PubAck> {
  const giveUp = Date.now() + 2_000;
  for (;;) {
    try {
      return parseAck(await nc.request(subject, enc.encode(body), { headers: hdrs, timeout: timeoutMs }));
    } catch (e) {
      if (!(e instanceof RequestError && e.isNoResponders()) || Date.now() > giveUp) throw e;
      await sleep(20);
    }
  }
}

function hdrs(values: Record<string, string>): MsgHdrs {
  const h = headers();
  for (const [k, v] of Object.entries(values)) h.set(k, v);
  return h;
}

function r3Stream(name: string, prefix: string, extra: Partial<StreamConfig> = {}): Partial<StreamConfig> & { name: string } {
  return {
    name,
    subjects: [`${prefix}.group.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    num_replicas: 3,
    duplicate_window: nanos(120_000),
    ...extra,
  };
}

/** retry calls `fn` until it resolves, at most `attempts` times within `ms`. */
async function retry<T>(what: string, ms: number, fn: () => Promise<T>, attempts = 50): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (let i = 0; i < attempts && Date.now() < deadline; i++) {
    try {
      return await fn();
    } catch (e) {
      last = e;
      await sleep(100);
    }
  }
  throw new Error(`${what}: gave up after ${ms} ms: ${String(last)}`);
}

describe("JetStream R3 stream on a 3-node cluster (integration)", { skip: NATS_URL ? false : "NATS_URL not set", timeout: 90_000 }, () => {
  let cluster: PrivateNatsCluster;
  /** nc[i] is pinned to node i (it only ever reconnects to node i). */
  const nc: NatsConnection[] = [];
  let jsm: JetStreamManager;

  before(async () => {
    const t0 = Date.now();
    cluster = await PrivateNatsCluster.start();
    fact("cluster up (3 nodes, meta leader agreed) ms", Date.now() - t0);
    for (let i = 0; i < cluster.size; i++) {
      nc.push(await connect({ servers: cluster.url(i), ignoreClusterUpdates: true, maxReconnectAttempts: -1, reconnectTimeWait: 200, name: `jsc-n${i}` }));
    }
    const any = await connect({ servers: cluster.urls.split(","), name: "jsc-admin", maxReconnectAttempts: -1, reconnectTimeWait: 200 });
    nc.push(any);
    jsm = await jetstreamManager(any, { timeout: 5_000 });
  });

  after(async () => {
    await Promise.all(nc.map((c) => c.close().catch(() => undefined)));
    await cluster?.dispose();
  });

  /**
   * casRounds runs `lanes` subjects in parallel, `roundsPerLane` rounds each:
   * per round two clients on two different nodes (rotating over the pairs)
   * publish to the lane's subject in the same turn of the event loop with the
   * same Nats-Expected-Last-Subject-Sequence (the subject's last stored seq;
   * with `fresh`, every round uses a new subject and expects 0) and distinct
   * Nats-Msg-Ids. It returns what was acked, refused and stored.
   */
  async function casRounds(label: string, prefix: string, replicas: number, lanes: number, roundsPerLane: number, fresh = false, sameNode = false) {
    const name = `${prefix.toUpperCase()}_CAS`;
    await jsm.streams.add(r3Stream(name, prefix, { num_replicas: replicas }));
    const pairs: [number, number][] = sameNode
      ? [
          [0, 0],
          [1, 1],
          [2, 2],
        ]
      : [
          [0, 1],
          [1, 2],
          [2, 0],
        ];
    const stats = { rounds: 0, oneStored: 0, bothStored: 0, noneStored: 0, refused10071: 0, otherErrors: [] as string[], acked: 0 };
    const doubleStores: { lane: number; round: number; expected: number; nodes: [number, number]; seqs: number[] }[] = [];
    /** byKind counts rounds and double stores by whether the expected seq was 0 and whether one client was on the stream leader. */
    const byKind: Record<string, { rounds: number; bothStored: number }> = {};
    const streamLeader = cluster.indexOf((await jsm.streams.info(name)).cluster?.leader);
    const deadline = Date.now() + 15_000;
    const t0 = Date.now();
    await Promise.all(
      Array.from({ length: lanes }, async (_, lane) => {
        let expected = 0;
        for (let round = 0; round < roundsPerLane && Date.now() < deadline; round++) {
          const subject = fresh ? `${prefix}.group.cas${lane}r${round}` : `${prefix}.group.cas${lane}`;
          const [x, y] = pairs[(lane + round) % pairs.length] ?? [0, 1];
          const cx = nc[x];
          const cy = nc[y];
          assert.ok(cx && cy);
          // Both requests are written in the same turn of the event loop, on connections to different nodes.
          const [ra, rb] = await Promise.all([
            jsPublish(cx, subject, `l${lane}r${round}A`, hdrs({ "Nats-Msg-Id": `${lane}:${round}:A`, "Nats-Expected-Last-Subject-Sequence": String(expected) })),
            jsPublish(cy, subject, `l${lane}r${round}B`, hdrs({ "Nats-Msg-Id": `${lane}:${round}:B`, "Nats-Expected-Last-Subject-Sequence": String(expected) })),
          ]);
          stats.rounds++;
          const stored = [ra, rb].filter((r): r is Extract<PubAck, { ok: true }> => r.ok);
          stats.acked += stored.length;
          for (const r of [ra, rb]) {
            if (r.ok) continue;
            if (r.errCode === WRONG_LAST_SEQUENCE) stats.refused10071++;
            else stats.otherErrors.push(`${r.code}/${r.errCode} ${r.description}`);
          }
          const kind = `expected${expected === 0 ? "=0" : ">0"}, ${x === streamLeader || y === streamLeader ? "one client on the stream leader" : "both clients on followers"}`;
          const k = (byKind[kind] ??= { rounds: 0, bothStored: 0 });
          k.rounds++;
          if (stored.length === 1) stats.oneStored++;
          else if (stored.length === 2) {
            stats.bothStored++;
            k.bothStored++;
            doubleStores.push({ lane, round, expected, nodes: [x, y], seqs: stored.map((s) => s.seq) });
          } else stats.noneStored++;
          if (fresh) continue;
          if (stored.length > 0) expected = Math.max(...stored.map((s) => s.seq));
          else break;
        }
      }),
    );
    const ms = Date.now() - t0;
    // What the stream holds: every ack is a stored message and nothing unacked is stored.
    const storedTotal = (await jsm.streams.info(name)).state.messages;
    // Each replica's own copy (the nodes' /jsz): do the replicas agree on what was stored?
    let replicaStates: ({ messages: number; lastSeq: number } | undefined)[] = [];
    for (const until = Date.now() + 3_000; Date.now() < until; ) {
      replicaStates = await Promise.all([0, 1, 2].map(async (i) => cluster.streamState(i, name).then((st) => (st ? { messages: st.messages, lastSeq: st.lastSeq } : undefined))));
      const held = replicaStates.filter((st) => st !== undefined);
      if (held.length === replicas && held.every((st) => st.messages === storedTotal)) break;
      await sleep(100);
    }
    const rate = `${stats.bothStored}/${stats.rounds} (${((100 * stats.bothStored) / Math.max(1, stats.rounds)).toFixed(1)} %)`;
    fact(`CAS ${label}`, { ...stats, doubleStoreRate: rate, ms, storedTotal, replicaStates, streamLeader, otherErrors: stats.otherErrors.slice(0, 5) });
    fact(`CAS ${label} by kind`, byKind);
    if (doubleStores.length > 0) fact(`CAS ${label}: !!! BOTH PROPOSALS STORED in ${rate} rounds; sample`, doubleStores.slice(0, 4));
    await jsm.streams.delete(name);
    return { stats, storedTotal, byKind, replicaStates };
  }

  /*
   * The measured truth on nats-server 2.9.10 (every run so far): on an R3
   * stream, when two proposals with the same expected subject sequence (> 0)
   * are in flight together, BOTH are stored and both acked in a large share
   * of rounds: 7-54 % with 25 subjects racing at once, ~77 % on one subject
   * with no other traffic, ~90 % when both go through the same connection.
   * Consistent with the expected sequence being checked against the leader's
   * store before the entry is replicated, with nothing tracking proposals in
   * flight. The replicas agree with each other (all hold both). An R1 stream
   * on the same cluster, and expected 0 on a fresh subject, were always
   * exclusive. The tests below assert what holds (every ack is a stored
   * message; every refusal is 10071; R1 and expected-0 are exclusive) and
   * record the R3 double-store rate (`!!! BOTH PROPOSALS STORED`) without
   * asserting it away, or asserting it must happen: the next issue's design
   * must not rely on Nats-Expected-Last-Subject-Sequence being exclusive on a
   * replicated stream of this server version.
   */
  it("a. concurrent compare-and-set via two nodes, R3: every ack is stored; double stores recorded (2.9.10 stores both in a share of rounds)", async () => {
    const { stats, storedTotal, replicaStates } = await casRounds("R3, same subject, expected = last seq", `${run}a`, 3, 25, 40);
    assert.equal(stats.otherErrors.length, 0, `unexpected errors: ${stats.otherErrors.slice(0, 5).join("; ")}`);
    assert.deepEqual(
      replicaStates.map((st) => st?.messages),
      [storedTotal, storedTotal, storedTotal],
      "all three replicas hold what the leader acked (double stores included)",
    );
    assert.ok(stats.rounds >= 500, `only ${stats.rounds} rounds within the time bound`);
    assert.equal(storedTotal, stats.acked, "every ack is a stored message, and only acked messages are stored");
    assert.equal(stats.noneStored, 0, "every round stores at least one proposal");
    assert.equal(stats.oneStored + stats.bothStored, stats.rounds);
    assert.equal(stats.refused10071, stats.oneStored, "every refusal is 10071 (wrong last sequence)");
  });

  it("a1. the same race with no other traffic (1 subject), and via one connection per round (both proposals through the same node): reported", async () => {
    const quiet = await casRounds("R3, 1 subject only, expected = last seq", `${run}aq`, 3, 1, 200);
    const oneConn = await casRounds("R3, both proposals via the same connection, expected = last seq", `${run}as`, 3, 25, 12, false, true);
    for (const { stats, storedTotal } of [quiet, oneConn]) {
      assert.equal(stats.otherErrors.length, 0, `unexpected errors: ${stats.otherErrors.slice(0, 5).join("; ")}`);
      assert.equal(storedTotal, stats.acked, "every ack is a stored message, and only acked messages are stored");
      assert.equal(stats.oneStored + stats.bothStored, stats.rounds);
    }
  });

  it("a2. concurrent compare-and-set on fresh subjects (expected 0), R3: exactly one stored per round", async () => {
    const { stats, storedTotal } = await casRounds("R3, fresh subject, expected = 0", `${run}a0`, 3, 25, 12, true);
    assert.equal(stats.otherErrors.length, 0, `unexpected errors: ${stats.otherErrors.slice(0, 5).join("; ")}`);
    assert.equal(storedTotal, stats.acked);
    assert.equal(stats.oneStored, stats.rounds, `${stats.bothStored} rounds stored both`);
    assert.equal(stats.refused10071, stats.rounds);
  });

  it("a3. control: the same concurrent compare-and-set on an R1 stream of the cluster: exactly one stored per round", async () => {
    const { stats, storedTotal } = await casRounds("R1 (control), same subject, expected = last seq", `${run}a1`, 1, 25, 12);
    assert.equal(stats.otherErrors.length, 0, `unexpected errors: ${stats.otherErrors.slice(0, 5).join("; ")}`);
    assert.equal(storedTotal, stats.acked);
    assert.equal(stats.oneStored, stats.rounds, `${stats.bothStored} rounds stored both`);
    assert.equal(stats.refused10071, stats.rounds);
  });

  it("b. the same Nats-Msg-Id published via two nodes at once is stored once", async () => {
    const prefix = `${run}b`;
    const name = `${prefix.toUpperCase()}_DEDUPE`;
    await jsm.streams.add(r3Stream(name, prefix));
    const rounds = 300;
    const stats = { rounds: 0, storedOnce: 0, sameSeqBothAcks: 0, oneDuplicateFlag: 0, errors: [] as string[] };
    const deadline = Date.now() + 15_000;
    for (let r = 0; r < rounds && Date.now() < deadline; r++) {
      const x = r % 3;
      const y = (r + 1) % 3;
      const cx = nc[x];
      const cy = nc[y];
      assert.ok(cx && cy);
      const id = `dup-${r}`;
      const subject = `${prefix}.group.g${r % 7}`;
      const [ra, rb] = await Promise.all([jsPublish(cx, subject, `${r}`, hdrs({ "Nats-Msg-Id": id })), jsPublish(cy, subject, `${r}`, hdrs({ "Nats-Msg-Id": id }))]);
      stats.rounds++;
      if (!ra.ok || !rb.ok) {
        stats.errors.push(`${JSON.stringify(ra)} ${JSON.stringify(rb)}`);
        continue;
      }
      if (ra.seq === rb.seq) stats.sameSeqBothAcks++;
      if (ra.duplicate !== rb.duplicate) stats.oneDuplicateFlag++;
    }
    const info = await jsm.streams.info(name);
    stats.storedOnce = info.state.messages;
    fact("dedupe across nodes (same Nats-Msg-Id via two nodes at once)", { ...stats, errors: stats.errors.slice(0, 5) });
    assert.equal(stats.errors.length, 0, stats.errors.slice(0, 5).join("; "));
    assert.ok(stats.rounds >= 200, `only ${stats.rounds} rounds within the time bound`);
    assert.equal(info.state.messages, stats.rounds, "each Nats-Msg-Id stored once");
    assert.equal(stats.sameSeqBothAcks, stats.rounds, "both publishers are acked with the same stream sequence");
    assert.equal(stats.oneDuplicateFlag, stats.rounds, "exactly one of the two acks says duplicate");
    await jsm.streams.delete(name);
  });

  it("c+d. republish in order to a follower's subscriber; SIGKILL of the stream leader mid-traffic loses no acked message; the restarted node's catch-up is measured", async () => {
    const prefix = `${run}c`;
    const name = `${prefix.toUpperCase()}_TIMELINE`;
    await jsm.streams.add(r3Stream(name, prefix, { republish: { src: `${prefix}.group.>`, dest: `${prefix}.tail.>`, headers_only: false } }));
    const leaderName = (await jsm.streams.info(name)).cluster?.leader;
    const leader = cluster.indexOf(leaderName);
    assert.ok(leader >= 0, `stream leader ${leaderName} is one of ours`);
    const followers = [0, 1, 2].filter((i) => i !== leader);
    const pubNode = followers[0] ?? 0;
    const subNode = followers[1] ?? 0;
    const pub = nc[pubNode];
    const subConn = nc[subNode];
    assert.ok(pub && subConn);

    // The republish subscriber on a follower records each Nats-Sequence it receives.
    const received: number[] = [];
    const sub: Subscription = subConn.subscribe(`${prefix}.tail.>`, {
      callback: (err, m) => {
        if (err) return;
        received.push(Number(m.headers?.get("Nats-Sequence") ?? "0"));
      },
    });
    await subConn.flush();

    /** tally counts duplicates, out-of-order arrivals and never-received seqs among received[from..] for seqs in [lo, hi]. */
    const tally = (from: number, lo: number, hi: number) => {
      const seen = new Map<number, number>();
      let outOfOrder = 0;
      let max = 0;
      for (const s of received.slice(from)) {
        seen.set(s, (seen.get(s) ?? 0) + 1);
        if (s < max) outOfOrder++;
        max = Math.max(max, s);
      }
      let duplicates = 0;
      for (const n of seen.values()) if (n > 1) duplicates += n - 1;
      const missing: number[] = [];
      for (let s = lo; s <= hi; s++) if (!seen.has(s)) missing.push(s);
      return { received: received.length - from, duplicates, outOfOrder, missing: missing.length, missingSample: missing.slice(0, 10) };
    };
    const waitReceived = async (n: number, ms: number) => {
      const deadline = Date.now() + ms;
      while (received.length < n && Date.now() < deadline) await sleep(20);
    };

    // d (normal operation): a few thousand messages, 64 in flight, via the other follower.
    const normal = 3_000;
    const t0 = Date.now();
    const acks: number[] = [];
    for (let base = 0; base < normal; base += 64) {
      const batch = Array.from({ length: Math.min(64, normal - base) }, (_, k) => base + k);
      const res = await Promise.all(batch.map((n) => jsPublish(pub, `${prefix}.group.g${n % 10}`, `n${n}`, hdrs({ "Nats-Msg-Id": `n${n}` }))));
      for (const r of res) {
        assert.ok(r.ok, JSON.stringify(r));
        acks.push(r.seq);
      }
    }
    const publishMs = Date.now() - t0;
    await waitReceived(normal, 5_000);
    const normalTally = tally(0, 1, normal);
    fact("republish, normal operation (3000 msgs, subscriber on a follower)", { publishMs, ...normalTally });
    assert.equal(normalTally.duplicates, 0);
    assert.equal(normalTally.outOfOrder, 0);
    assert.equal(normalTally.missing, 0);
    assert.equal(normalTally.received, normal);

    // c: sequential publishes (each retried with its Nats-Msg-Id until acked), SIGKILL of the leader after 500 ms.
    const fromIndex = received.length;
    const acked = new Map<string, number>();
    const ackTimes: number[] = [];
    const retriesByError: Record<string, number> = {};
    let stop = false;
    let tKill = Number.POSITIVE_INFINITY;
    /** firstAckOfAttemptAfterKill is when the first publish attempt sent after the kill was acked. */
    let firstAckOfAttemptAfterKill: number | undefined;
    let unacked = 0;
    let n = 0;
    const errorSamples: string[] = [];
    /** 16 publishers, each one publish at a time, so about 16 are in flight when the leader dies. */
    const publisher = async () => {
      const hardDeadline = Date.now() + 30_000;
      while (!stop && Date.now() < hardDeadline && n < 40_000) {
        const idx = n++;
        const id = `f${idx}`;
        let done = false;
        for (let attempt = 0; attempt < 400 && !done && Date.now() < hardDeadline; attempt++) {
          try {
            const sentAt = Date.now();
            const r = await jsPublish(pub, `${prefix}.group.g${idx % 10}`, id, hdrs({ "Nats-Msg-Id": id }), 500);
            if (r.ok) {
              acked.set(id, r.seq);
              ackTimes.push(Date.now());
              if (sentAt > tKill) firstAckOfAttemptAfterKill ??= Date.now();
              done = true;
            } else {
              retriesByError[`${r.code}/${r.errCode}`] = (retriesByError[`${r.code}/${r.errCode}`] ?? 0) + 1;
              await sleep(50);
            }
          } catch (e) {
            const k = (e as Error).name ?? "error";
            retriesByError[k] = (retriesByError[k] ?? 0) + 1;
            if (errorSamples.length < 3 && !errorSamples.includes(`${k}: ${(e as Error).message}`)) errorSamples.push(`${k}: ${(e as Error).message}`);
            await sleep(50);
          }
        }
        if (!done) unacked++;
      }
    };
    const publishers = Promise.all(Array.from({ length: 16 }, () => publisher()));
    await sleep(500);
    const lastSeqBeforeKill = Math.max(0, ...acked.values());
    tKill = Date.now();
    await cluster.kill(leader);
    // Keep publishing until 1.5 s after the first ack of an attempt sent after the kill (bounded by the publisher's own deadline).
    const afterDeadline = Date.now() + 25_000;
    while (Date.now() < afterDeadline && firstAckOfAttemptAfterKill === undefined) await sleep(20);
    const firstAckAfterKill = firstAckOfAttemptAfterKill;
    await sleep(1_500);
    stop = true;
    await publishers;
    // The stall: the longest stretch without an ack that ends after the kill (acks already in flight at the kill can land just after it).
    let stallMs = 0;
    let resumedAt: number | undefined;
    for (let k = 1; k < ackTimes.length; k++) {
      const t = ackTimes[k] ?? 0;
      const gap = t - (ackTimes[k - 1] ?? 0);
      if (t > tKill && gap > stallMs) {
        stallMs = gap;
        resumedAt = t;
      }
    }
    const gapMs = resumedAt === undefined ? undefined : resumedAt - tKill;
    const newLeaderInfo = await retry("stream info after kill", 10_000, () => jsm.streams.info(name));
    fact("leader kill", {
      killed: leaderName,
      newLeader: newLeaderInfo.cluster?.leader,
      killToAcksResumeMs: gapMs,
      longestStallWithoutAckMs: stallMs,
      firstAckOfAttemptSentAfterKillMs: firstAckAfterKill === undefined ? undefined : firstAckAfterKill - tKill,
      published: n,
      acked: acked.size,
      unacked,
      inFlightPublishers: 16,
      retriesByError,
      errorSamples,
      lastSeqBeforeKill,
    });
    assert.ok(gapMs !== undefined, "publishes are acked again after the leader kill");
    assert.equal(unacked, 0, "every publish was eventually acked (with retries under its Nats-Msg-Id)");

    // No acked message lost: read every stored message back from the new leader, by sequence.
    const last = newLeaderInfo.state.last_seq;
    const first = 1;
    const storedIds = new Map<string, number[]>();
    for (let s = first; s <= last; s += 100) {
      const seqs = Array.from({ length: Math.min(100, last - s + 1) }, (_, k) => s + k);
      const msgs = await retry("read back", 10_000, () => Promise.all(seqs.map((seq) => jsm.streams.getMessage(name, { seq }))));
      for (const m of msgs) {
        if (!m) continue;
        const id = m.header?.get("Nats-Msg-Id") ?? "";
        storedIds.set(id, [...(storedIds.get(id) ?? []), m.seq]);
      }
    }
    const lost = [...acked.entries()].filter(([id, seq]) => !storedIds.get(id)?.includes(seq));
    const storedTwice = [...storedIds.entries()].filter(([, seqs]) => seqs.length > 1);
    fact("read back after kill", { lastSeq: last, storedMessages: newLeaderInfo.state.messages, lostAcked: lost.length, storedTwice: storedTwice.length });
    assert.equal(lost.length, 0, `acked but not stored: ${JSON.stringify(lost.slice(0, 5))}`);
    assert.equal(storedTwice.length, 0, `one Nats-Msg-Id stored twice: ${JSON.stringify(storedTwice.slice(0, 5))}`);
    assert.equal(newLeaderInfo.state.messages, normal + acked.size);

    // d across the kill: reported, not asserted (the leader republishes; a leader change may drop or repeat).
    await waitReceived(fromIndex + (last - normal), 3_000);
    const killTally = tally(fromIndex, normal + 1, last);
    fact("republish across the leader kill", { expected: last - normal, ...killTally });

    // The killed node restarts (same ports and store) and catches up: its own replica reaches the leader's last seq.
    const tRestart = Date.now();
    await cluster.restart(leader);
    const readyMs = Date.now() - tRestart;
    let caughtUp: number | undefined;
    let local: Awaited<ReturnType<typeof cluster.streamState>>;
    for (const deadline = Date.now() + 20_000; Date.now() < deadline; ) {
      local = await cluster.streamState(leader, name).catch(() => undefined);
      if (local && local.lastSeq === last && local.messages === newLeaderInfo.state.messages) {
        caughtUp = Date.now() - tRestart;
        break;
      }
      await sleep(50);
    }
    const replicas = (await jsm.streams.info(name)).cluster?.replicas?.map((r) => ({ name: r.name, current: r.current, lag: r.lag, offline: r.offline }));
    fact("restart of the killed node", { readyAndMetaAgreedMs: readyMs, caughtUpMs: caughtUp, local, replicas });
    // Reported, not asserted: on a loaded 2-core machine (CI) one run's restarted node was not seen caught up within
    // 20 s by this check; the catch-up time is a measurement for the next issue's design, not a product guarantee yet.
    if (caughtUp === undefined) fact("restarted node not seen caught up within 20 s", { local, last, messages: newLeaderInfo.state.messages });

    sub.unsubscribe();
    await jsm.streams.delete(name);
  });
});
