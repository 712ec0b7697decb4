/**
 * Read markers and unread counts (issue 14, point 1): GroupService.MarkRead
 * moves a member's read marker only forward (clamped to the group's head),
 * ListGroups carries each group's last_read_seq and unread_count (messages
 * of others after the marker, capped at 999), and a moved marker reaches
 * every live stream of the same user as a ReadMarker item, on every path
 * that serves streams (connect-node, the hand-framed gRPC / gRPC-Web /
 * Connect paths, the bidirectional Connect RPC, the WebSocket), and no
 * other user's stream.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { ConnectRequestSchema, StreamService } from "../../gen/chat/v1/stream_service_pb.js";
import { grpcJsClient } from "../support/grpc-js-client.js";
import { codeOf, sendMany } from "../support/helpers.js";
import { StreamReader, grpcJsSubscribe, subscribe, wsSubscribe } from "../support/stream-reader.js";
import { type Clients, type Protocol, type TestServer, clientsFor, registerUser, startTestServer } from "../support/test-server.js";

/** markers lists the ReadMarker items a stream received, as [group id, seq]. */
function markers(r: StreamReader): [string, number][] {
  return r.items.flatMap((i) => (i.payload.case === "readMarker" ? [[i.payload.value.groupId, Number(i.payload.value.seq)] as [string, number]] : []));
}

/** waitMarkers waits until the stream received `n` ReadMarker items. */
function waitMarkers(r: StreamReader, n: number, what: string): Promise<void> {
  return r.waitFor((s) => markers(s).length >= n, 10_000, `${n} read markers on ${what}`);
}

/** listed returns the caller's view of one group from ListGroups. */
async function listed(c: Clients, groupId: string) {
  const { groups } = await c.groups.listGroups({});
  const g = groups.find((x) => x.groupId === groupId);
  assert.ok(g, `group ${groupId} is listed`);
  return g;
}

/** as returns clients over `protocol` that use `c`'s token. */
function as(c: Clients, protocol: Protocol, baseUrl: string): Clients {
  const other = clientsFor(baseUrl, protocol);
  Object.assign(other, { token: c.token, userId: c.userId, username: c.username });
  return other;
}

/** connectStream opens the bidirectional Connect RPC and reads its stream items. */
function connectStream(c: Clients): StreamReader {
  return new StreamReader(async function* (signal) {
    async function* requests() {
      yield create(ConnectRequestSchema, { payload: { case: "subscribe", value: { cursors: [] } } });
      await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
    }
    for await (const res of c.streams.connect(requests(), { signal })) if (res.payload.case === "item") yield res.payload.value;
  });
}

