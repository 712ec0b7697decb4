/**
 * History reads and the send limit, end to end. Pages answered by the
 * recent-messages cache must be the pages the store holds: the test reads
 * every page while the cache is warm, restarts the server (the embedded
 * cache is in-process, so it starts empty and every read goes to the
 * store), and compares.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { rejectsWith } from "../support/assertions.js";
import { type Scrape, scrape } from "../support/metrics-scrape.js";
import { freePort, historySnapshot, sendMany } from "../support/helpers.js";
import { MovableClock, registerUser, startTestServer } from "../support/test-server.js";

describe("history (e2e)", () => {
  it("gives the same pages from the warm cache as from the store, across capacity trims and membership events", async () => {
    const server = await startTestServer({ RECENT_MESSAGES_PER_GROUP: "6", PORT: String(await freePort()) });
    try {
      const alice = await registerUser(server.baseUrl, "grpc", "hist");
      const bob = await registerUser(server.baseUrl, "grpc", "hist");
      const { group } = await alice.groups.createGroup({ name: "history" });
      assert.ok(group);
      const gid = group.groupId;
      await sendMany(alice, gid, 4, { concurrency: 1 });
      await alice.groups.addMember({ groupId: gid, user: { case: "userId", value: bob.userId } });
      await sendMany(bob, gid, 5, { concurrency: 1 });
      await alice.groups.updateGroup({ groupId: gid, name: "history 2" });
      await sendMany(alice, gid, 3, { concurrency: 1 });
      const head = Number((await alice.messages.listMessages({ groupId: gid })).headSeq);
      assert.equal(head, 15);

      const warm = await historySnapshot(alice, gid, head);
      const warmPages = await scrape(server);
      await server.restart();
      const cold = await historySnapshot(alice, gid, head);
      const coldPages = await scrape(server);
      assert.deepEqual(warm, cold);
      const pages = (s: Scrape, source: string) => s.get("chat_history_pages_total", { source });
      assert.ok(pages(warmPages, "cache") > pages(coldPages, "cache"), "the warm cache answered pages");
      assert.ok(pages(coldPages, "store") > pages(warmPages, "store"), "after the restart the store answered them");
    } finally {
      await server.stop();
    }
  });
});

describe("send limit (e2e)", () => {
  it("limits each user's sends across groups with RESOURCE_EXHAUSTED and a retry hint; other users are not charged", async () => {
    const server = await startTestServer({ SEND_BURST: "3", SENDS_PER_SECOND: "1" });
    try {
      const alice = await registerUser(server.baseUrl, "grpc", "lim");
      const bob = await registerUser(server.baseUrl, "grpc", "lim");
      const { group: g1 } = await alice.groups.createGroup({ name: "one" });
      const { group: g2 } = await alice.groups.createGroup({ name: "two" });
      assert.ok(g1 && g2);
      await alice.groups.addMember({ groupId: g1.groupId, user: { case: "userId", value: bob.userId } });
      await sendMany(alice, g1.groupId, 2, { concurrency: 1, prefix: "a" });
      await sendMany(alice, g2.groupId, 1, { concurrency: 1, prefix: "b" });
      const err = await rejectsWith(
        alice.messages.sendMessage({ groupId: g2.groupId, text: "one too many", clientMessageId: "c-4" }),
        Code.ResourceExhausted,
        /too many messages; retry in 1 s/,
      );
      assert.equal(err.metadata.get("retry-after"), "1");
      await bob.messages.sendMessage({ groupId: g1.groupId, text: "bob has his own budget", clientMessageId: "b-1" });
      const history = await alice.messages.listMessages({ groupId: g2.groupId });
      assert.deepEqual(history.messages.map((m) => m.text), ["b 0"], "the refused message was not stored");
    } finally {
      await server.stop();
    }
  });

  it("charges a non-member's sends too, and once the budget is spent says RESOURCE_EXHAUSTED before NOT_FOUND", async () => {
    const server = await startTestServer({ SEND_BURST: "2", SENDS_PER_SECOND: "1" });
    try {
      const alice = await registerUser(server.baseUrl, "grpc", "lim");
      const mallory = await registerUser(server.baseUrl, "grpc", "lim");
      const { group } = await alice.groups.createGroup({ name: "closed" });
      assert.ok(group);
      for (const id of ["m-1", "m-2"]) {
        await rejectsWith(mallory.messages.sendMessage({ groupId: group.groupId, text: "let me in", clientMessageId: id }), Code.NotFound, /not found/);
      }
      await rejectsWith(
        mallory.messages.sendMessage({ groupId: group.groupId, text: "let me in", clientMessageId: "m-3" }),
        Code.ResourceExhausted,
        /too many messages; retry in 1 s/,
      );
      const history = await alice.messages.listMessages({ groupId: group.groupId });
      assert.deepEqual(history.messages, [], "nothing of a refused send is stored");
    } finally {
      await server.stop();
    }
  });
});

describe("history across retention (e2e)", () => {
  it("never pages an expired message, from the warm cache either: the remembered retention edge moves when its event expires", async () => {
    const clock = new MovableClock();
    const server = await startTestServer({ RETENTION: "1h", ACCESS_TOKEN_TTL: "1d" }, { clock });
    try {
      const alice = await registerUser(server.baseUrl, "grpc", "edge");
      const gid = (await alice.groups.createGroup({ name: "edge" })).group?.groupId ?? "";
      await sendMany(alice, gid, 3, { concurrency: 1 }); // seqs 2..4
      const first = await alice.messages.listMessages({ groupId: gid });
      assert.equal(first.firstRetainedSeq, 1n, "the edge (the group's creation) is read and remembered");
      clock.offsetMs += 40 * 60_000;
      await sendMany(alice, gid, 2, { concurrency: 1 }); // seqs 5..6, 40 min later
      clock.offsetMs += 30 * 60_000; // 2..4 and the creation are past the hour; 5..6 are not
      const before = await scrape(server);
      const page = await alice.messages.listMessages({ groupId: gid });
      const after = await scrape(server);
      assert.equal(after.get("chat_history_pages_total", { source: "cache" }) - before.get("chat_history_pages_total", { source: "cache" }), 1, "answered by the cache");
      assert.equal(page.firstRetainedSeq, 5n);
      assert.deepEqual(page.messages.map((m) => Number(m.seq)), [5, 6]);
      assert.equal(page.hasMore, false);
    } finally {
      await server.stop();
    }
  });
});
