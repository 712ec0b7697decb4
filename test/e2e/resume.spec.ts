/**
 * Resume (DESIGN flow 3, invariants 3 and 6): a client that reconnects with
 * its cursors gets exactly what it missed, in order, then live events, with
 * no gap or duplicate at the seam; also after a server restart. A cursor the
 * server cannot honour gets an explicit CursorReset.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { StreamService } from "../../gen/chat/v1/stream_service_pb.js";
import { grpcJsClient } from "../support/grpc-js-client.js";
import { freePort, range, sendMany } from "../support/helpers.js";
import { type StreamReader, grpcJsSubscribe, seqs, subscribe } from "../support/stream-reader.js";
import { type Clients, MovableClock, PROTOCOLS, type TestServer, registerUser, startTestServer } from "../support/test-server.js";

function lastSeq(reader: StreamReader, groupId: string): bigint {
  const events = reader.eventsOf(groupId);
  const ready = reader.items.find((i) => i.payload.case === "ready");
  const start = ready?.payload.case === "ready" ? ready.payload.value.groups.find((g) => g.groupId === groupId)?.seq : undefined;
  return events.at(-1)?.seq ?? start ?? 0n;
}

describe("resume", () => {
  let server: TestServer;
  let port: number;
  before(async () => {
    port = await freePort();
    server = await startTestServer({ PORT: String(port) });
  });
  after(async () => {
    await server.stop();
  });

  for (const protocol of PROTOCOLS) {
    it(`replays exactly the 1,000 missed messages, then goes live without a duplicate (${protocol})`, async () => {
      const alice = await registerUser(server.baseUrl, "grpc", "ra");
      const bob = await registerUser(server.baseUrl, protocol, "rb");
      const { group } = await alice.groups.createGroup({ name: "resume", memberUsernames: [bob.username] });
      assert.ok(group);
      const gid = group.groupId;
      const first = subscribe(bob);
      await first.waitReady();
      await sendMany(alice, gid, 3, { concurrency: 1 });
      await first.waitForEvents(gid, 3);
      const cursor = lastSeq(first, gid);
      first.close();
      await first.waitDone();

      await sendMany(alice, gid, 1000, { concurrency: 25 });
      const second = subscribe(bob, [{ groupId: gid, seq: cursor }]);
      // Live sends race the replay: the seam must hold either way.
      const live = sendMany(alice, gid, 20, { concurrency: 4, prefix: "live" });
      await live;
      await second.waitForEvents(gid, 1020, 20_000);
      const start = Number(cursor) + 1;
      assert.deepEqual(seqs(second.eventsOf(gid)), range(start, start + 1019));
      assert.ok(!second.items.some((i) => i.payload.case === "cursorReset"));
      second.close();
    });
  }

  it("resumes after a server restart with no gap and no duplicate (grpc-js)", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "rs");
    const { group } = await alice.groups.createGroup({ name: "restart" });
    assert.ok(group);
    const gid = group.groupId;
    let client = grpcJsClient(port, StreamService);
    const before = grpcJsSubscribe(client, alice.token);
    await before.waitReady();
    await sendMany(alice, gid, 10, { concurrency: 2 });
    await before.waitForEvents(gid, 10);
    const cursor = lastSeq(before, gid);
    before.close();
    await before.waitDone();

    // Missed while disconnected, stored before the restart.
    await sendMany(alice, gid, 1000, { concurrency: 25, prefix: "before-restart" });
    // A stream open during the restart must end with UNAVAILABLE, not hang.
    const open = grpcJsSubscribe(client, alice.token);
    await open.waitReady();
    await server.restart();
    await open.waitDone();
    assert.match(String(open.error), /UNAVAILABLE|14/);
    client.close();

    client = grpcJsClient(port, StreamService);
    const after = grpcJsSubscribe(client, alice.token, [{ groupId: gid, seq: cursor }]);
    await after.waitForEvents(gid, 1000, 20_000);
    await sendMany(alice, gid, 5, { prefix: "after-restart" });
    await after.waitForEvents(gid, 1005);
    const start = Number(cursor) + 1;
    assert.deepEqual(seqs(after.eventsOf(gid)), range(start, start + 1004));
    const texts = after.eventsOf(gid).map((e) => (e.kind.case === "message" ? e.kind.value.text : ""));
    assert.ok(texts.slice(0, 1000).every((t) => t.startsWith("before-restart")));
    after.close();
    client.close();
  });

  it("says CursorReset when the cursor belongs to another epoch", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "ep");
    const { group } = await alice.groups.createGroup({ name: "epoch" });
    assert.ok(group);
    await sendMany(alice, group.groupId, 3);
    const s = subscribe(alice, [{ groupId: group.groupId, seq: 2n, epoch: "some-other-epoch" }]);
    await s.waitFor((r) => r.items.some((i) => i.payload.case === "cursorReset"));
    const reset = s.items.find((i) => i.payload.case === "cursorReset");
    assert.ok(reset?.payload.case === "cursorReset");
    assert.equal(reset.payload.value.requestedSeq, 2n);
    assert.equal(reset.payload.value.epoch, group.epoch);
    assert.equal(reset.payload.value.firstAvailableSeq, 1n);
    // Everything retained follows the reset, from first_available_seq.
    await s.waitForEvents(group.groupId, 4);
    assert.deepEqual(seqs(s.eventsOf(group.groupId)), [1, 2, 3, 4]);
    s.close();
  });

  it("says CursorReset when the cursor is ahead of the group's head", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "ah");
    const { group } = await alice.groups.createGroup({ name: "ahead" });
    assert.ok(group);
    const s = subscribe(alice, [{ groupId: group.groupId, seq: 99n }]);
    await s.waitFor((r) => r.items.some((i) => i.payload.case === "cursorReset"));
    await sendMany(alice, group.groupId, 1);
    await s.waitForEvents(group.groupId, 1);
    assert.deepEqual(seqs(s.eventsOf(group.groupId)), [2]);
    s.close();
  });

  it("starts groups without a cursor at their head and lists every group in StreamReady", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "hd");
    const a = (await alice.groups.createGroup({ name: "a" })).group;
    const b = (await alice.groups.createGroup({ name: "b" })).group;
    assert.ok(a && b);
    await sendMany(alice, a.groupId, 2);
    const s = subscribe(alice, [{ groupId: b.groupId, seq: 0n }]);
    await s.waitReady();
    const ready = s.items[0];
    assert.ok(ready?.payload.case === "ready");
    const positions = new Map(ready.payload.value.groups.map((g) => [g.groupId, g]));
    assert.equal(positions.get(a.groupId)?.seq, 3n);
    assert.equal(positions.get(a.groupId)?.headSeq, 3n);
    assert.equal(positions.get(b.groupId)?.seq, 0n);
    // Cursor 0 replays b's whole timeline; a starts live.
    await s.waitForEvents(b.groupId, 1);
    assert.deepEqual(seqs(s.eventsOf(b.groupId)), [1]);
    assert.deepEqual(seqs(s.eventsOf(a.groupId)), []);
    s.close();
  });
});

describe("resume across retention", () => {
  const clock = new MovableClock();
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ RETENTION: "1h", ACCESS_TOKEN_TTL: "1d" }, { clock });
  });
  after(async () => {
    await server.stop();
  });

  it("says CursorReset for a cursor older than retained history, then continues from the oldest retained event", async () => {
    const alice: Clients = await registerUser(server.baseUrl, "grpc", "rt");
    const { group } = await alice.groups.createGroup({ name: "old" });
    assert.ok(group);
    const gid = group.groupId;
    await sendMany(alice, gid, 5, { concurrency: 1 }); // seqs 2..6
    clock.offsetMs += 2 * 3_600_000; // they expire
    const fresh = await sendMany(alice, gid, 3, { concurrency: 1 }); // seqs 7..9
    assert.deepEqual(
      fresh.map((m) => Number(m.seq)),
      [7, 8, 9],
    );

    const history = await alice.messages.listMessages({ groupId: gid });
    assert.equal(history.firstRetainedSeq, 7n);
    assert.deepEqual(
      history.messages.map((m) => Number(m.seq)),
      [7, 8, 9],
    );

    const s = subscribe(alice, [{ groupId: gid, seq: 3n }]);
    await s.waitForEvents(gid, 3);
    const reset = s.items.find((i) => i.payload.case === "cursorReset");
    assert.ok(reset?.payload.case === "cursorReset", "explicit signal instead of a silent gap");
    assert.equal(reset.payload.value.requestedSeq, 3n);
    assert.equal(reset.payload.value.firstAvailableSeq, 7n);
    assert.deepEqual(seqs(s.eventsOf(gid)), [7, 8, 9]);
    // The reset comes before the first event after it.
    const resetAt = s.items.indexOf(reset);
    const firstEventAt = s.items.findIndex((i) => i.payload.case === "event");
    assert.ok(resetAt < firstEventAt);
    s.close();
  });

  it("does not fail a stream when a group's whole history has expired: reset to the head, then live", async () => {
    const alice: Clients = await registerUser(server.baseUrl, "grpc", "rx");
    const quiet = (await alice.groups.createGroup({ name: "quiet" })).group;
    const other = (await alice.groups.createGroup({ name: "other" })).group;
    assert.ok(quiet && other);
    await sendMany(alice, quiet.groupId, 4, { concurrency: 1 }); // seqs 2..5, all about to expire
    clock.offsetMs += 2 * 3_600_000;
    for (const seq of [3n, 0n]) {
      const s = subscribe(alice, [
        { groupId: quiet.groupId, seq },
        { groupId: other.groupId, seq: 0n },
      ]);
      await s.waitReady();
      if (seq > 0n) {
        await s.waitFor((r) => r.items.some((i) => i.payload.case === "cursorReset"));
        const reset = s.items.find((i) => i.payload.case === "cursorReset");
        assert.ok(reset?.payload.case === "cursorReset");
        assert.equal(reset.payload.value.requestedSeq, 3n);
        assert.equal(reset.payload.value.firstAvailableSeq, 6n);
      }
      const sent = await alice.messages.sendMessage({ groupId: quiet.groupId, text: `after ${seq}`, clientMessageId: `x${seq}` });
      await s.waitForEvents(quiet.groupId, 1);
      assert.deepEqual(seqs(s.eventsOf(quiet.groupId)), [Number(sent.message?.seq)]);
      assert.equal(s.done, false, "the stream is still open");
      s.close();
      clock.offsetMs += 2 * 3_600_000; // expire that message too for the next round
    }
  });
});
