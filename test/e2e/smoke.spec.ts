import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { subscribe, seqs } from "../support/stream-reader.js";
import { type TestServer, registerUser, startTestServer } from "../support/test-server.js";

describe("smoke", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it("delivers a message to both members' streams", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "alice");
    const bob = await registerUser(server.baseUrl, "grpc-web", "bob");
    const { group } = await alice.groups.createGroup({ name: "team", memberUsernames: [bob.username] });
    assert.ok(group);
    const sa = subscribe(alice);
    const sb = subscribe(bob);
    await sa.waitReady();
    await sb.waitReady();
    const res = await alice.messages.sendMessage({ groupId: group.groupId, text: "hello", clientMessageId: "m1" });
    assert.equal(res.message?.seq, 3n);
    await sa.waitForEvents(group.groupId, 1);
    await sb.waitForEvents(group.groupId, 1);
    assert.deepEqual(seqs(sa.eventsOf(group.groupId)), [3]);
    assert.deepEqual(seqs(sb.eventsOf(group.groupId)), [3]);
    sa.close();
    sb.close();
  });
});
