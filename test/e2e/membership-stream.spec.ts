/**
 * Membership changes reach open streams without reconnecting (DESIGN
 * invariant 4): an added member starts receiving the group at once; a
 * removed member's stream carries the removal as the group's last event,
 * and the removed member can no longer read or send.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { StreamService } from "../../gen/chat/v1/stream_service_pb.js";
import { grpcJsClient } from "../support/grpc-js-client.js";
import { codeOf, sendMany } from "../support/helpers.js";
import { grpcJsSubscribe, seqs, subscribe } from "../support/stream-reader.js";
import { PROTOCOLS, type TestServer, registerUser, startTestServer } from "../support/test-server.js";

describe("membership on live streams", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  for (const protocol of PROTOCOLS) {
    it(`an added member's open stream starts carrying the group; a removed one's stops at once (${protocol})`, async () => {
      const alice = await registerUser(server.baseUrl, "grpc", "ma");
      const carol = await registerUser(server.baseUrl, protocol, "mc");
      const { group } = await alice.groups.createGroup({ name: "club" });
      const other = (await alice.groups.createGroup({ name: "lobby", memberUsernames: [carol.username] })).group;
      assert.ok(group && other);
      const gid = group.groupId;
      const stream = subscribe(carol);
      await stream.waitReady();
      const ready = stream.items[0];
      assert.ok(ready?.payload.case === "ready");
      assert.deepEqual(
        ready.payload.value.groups.map((g) => g.groupId),
        [other.groupId],
      );

      await sendMany(alice, gid, 2, { prefix: "before" }); // seqs 2, 3: carol must not see them
      const added = await alice.groups.addMember({ groupId: gid, user: { case: "username", value: carol.username } });
      await sendMany(alice, gid, 2, { prefix: "member", concurrency: 1 }); // seqs 5, 6
      await stream.waitForEvents(gid, 3);
      const joined = stream.items.find((i) => i.payload.case === "groupJoined");
      assert.ok(joined?.payload.case === "groupJoined");
      assert.equal(joined.payload.value.groupId, gid);
      assert.deepEqual(seqs(stream.eventsOf(gid)), [4, 5, 6]);
      const first = stream.eventsOf(gid)[0];
      assert.equal(first?.kind.case, "memberAdded");
      assert.equal(added.seq, 4n);

      const removed = await alice.groups.removeMember({ groupId: gid, userId: carol.userId });
      await sendMany(alice, gid, 3, { prefix: "after" }); // carol must not get these
      // A marker in another group proves the stream is alive and past the sends above.
      const marker = await alice.messages.sendMessage({ groupId: other.groupId, text: "marker", clientMessageId: "marker" });
      await stream.waitFor((r) => r.eventsOf(other.groupId).some((e) => e.seq === marker.message?.seq));
      const events = stream.eventsOf(gid);
      assert.deepEqual(seqs(events), [4, 5, 6, Number(removed.seq)]);
      assert.equal(events.at(-1)?.kind.case, "memberRemoved");

      assert.equal(await codeOf(carol.messages.listMessages({ groupId: gid })), Code.NotFound);
      assert.equal(await codeOf(carol.messages.sendMessage({ groupId: gid, text: "hi", clientMessageId: "x" })), Code.NotFound);
      stream.close();
    });
  }

  it("a member who leaves stops receiving on every device, and a re-added one resumes right after the removal", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "la");
    const dave = await registerUser(server.baseUrl, "grpc", "ld");
    const { group } = await alice.groups.createGroup({ name: "door", memberUsernames: [dave.username] });
    assert.ok(group);
    const gid = group.groupId;
    const client = grpcJsClient(server.port, StreamService);
    const phone = grpcJsSubscribe(client, dave.token);
    const laptop = subscribe(dave);
    await Promise.all([phone.waitReady(), laptop.waitReady()]);

    const left = await dave.groups.removeMember({ groupId: gid, userId: dave.userId });
    await sendMany(alice, gid, 2, { prefix: "gone" });
    const back = await alice.groups.addMember({ groupId: gid, user: { case: "userId", value: dave.userId } });
    const after = await sendMany(alice, gid, 2, { prefix: "back", concurrency: 1 });
    const lastSeq = Number(after.at(-1)?.seq);
    for (const s of [phone, laptop]) {
      await s.waitFor((r) => r.eventsOf(gid).some((e) => Number(e.seq) === lastSeq));
      assert.deepEqual(seqs(s.eventsOf(gid)), [Number(left.seq), Number(back.seq), lastSeq - 1, lastSeq]);
    }
    phone.close();
    laptop.close();
    client.close();
  });
});