describe("read markers and unread counts", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it("MarkRead moves the marker only forward, takes a seq above the head as the head, and refuses seq 0", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "mra");
    const bob = await registerUser(server.baseUrl, "grpc", "mrb");
    const { group } = await alice.groups.createGroup({ name: "forward", memberUsernames: [bob.username] });
    assert.ok(group);
    const gid = group.groupId;
    await sendMany(alice, gid, 5, { concurrency: 1 }); // #3 .. #7
    assert.equal((await bob.groups.markRead({ groupId: gid, seq: 5n })).lastReadSeq, 5n);
    assert.equal((await bob.groups.markRead({ groupId: gid, seq: 3n })).lastReadSeq, 5n, "a lower seq keeps the marker");
    assert.equal((await listed(bob, gid)).lastReadSeq, 5n);
    assert.equal((await bob.groups.markRead({ groupId: gid, seq: 1_000_000n })).lastReadSeq, 7n, "a seq above the head is the head");
    assert.equal((await listed(bob, gid)).lastReadSeq, 7n);
    // The clamp is to the head at the time: later messages are unread again.
    await sendMany(alice, gid, 2, { concurrency: 1 }); // #8, #9
    const later = await listed(bob, gid);
    assert.equal(later.lastReadSeq, 7n);
    assert.equal(later.unreadCount, 2);

    const zero = await codeOf(bob.groups.markRead({ groupId: gid, seq: 0n }));
    assert.equal(zero, Code.InvalidArgument);
    await assert.rejects(bob.groups.markRead({ groupId: gid, seq: 0n }), /seq must be at least 1/);
    assert.equal(await codeOf(bob.groups.markRead({ groupId: "not-an-id", seq: 1n })), Code.InvalidArgument);
    assert.equal(await codeOf(bob.groups.markRead({ groupId: gid, seq: 2n ** 60n })), Code.InvalidArgument, "beyond 2^53 is out of range");
  });

  it("answers a non-member NOT_FOUND, as the other group calls do, and an unauthenticated caller UNAUTHENTICATED", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "mna");
    const eve = await registerUser(server.baseUrl, "grpc", "mne");
    const { group } = await alice.groups.createGroup({ name: "members only", memberUsernames: [] });
    assert.ok(group);
    const gid = group.groupId;
    const other = await codeOf(eve.groups.getGroup({ groupId: gid }));
    assert.equal(other, Code.NotFound, "the existing calls answer a non-member NOT_FOUND");
    assert.equal(await codeOf(eve.groups.markRead({ groupId: gid, seq: 1n })), other);
    await assert.rejects(eve.groups.markRead({ groupId: gid, seq: 1n }), /not found \(or you are not a member\)/);
    assert.equal(await codeOf(eve.groups.markRead({ groupId: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", seq: 1n })), Code.NotFound);
    const anonymous = clientsFor(server.baseUrl, "grpc");
    assert.equal(await codeOf(anonymous.groups.markRead({ groupId: gid, seq: 1n })), Code.Unauthenticated);
    // A member who left is a non-member again.
    await alice.groups.addMember({ groupId: gid, user: { case: "username", value: eve.username } });
    assert.equal((await eve.groups.markRead({ groupId: gid, seq: 2n })).lastReadSeq, 2n);
    await eve.groups.removeMember({ groupId: gid, userId: eve.userId });
    assert.equal(await codeOf(eve.groups.markRead({ groupId: gid, seq: 3n })), Code.NotFound);
  });

  it("ListGroups counts only others' messages after the marker, and follows MarkRead", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "lga");
    const bob = await registerUser(server.baseUrl, "grpc", "lgb");
    const carol = await registerUser(server.baseUrl, "grpc", "lgc");
    const { group } = await alice.groups.createGroup({ name: "counts", memberUsernames: [bob.username] }); // #1 alice, #2 bob added
    assert.ok(group);
    const gid = group.groupId;
    const start = await listed(bob, gid);
    assert.equal(start.lastReadSeq, 2n, "a member starts at the seq of their member_added event");
    assert.equal(start.unreadCount, 0);
    assert.equal(start.notifications?.level, 1, "NOTIFY_LEVEL_ALL by default");
    assert.equal(start.notifications?.mutedUntil, undefined, "not muted by default");

    await sendMany(alice, gid, 3, { concurrency: 1 }); // #3 #4 #5
    await sendMany(bob, gid, 2, { concurrency: 1 }); // #6 #7: bob's own
    await alice.groups.addMember({ groupId: gid, user: { case: "username", value: carol.username } }); // #8: a membership event
    await alice.groups.updateGroup({ groupId: gid, name: "counts 2" }); // #9: a rename
    await sendMany(carol, gid, 1); // #10
    const b = await listed(bob, gid);
    assert.equal(b.headSeq, 10n);
    assert.equal(b.unreadCount, 4, "alice's 3 and carol's 1; not bob's own, not membership events, not the rename");
    const a = await listed(alice, gid);
    assert.equal(a.lastReadSeq, 1n);
    assert.equal(a.unreadCount, 3, "bob's 2 and carol's 1");
    const c = await listed(carol, gid);
    assert.equal(c.lastReadSeq, 8n);
    assert.equal(c.unreadCount, 0, "carol's only later message is her own");

    await bob.groups.markRead({ groupId: gid, seq: 4n });
    assert.deepEqual([(await listed(bob, gid)).lastReadSeq, (await listed(bob, gid)).unreadCount], [4n, 2]);
    await bob.groups.markRead({ groupId: gid, seq: 10n });
    assert.deepEqual([(await listed(bob, gid)).lastReadSeq, (await listed(bob, gid)).unreadCount], [10n, 0]);
    // GetGroup carries the same.
    const got = (await bob.groups.getGroup({ groupId: gid })).group;
    assert.deepEqual([got?.lastReadSeq, got?.unreadCount], [10n, 0]);
    // Another member's marker is their own.
    assert.equal((await listed(alice, gid)).unreadCount, 3);
  });

  it("caps unread_count at 999 (999 means 999 or more)", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "cpa");
    const bob = await registerUser(server.baseUrl, "grpc", "cpb");
    const { group } = await alice.groups.createGroup({ name: "busy", memberUsernames: [bob.username] });
    assert.ok(group);
    await sendMany(alice, group.groupId, 1001, { concurrency: 25 });
    const b = await listed(bob, group.groupId);
    assert.equal(b.headSeq, 1003n);
    assert.equal(b.unreadCount, 999);
    await bob.groups.markRead({ groupId: group.groupId, seq: 1003n - 998n });
    assert.equal((await listed(bob, group.groupId)).unreadCount, 998, "under the cap the count is exact again");
  });

  it("delivers a moved marker to every live stream of the user on every transport, and to no other user", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "rma");
    const bob = await registerUser(server.baseUrl, "grpc", "rmb");
    const { group } = await alice.groups.createGroup({ name: "badges", memberUsernames: [bob.username] });
    assert.ok(group && alice.token && bob.token);
    const gid = group.groupId;
    const grpcJs = grpcJsClient(server.port, StreamService);
    // Each of alice's "devices" takes another path to the same hub.
    const streams: [string, StreamReader][] = [
      ["connect-node (Connect JSON Subscribe)", subscribe(as(alice, "connect", server.baseUrl))],
      ["hand-framed gRPC Subscribe (connect-es)", subscribe(alice)],
      ["hand-framed gRPC Subscribe (grpc-js)", grpcJsSubscribe(grpcJs, alice.token)],
      ["hand-framed gRPC-Web Subscribe", subscribe(as(alice, "grpc-web", server.baseUrl))],
      ["hand-framed Connect streaming Subscribe", subscribe(as(alice, "connect-binary", server.baseUrl))],
      ["hand-framed Connect RPC over gRPC", connectStream(as(alice, "grpc", server.baseUrl))],
      ["connect-node Connect RPC (JSON)", connectStream(as(alice, "connect", server.baseUrl))],
      ["WebSocket Subscribe", wsSubscribe(server.port, alice.token)],
    ];
    const bobs = subscribe(bob);
    try {
      await Promise.all([...streams.map(([, s]) => s.waitReady()), bobs.waitReady()]);
      await sendMany(bob, gid, 4, { concurrency: 1 }); // #3 .. #6

      await alice.groups.markRead({ groupId: gid, seq: 5n });
      for (const [name, s] of streams) await waitMarkers(s, 1, name);
      // A lower seq moves nothing, so no stream hears of it; the next move is the next item.
      await alice.groups.markRead({ groupId: gid, seq: 4n });
      await alice.groups.markRead({ groupId: gid, seq: 99n }); // clamped to #6
      for (const [name, s] of streams) {
        await waitMarkers(s, 2, name);
        assert.deepEqual(
          markers(s),
          [
            [gid, 5],
            [gid, 6],
          ],
          name,
        );
      }
      // Bob's own marker reaches his stream; alice's, published before it, did not.
      await bob.groups.markRead({ groupId: gid, seq: 3n });
      await waitMarkers(bobs, 1, "bob's stream");
      assert.deepEqual(markers(bobs), [[gid, 3]], "bob's stream shows only bob's marker");
      assert.ok(streams.every(([, s]) => markers(s).length === 2), "alice's streams show nothing of bob's marker");
    } finally {
      for (const [, s] of streams) s.close();
      bobs.close();
      grpcJs.close();
    }
  });

  it("a marker moved while a device was offline is in ListGroups when it comes back", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "ofa");
    const bob = await registerUser(server.baseUrl, "grpc", "ofb");
    const { group } = await alice.groups.createGroup({ name: "later", memberUsernames: [bob.username] });
    assert.ok(group);
    await sendMany(bob, group.groupId, 3, { concurrency: 1 }); // #3 .. #5
    await alice.groups.markRead({ groupId: group.groupId, seq: 4n });
    // A stream opened afterwards gets no replay of markers: ListGroups is the state.
    const s = subscribe(as(alice, "grpc-web", server.baseUrl));
    try {
      await s.waitReady();
      assert.deepEqual([(await listed(alice, group.groupId)).lastReadSeq, (await listed(alice, group.groupId)).unreadCount], [4n, 1]);
      await alice.groups.markRead({ groupId: group.groupId, seq: 5n });
      await waitMarkers(s, 1, "the new stream");
      assert.deepEqual(markers(s), [[group.groupId, 5]]);
    } finally {
      s.close();
    }
  });
});
