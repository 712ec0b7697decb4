/**
 * NatsEventBus against real NATS servers. Gated on NATS_URL (e.g.
 * `NATS_URL=nats://127.0.0.1:4222`) so the default `npm test` stays hermetic.
 *
 * - The EventBus contract and the adapter's own checks run on the shared
 *   server with a prefix (subjects + stream) unique to this run; the stream is
 *   deleted afterwards.
 * - The fault test starts a private nats-server on a free port, kills it by
 *   its PID and restarts it on the same port and store directory.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { connect, headers as natsHeaders } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { eventBusContract } from "../../../test/contract/event-bus.contract.js";
import { isChatError } from "../../core/errors.js";
import { newId } from "../../core/ids.js";
import type { GroupEvent } from "../../core/model.js";
import { decodeEvent, encodeEvent } from "./nats-codec.js";
import { JetStreamSequencer, createJetStreamSequencer } from "./jetstream-sequencer.js";
import { timelineStreamConfig } from "./jetstream-streams.js";
import { type NatsEventBus, type NatsEventBusOptions, createNatsEventBus } from "./nats-event-bus.js";
import { NATS_SERVER_BIN, PrivateNatsServer } from "../../../test/support/private-nats-server.js";
import { NatsNames } from "./subjects.js";

const NATS_URL = process.env.NATS_URL;
const skip = !NATS_URL;

/** runPrefix is unique per call, so runs on the shared server never share a subject or a stream. */
function runPrefix(tag: string): string {
  return `t${tag}${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
}

/** deleteStreams removes the timeline streams of `prefixes` from the server at `url` (missing ones are fine). */
async function deleteStreams(url: string, prefixes: readonly string[]): Promise<void> {
  const nc = await connect({ servers: url, name: "chat-test-cleanup" });
  try {
    const jsm = await jetstreamManager(nc);
    for (const p of prefixes) await jsm.streams.delete(new NatsNames(p).timelineStream).catch(() => false);
  } finally {
    await nc.close();
  }
}

/**
 * storedEvents returns the events the timeline stream at `url` holds for the group, ascending by seq: the group's
 * slot subjects as the stream lists them (stream info filtered on the group), and the event on each, read through
 * the stream leader (JetStreamSequencer.readLog). Fails unless every slot holds exactly one message, the event of
 * its seq: each event is stored once, on its own slot subject.
 */
async function storedEvents(url: string, names: NatsNames, groupId: string): Promise<GroupEvent[]> {
  const nc = await connect({ servers: url, name: "chat-test-reader" });
  const reader = new JetStreamSequencer({ nc, names });
  try {
    const info = await (await jetstreamManager(nc)).streams.info(names.timelineStream, { subjects_filter: names.group(groupId) });
    const seqs = Object.entries(info.state.subjects ?? {}).map(([subject, count]) => {
      const slot = names.slotOf(subject);
      assert.equal(slot?.groupId, groupId, `${subject} is a slot of the group`);
      assert.equal(count, 1, `${subject} holds one message`);
      return slot.seq;
    });
    const events: GroupEvent[] = [];
    for (const seq of seqs.sort((x, y) => x - y)) {
      const event = await reader.readLog(groupId, seq);
      assert.ok(event, `the message on slot ${seq} is the group's event of seq ${seq}`);
      events.push(event);
    }
    return events;
  } finally {
    reader.close();
    await nc.close();
  }
}

function message(groupId: string, seq: number, text = `m${seq}`): GroupEvent {
  const actor = { id: "00000000-0000-7000-8000-000000000001", username: "alice" };
  return {
    groupId,
    seq,
    at: 1_700_000_000_000 + seq,
    actor,
    body: {
      type: "message",
      message: { id: newId(), groupId, seq, sender: actor, text, sentAt: 1_700_000_000_000 + seq, clientMessageId: `c${seq}` },
    },
  };
}

