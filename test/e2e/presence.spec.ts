/**
 * Presence, end to end: ListMembers names the members of its page that
 * have a live stream, from the moment the stream is ready until it ends.
 */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { subscribe } from "../support/stream-reader.js";
import { type Clients, type TestServer, registerUser, startTestServer } from "../support/test-server.js";

/** onlineIn polls ListMembers until the online set equals `want` (bounded: about 5 s) and returns the last answer. */
async function onlineIn(c: Clients, groupId: string, want: readonly string[]): Promise<string[]> {
  let online: string[] = [];
  for (let i = 0; i < 100; i++) {
    online = (await c.groups.listMembers({ groupId })).onlineUserIds.slice().sort();
    if (JSON.stringify(online) === JSON.stringify([...want].sort())) break;
    await sleep(50);
  }
  return online;
}

describe("presence (e2e)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it("lists the members with a live stream, across two streams of one user, until the last one ends", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "pres");
    const bob = await registerUser(server.baseUrl, "connect", "pres");
    const carol = await registerUser(server.baseUrl, "grpc", "pres");
    const { group } = await alice.groups.createGroup({ name: "presence", memberUsernames: [bob.username, carol.username] });
    assert.ok(group);
    const gid = group.groupId;
    assert.deepEqual(await onlineIn(alice, gid, []), []);

    const phone = subscribe(bob);
    const laptop = subscribe(bob);
    await phone.waitReady();
    await laptop.waitReady();
    assert.deepEqual(await onlineIn(alice, gid, [bob.userId]), [bob.userId]);

    phone.close();
    await sleep(200);
    assert.deepEqual(await onlineIn(alice, gid, [bob.userId]), [bob.userId], "the laptop's stream is still live");
    laptop.close();
    assert.deepEqual(await onlineIn(alice, gid, []), []);
  });
});