/** waitUntil polls `condition` every 10 ms until it holds; fails after `timeoutMs`. */
async function waitUntil(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

const contractPrefix = runPrefix("c");

eventBusContract("nats", () => createNatsEventBus({ servers: NATS_URL ?? "", prefix: contractPrefix, name: "contract-extra" }), {
  skip,
  // Two connections, like two processes.
  makePair: async () => [
    await createNatsEventBus({ servers: NATS_URL ?? "", prefix: contractPrefix, name: "contract-a" }),
    await createNatsEventBus({ servers: NATS_URL ?? "", prefix: contractPrefix, name: "contract-b" }),
  ],
  cleanup: () => deleteStreams(NATS_URL ?? "", [contractPrefix]),
});

const sharedPrefix = runPrefix("s");

// The same contract with one NATS subscription to every group's events (groupSubscriptions "shared").
eventBusContract(
  "nats, shared group subscription",
  () => createNatsEventBus({ servers: NATS_URL ?? "", prefix: sharedPrefix, name: "contract-shared-extra", groupSubscriptions: "shared" }),
  {
    skip,
    makePair: async () => [
      await createNatsEventBus({ servers: NATS_URL ?? "", prefix: sharedPrefix, name: "contract-shared-a", groupSubscriptions: "shared" }),
      await createNatsEventBus({ servers: NATS_URL ?? "", prefix: sharedPrefix, name: "contract-shared-b", groupSubscriptions: "shared" }),
    ],
    cleanup: () => deleteStreams(NATS_URL ?? "", [sharedPrefix]),
  },
);

describe("NatsEventBus with one subscription to every group (groupSubscriptions shared)", { skip }, () => {
  const prefix = runPrefix("h");
  const url = NATS_URL ?? "";

  after(() => deleteStreams(url, [prefix]));

  it("delivers each followed group's stored events in order, drops the others' unread, and stops a group at its last unsubscribe", async () => {
    const writer = await createNatsEventBus({ servers: url, prefix, name: "shared-writer" });
    const bus = await createNatsEventBus({ servers: url, prefix, name: "shared-reader", groupSubscriptions: "shared" });
    const raw = await connect({ servers: url, name: "shared-raw" });
    try {
      const [g1, g2, quiet] = [newId(), newId(), newId()];
      const seen: { groupId: string; seq: number; text: string }[] = [];
      const view = (e: GroupEvent) => ({ groupId: e.groupId, seq: e.seq, text: e.body.type === "message" ? e.body.message.text : "" });
      const sub1 = await bus.subscribeGroup(g1, (e) => seen.push(view(e)));
      const sub1b = await bus.subscribeGroup(g1, () => {}); // a second local handler of g1
      const sub2 = await bus.subscribeGroup(g2, (e) => seen.push(view(e)));
      const before = bus.stats().decodeErrors;
      // Garbage on a group nobody here follows is dropped unread; on a followed group it is counted.
      raw.publish(bus.names.tailSlot(quiet, 1), "not json");
      raw.publish(bus.names.tailSlot(g2, 99), "not json");
      await raw.flush();
      for (let seq = 1; seq <= 3; seq++) {
        await writer.publishEvent(message(g1, seq, `g1-${seq}`));
        await writer.publishEvent(message(quiet, seq + 1, `quiet-${seq + 1}`));
        await writer.publishEvent(message(g2, seq, `g2-${seq}`));
      }
      await waitUntil("both groups' seq 3", () => seen.filter((e) => e.seq === 3).length === 2);
      assert.deepEqual(
        seen.filter((e) => e.groupId === g1),
        [1, 2, 3].map((seq) => ({ groupId: g1, seq, text: `g1-${seq}` })),
      );
      assert.deepEqual(
        seen.filter((e) => e.groupId === g2),
        [1, 2, 3].map((seq) => ({ groupId: g2, seq, text: `g2-${seq}` })),
      );
      assert.equal(seen.length, 6, "nothing of the group nobody follows");
      assert.equal(bus.stats().decodeErrors - before, 1, "only the followed group's garbage was read");

      // g1 keeps going while one of its handlers remains; after the last, its events are no longer read.
      sub1b.unsubscribe();
      await writer.publishEvent(message(g1, 4, "g1-4"));
      await waitUntil("g1 seq 4", () => seen.some((e) => e.groupId === g1 && e.seq === 4));
      sub1.unsubscribe();
      raw.publish(bus.names.tailSlot(g1, 98), "not json");
      await raw.flush();
      await writer.publishEvent(message(g1, 5, "g1-5"));
      await writer.publishEvent(message(g2, 4, "g2-4"));
      // The republishes come in stream order on one subscription: once g2's seq 4 is here, g1's seq 5 went by.
      await waitUntil("g2 seq 4", () => seen.some((e) => e.groupId === g2 && e.seq === 4));
      assert.ok(!seen.some((e) => e.groupId === g1 && e.seq === 5), "g1 is not delivered after its last unsubscribe");
      assert.equal(bus.stats().decodeErrors - before, 1, "g1's garbage after its last unsubscribe was not read");
      sub2.unsubscribe();
    } finally {
      await raw.close();
      await bus.close();
      await writer.close();
    }
  });
});

describe("NatsEventBus on the shared server", { skip }, () => {
  const prefix = runPrefix("a");
  const url = NATS_URL ?? "";
  let a: NatsEventBus;
  let b: NatsEventBus;

  before(async () => {
    a = await createNatsEventBus({ servers: url, prefix, name: "adapter-a" });
    b = await createNatsEventBus({ servers: url, prefix, name: "adapter-b" });
  });

  after(async () => {
    await a?.close();
    await b?.close();
    await deleteStreams(url, [prefix]);
  });

  it("creates the timeline stream idempotently with file storage, dedupe window and max age", async () => {
    // A third bus on the same prefix finds the stream and leaves it as it is.
    const c = await createNatsEventBus({ servers: url, prefix, name: "adapter-c" });
    await c.close();
    const nc = await connect({ servers: url });
    try {
      const info = await (await jetstreamManager(nc)).streams.info(a.names.timelineStream);
      assert.deepEqual(info.config.subjects, [`${prefix}.group.>`]);
      assert.equal(info.config.storage, "file");
      assert.equal(info.config.duplicate_window, 120e9);
      assert.equal(info.config.max_age, 24 * 3600e9);
      // Every stored event republished whole on the tail subjects (the server leaves out headers_only: false).
      assert.deepEqual({ headers_only: false, ...info.config.republish }, { src: `${prefix}.group.>`, dest: `${prefix}.tail.>`, headers_only: false });
    } finally {
      await nc.close();
    }
    // Another retention updates the stream in place.
    const d = await createNatsEventBus({ servers: url, prefix, name: "adapter-d", maxAgeMs: 3600_000 });
    await d.close();
    const nc2 = await connect({ servers: url });
    try {
      const info = await (await jetstreamManager(nc2)).streams.info(a.names.timelineStream);
      assert.equal(info.config.max_age, 3600e9);
    } finally {
      await nc2.close();
    }
    const e = await createNatsEventBus({ servers: url, prefix, name: "adapter-e" });
    await e.close();
  });

  it("refuses a timeline stream made by an older version (republishing headers only, or nothing) unless the server can fix it", async () => {
    const nc = await connect({ servers: url });
    const made: string[] = [];
    try {
      const jsm = await jetstreamManager(nc);
      const olds = [
        { what: "headers only", republish: (n: NatsNames) => ({ src: n.allGroups, dest: n.allTails, headers_only: true }) },
        { what: "nothing", republish: () => undefined },
      ];
      for (const old of olds) {
        const older = runPrefix("o");
        made.push(older);
        const n = new NatsNames(older);
        const { republish: _republish, ...config } = timelineStreamConfig(n);
        const republish = old.republish(n);
        await jsm.streams.add(republish ? { ...config, republish } : config);
        let refusal: unknown;
        try {
          const bus = await createNatsEventBus({ servers: url, prefix: older, name: "adapter-older" });
          await bus.close();
        } catch (e) {
          refusal = e;
        }
        const info = await jsm.streams.info(n.timelineStream);
        if (refusal === undefined) {
          // nats-server 2.10+ changes RePublish in place.
          assert.deepEqual({ headers_only: false, ...info.config.republish }, { src: n.allGroups, dest: n.allTails, headers_only: false }, old.what);
        } else {
          // nats-server 2.9 cannot: start fails, naming the stream and the way out, and leaves the stream as it was.
          assert.ok(isChatError(refusal, "FailedPrecondition"), `${old.what}: ${String(refusal)}`);
          const text = String((refusal as Error).message);
          assert.match(text, new RegExp(`timeline stream ${n.timelineStream} republishes ${old.what}`));
          assert.match(text, /nats-server 2\.10 or later/);
          assert.ok(text.includes(`nats stream rm ${n.timelineStream}`), text);
          assert.deepEqual(info.config.republish, republish, `${old.what}: the stream is left as it was`);
        }
      }
    } finally {
      await nc.close();
      await deleteStreams(url, made);
    }
  });

  it("stores the timeline in JetStream: each seq once, a retry deduped", async () => {
    const g = newId();
    const events = [1, 2, 3, 4, 5].map((seq) => message(g, seq));
    for (const e of events) await a.publishEvent(e);
    // Re-publishing seq 3 (a retry, here with another message id) is deduped by Nats-Msg-Id: the first one stays.
    await a.publishEvent(message(g, 3));
    const stored = await storedEvents(url, b.names, g);
    assert.deepEqual(
      stored.map((e) => e.seq),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(stored, events, "each seq holds the event first published at it");
    assert.deepEqual(await storedEvents(url, b.names, newId()), [], "a group with nothing stored");
    // Each event is stored once, on its own slot subject.
    const nc = await connect({ servers: url });
    try {
      const info = await (await jetstreamManager(nc)).streams.info(a.names.timelineStream, { subjects_filter: a.names.group(g) });
      assert.deepEqual(info.state.subjects, Object.fromEntries([1, 2, 3, 4, 5].map((seq) => [`${prefix}.group.${g}.${seq}`, 1])));
    } finally {
      await nc.close();
    }
  });

  it("delivers only what the stream stored: never a refused proposal nor a duplicate Nats-Msg-Id", async () => {
    const g = newId();
    const seen: GroupEvent[] = [];
    const sub = await b.subscribeGroup(g, (e) => seen.push(e));
    // A plain core NATS subscriber of the group's slots sees every proposal as sent, stored or refused (what a
    // subscriber of the wrong subject would get): proof that the refused proposals below were on the wire.
    const raw = await connect({ servers: url, name: "adapter-raw" });
    const onWire: { subject: string; text: string }[] = [];
    const rawSub = raw.subscribe(b.names.group(g), {
      callback: (_err, m) => {
        const e = decodeEvent(m.data);
        onWire.push({ subject: m.subject, text: e?.body.type === "message" ? e.body.message.text : "" });
      },
    });
    await raw.flush();
    const ncX = await connect({ servers: url, name: "adapter-writer-x" });
    const ncY = await connect({ servers: url, name: "adapter-writer-y" });
    const x = await createJetStreamSequencer(ncX, prefix);
    const y = await createJetStreamSequencer(ncY, prefix);
    try {
      const first = await x.append(message(g, 1), 0, "k1");
      assert.ok(first.status === "appended");
      // Two writers race for seq 2, each on the same slot subject: JetStream stores one, refuses the other.
      const [rx, ry] = await Promise.all([
        x.append(message(g, 2, "x wants 2"), first.stored.streamSeq, "k-x"),
        y.append(message(g, 2, "y wants 2"), first.stored.streamSeq, "k-y"),
      ]);
      assert.deepEqual([rx.status, ry.status].sort(), ["appended", "conflict"], "exactly one writer gets seq 2");
      const second = rx.status === "appended" ? rx : ry;
      assert.ok(second.status === "appended");
      const loser = rx.status === "appended" ? "y wants 2" : "x wants 2";
      const loserOutcome = rx.status === "appended" ? ry : rx;
      assert.deepEqual(loserOutcome, { status: "conflict", lastStreamSeq: second.stored.streamSeq }, "the loser is told the slot's message");
      // More proposals JetStream stores none of: a writer that believes the group empty (seq 1 is taken), and a
      // client's retry repeating k1 (a duplicate, even on a free slot).
      assert.equal((await y.append(message(g, 1, "the stale"), 0, "k-stale")).status, "conflict");
      const retry = await y.append(message(g, 3, "the retry"), second.stored.streamSeq, "k1");
      assert.ok(retry.status === "duplicate");
      assert.deepEqual(retry.original, first.stored);
      assert.equal((await x.append(message(g, 3), second.stored.streamSeq, "k3")).status, "appended");
      // Seq 3 comes after anything published before it, so once it is seen nothing else is on its way.
      await waitUntil("seq 3 delivered", () => seen.some((e) => e.seq === 3));
      await waitUntil("every proposal seen on the wire", () => onWire.length >= 6);
      await raw.flush();
      assert.deepEqual(
        onWire.map((m) => m.text).sort(),
        ["m1", "m3", "the retry", "the stale", "x wants 2", "y wants 2"],
        "every proposal went out on its slot subject, refused ones too",
      );
      for (const m of onWire) assert.equal(b.names.groupIdOf(m.subject), g, m.subject);
      const stored = await storedEvents(url, b.names, g);
      assert.deepEqual(
        stored.map((e) => e.seq),
        [1, 2, 3],
      );
      const text = (e: GroupEvent | undefined) => (e?.body.type === "message" ? e.body.message.text : "");
      assert.deepEqual(stored.map(text), ["m1", second.stored.event.body.type === "message" ? second.stored.event.body.message.text : "", "m3"]);
      assert.notEqual(text(stored[1]), loser);
      const view = (e: GroupEvent) => ({ seq: e.seq, id: e.body.type === "message" ? e.body.message.id : "", text: text(e) });
      assert.deepEqual(seen.map(view), stored.map(view), "each seq delivered once, carrying the event stored at that seq");
      assert.deepEqual(seen, stored);
      for (const refused of [loser, "the stale", "the retry"]) assert.ok(!seen.some((e) => text(e) === refused), `${refused} never delivered`);
    } finally {
      x.close();
      y.close();
      sub.unsubscribe();
      rawSub.unsubscribe();
      await ncX.close();
      await ncY.close();
      await raw.close();
    }
  });

  it("drops and counts undecodable messages without disturbing subscribers", async () => {
    const g = newId();
    const seen: number[] = [];
    const sub = await b.subscribeGroup(g, (e) => seen.push(e.seq));
    const before = b.stats().decodeErrors;
    const raw = await connect({ servers: url });
    try {
      // Stored by the stream (a core publish on a slot subject) and republished on the group's tails, but no events.
      raw.publish(b.names.slot(g, 7), "not json");
      raw.publish(b.names.slot(g, 8), JSON.stringify({ groupId: g, seq: 0 }));
      await raw.flush();
    } finally {
      await raw.close();
    }
    await a.publishEvent(message(g, 1));
    // The stream republishes in its order: by the time seq 1 is delivered, both messages before it were handled.
    await waitUntil("seq 1", () => seen.length > 0);
    assert.deepEqual(seen, [1]);
    assert.equal(b.stats().decodeErrors - before, 2, `decode errors counted (${before} -> ${b.stats().decodeErrors})`);
    sub.unsubscribe();
  });

  it("rejects ids that are not lower-case UUIDs instead of building a subject from them", async () => {
    for (const bad of ["a.b", "*", ">", "", "ABC", `${newId()}.x`]) {
      await assert.rejects(a.publishEvent({ ...message(newId(), 1), groupId: bad }), (e) => isChatError(e, "InvalidArgument"));
      await assert.rejects(a.subscribeGroup(bad, () => {}), (e) => isChatError(e, "InvalidArgument"));
      await assert.rejects(a.publishUser(bad, { type: "session_revoked", sessionId: "s" }), (e) => isChatError(e, "InvalidArgument"));
      await assert.rejects(a.subscribeUser(bad, () => {}), (e) => isChatError(e, "InvalidArgument"));
    }
  });

  it("reports healthy while connected and rejects use after close", async () => {
    const c = await createNatsEventBus({ servers: url, prefix, name: "adapter-closing" });
    assert.equal(c.isHealthy(), true);
    await c.close();
    await c.close();
    assert.equal(c.isHealthy(), false);
    await assert.rejects(c.publishEvent(message(newId(), 1)), (e) => isChatError(e, "Unavailable"));
    await assert.rejects(c.subscribeGroup(newId(), () => {}), (e) => isChatError(e, "Unavailable"));
  });
});

describe("NatsEventBus across a nats-server restart (private server)", { skip: skip || !existsSync(NATS_SERVER_BIN) }, () => {
  let server: PrivateNatsServer | undefined;
  const buses: NatsEventBus[] = [];

  after(async () => {
    for (const bus of buses) await bus.close().catch(() => {});
    // Always kill the private server (by its own PID) and remove its store, even when the test failed.
    await server?.dispose();
  });

  it("reconnects by itself, keeps subscriptions, and loses no acknowledged event", { timeout: 90_000 }, async (t) => {
    server = await PrivateNatsServer.create();
    await server.start();
    const prefix = runPrefix("f");
    const statuses: boolean[] = [];
    const opts: Omit<NatsEventBusOptions, "name"> = {
      servers: server.url,
      prefix,
      reconnectTimeWaitMs: 200,
      pingIntervalMs: 2000,
      publishTimeoutMs: 1500,
      subscribeTimeoutMs: 1500,
      closeTimeoutMs: 2000,
    };
    const pub = await createNatsEventBus({ ...opts, name: "fault-publisher" });
    buses.push(pub);
    const sub = await createNatsEventBus({ ...opts, name: "fault-subscriber", onStatus: (up) => statuses.push(up) });
    buses.push(sub);
    // A bus whose time bounds outlast the outage.
    const patient = await createNatsEventBus({ ...opts, name: "fault-patient", publishTimeoutMs: 20_000, subscribeTimeoutMs: 20_000 });
    buses.push(patient);
    // A bus listening to every group on one subscription (groupSubscriptions "shared"), which must come back too.
    const shared = await createNatsEventBus({ ...opts, name: "fault-shared", groupSubscriptions: "shared" });
    buses.push(shared);

    const g = newId();
    const seen: number[] = [];
    const seenShared: GroupEvent[] = [];
    await sub.subscribeGroup(g, (e) => seen.push(e.seq));
    await shared.subscribeGroup(g, (e) => seenShared.push(e));
    const sharedSeqs = () => seenShared.map((e) => e.seq);
    for (const seq of [1, 2, 3, 4, 5]) await pub.publishEvent(message(g, seq));
    await waitUntil("seq 1..5 before the restart", () => new Set(seen).size === 5 && new Set(sharedSeqs()).size === 5);

    // Kill the private server (SIGKILL, by its PID): every bus notices and reports unhealthy.
    await server.kill("SIGKILL");
    await waitUntil("all buses unhealthy", () => buses.every((bus) => !bus.isHealthy()));
    assert.deepEqual(statuses, [false]);

    // Calls bounded shorter than the outage reject with Unavailable, after their bound.
    const started = Date.now();
    const outcome = (p: Promise<unknown>) =>
      p.then(
        () => "done",
        (e: unknown) => (isChatError(e, "Unavailable") ? "unavailable" : `failed: ${String(e)}`),
      );
    const [shortPublish, shortNotice, shortSubscribe] = await Promise.all([
      outcome(pub.publishEvent(message(g, 6))),
      outcome(pub.publishUser(newId(), { type: "session_revoked", sessionId: "s" })),
      outcome(sub.subscribeGroup(newId(), () => {})),
    ]);
    const waited = Date.now() - started;
    assert.deepEqual([shortPublish, shortNotice, shortSubscribe], ["unavailable", "unavailable", "unavailable"]);
    assert.ok(waited >= 1400 && waited < 5000, `rejected after their 1500 ms bound (${waited} ms)`);

    // Calls bounded longer than the outage wait for the reconnect and then succeed.
    const g2 = newId();
    const seen2: number[] = [];
    const patientPublish = outcome(patient.publishEvent(message(g, 11)));
    const patientSubscribe = outcome(patient.subscribeGroup(g2, (e) => seen2.push(e.seq)));
    await sleep(300);

    await server.start();
    await waitUntil("all buses healthy again", () => buses.every((bus) => bus.isHealthy()), 20_000);
    assert.deepEqual(statuses, [false, true]);
    assert.ok(buses.every((bus) => bus.stats().reconnects === 1 && bus.stats().disconnects === 1));
    assert.equal(await patientPublish, "done", "a publish waiting through the outage is acked after the reconnect");
    assert.equal(await patientSubscribe, "done", "a subscribe waiting through the outage is confirmed after the reconnect");
    t.diagnostic(`calls bounded below the outage rejected after ${waited} ms`);

    // Events acked before the restart (and the one acked after waiting) are in JetStream.
    const kept = (await storedEvents(server.url, sub.names, g)).map((e) => e.seq);
    for (const seq of [1, 2, 3, 4, 5, 11]) assert.ok(kept.includes(seq), `acked seq ${seq} is stored after the restart (have ${kept})`);

    // The caller retries what was not acked; Nats-Msg-Id would dedupe it had it been stored after all.
    await pub.publishEvent(message(g, 6));

    // The subscriptions from before the restart and from during the outage deliver again. Publishing
    // is repeated (deduped in JetStream) in case a publish overtook a resubscription; bounded.
    const want = [7, 8, 9, 10];
    const allBack = () => want.every((s) => seen.includes(s) && sharedSeqs().includes(s)) && seen2.includes(1);
    for (let round = 0; round < 10 && !allBack(); round++) {
      for (const seq of want) if (!seen.includes(seq) || !sharedSeqs().includes(seq)) await pub.publishEvent(message(g, seq));
      if (!seen2.includes(1)) await pub.publishEvent(message(g2, 1));
      const deadline = Date.now() + 1000;
      while (Date.now() < deadline && !allBack()) await sleep(10);
    }
    assert.ok(
      want.every((s) => seen.includes(s)),
      `the subscription from before the restart delivers again (saw ${seen})`,
    );
    assert.ok(
      want.every((s) => sharedSeqs().includes(s)),
      `the shared subscription from before the restart delivers again (saw ${sharedSeqs()})`,
    );
    assert.deepEqual(seen2, [1], "the subscription made during the outage delivers");

    // The timeline holds every acknowledged event exactly once.
    const stored = await storedEvents(server.url, sub.names, g);
    assert.deepEqual(
      stored.map((e) => e.seq),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    );
    // What the shared subscription delivered at each seq is the event stored there.
    for (const e of seenShared) assert.deepEqual(e, stored[e.seq - 1], `the shared bus's seq ${e.seq} is the stored event`);
    const nc = await connect({ servers: server.url });
    try {
      const info = await (await jetstreamManager(nc)).streams.info(pub.names.timelineStream);
      assert.equal(info.state.messages, 12, "no event stored twice (11 of g, 1 of g2)");
    } finally {
      await nc.close();
    }
  });
});

describe("NatsEventBus during a rolling upgrade: headers-only republish (private server)", { skip: skip || !existsSync(NATS_SERVER_BIN) }, () => {
  let server: PrivateNatsServer | undefined;

  after(async () => {
    // Always kill the private server (by its own PID) and remove its store, even when the test failed.
    await server?.dispose();
  });

  it("delivers the stored event in place of a headers-only republish, in order with whole ones; logs once and ensures the stream again", { timeout: 60_000 }, async () => {
    server = await PrivateNatsServer.create();
    await server.start();
    const prefix = runPrefix("h");
    const errors: { fields: Record<string, unknown>; msg: string }[] = [];
    const logger = { info: () => {}, warn: () => {}, error: (fields: Record<string, unknown>, msg: string) => void errors.push({ fields, msg }) };
    const bus = await createNatsEventBus({ servers: server.url, prefix, name: "upgrade-new", logger });
    const nc = await connect({ servers: server.url, name: "upgrade-raw" });
    try {
      const jsm = await jetstreamManager(nc);
      const js = jsm.jetstream();
      const names = bus.names;
      const stream = names.timelineStream;
      const g = newId();
      // Events 1-4 are stored before the subscription, so their own (whole) republishes are not seen by it.
      const events = [1, 2, 3, 4].map((seq) => message(g, seq));
      const streamSeqs: number[] = [];
      for (const e of events) {
        const ack = await js.publish(names.slot(g, e.seq), encodeEvent(e), { msgID: names.msgId(g, e.seq) });
        streamSeqs.push(ack.seq);
      }
      const stored = await storedEvents(server.url, names, g);
      assert.deepEqual(
        stored.map((e) => e.seq),
        [1, 2, 3, 4],
      );
      const seen: GroupEvent[] = [];
      const sub = await bus.subscribeGroup(g, (e) => seen.push(e));
      // Another retention, so that the bus ensuring the stream again shows (it puts the 24 h back).
      const { name: _name, storage: _storage, ...mutable } = timelineStreamConfig(names);
      await jsm.streams.update(stream, { ...mutable, max_age: 3600e9 });

      // What the server sends for a headers-only republish (nats-server 2.9.10, seen by experiment): no body, the
      // original headers plus these. Whole republishes of 2 and 4 go out right behind 1 and 3, in one flush:
      // each must wait for the fetch before it.
      const republish = (seq: number, whole: boolean) => {
        const h = natsHeaders();
        h.set("Nats-Stream", stream);
        h.set("Nats-Subject", names.slot(g, seq));
        h.set("Nats-Sequence", String(streamSeqs[seq - 1]));
        h.set("Nats-Last-Sequence", String(seq === 1 ? 0 : streamSeqs[seq - 2]));
        const body = encodeEvent(events[seq - 1] ?? message(g, seq));
        if (!whole) h.set("Nats-Msg-Size", String(body.length));
        nc.publish(names.tailSlot(g, seq), whole ? body : new Uint8Array(0), { headers: h });
      };
      republish(1, false);
      republish(2, true);
      republish(3, false);
      republish(4, true);
      await nc.flush();
      await waitUntil("seq 4 delivered", () => seen.some((e) => e.seq === 4));
      assert.deepEqual(
        seen.map((e) => e.seq),
        [1, 2, 3, 4],
        "the fetched events in place of the headers-only ones, and nothing overtakes a fetch",
      );
      assert.deepEqual(seen, stored, "each delivered event is the one stored at its seq");
      assert.deepEqual(stored, events);
      assert.equal(bus.stats().decodeErrors, 0);

      // The bus ensured the stream again (full republish; here it shows as the retention put back).
      const deadline = Date.now() + 10_000;
      let maxAge = 0;
      while (Date.now() < deadline && (maxAge = (await jsm.streams.info(stream)).config.max_age) !== 24 * 3600e9) await sleep(50);
      assert.equal(maxAge, 24 * 3600e9, "the stream was ensured again after a headers-only republish");

      // A real headers-only republish by the server. nats-server 2.9 cannot switch the stream in place, so it is made
      // anew the way an older version made it (an older process on 2.10+ switches it in place, with the same effect).
      await jsm.streams.delete(stream);
      await jsm.streams.add({ ...timelineStreamConfig(names), republish: { src: names.allGroups, dest: names.allTails, headers_only: true } });
      const fifth = message(g, 5);
      await bus.publishEvent(fifth);
      await waitUntil("seq 5 delivered", () => seen.some((e) => e.seq === 5));
      assert.deepEqual(seen.at(-1), fifth, "the stored event, fetched, for the server's headers-only republish");
      assert.equal(bus.stats().headersOnly, 3);
      assert.equal(bus.stats().decodeErrors, 0);

      const switchedBack = errors.filter((e) => e.msg.includes(`timeline stream ${stream} republishes headers only: its configuration was switched back`));
      assert.equal(switchedBack.length, 1, `one error for three headers-only republishes within a minute (${JSON.stringify(errors.map((e) => e.msg))})`);
      assert.equal(switchedBack[0]?.fields.stream, stream);
      sub.unsubscribe();
    } finally {
      await nc.close();
      await bus.close();
    }
  });
});
