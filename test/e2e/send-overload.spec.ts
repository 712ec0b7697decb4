/**
 * Load shedding (SEND_MAX_IN_FLIGHT): past the number of sends one process
 * works on at once, SendMessage is refused at once with RESOURCE_EXHAUSTED
 * and a retry-after hint, nothing of a refused send is written, and a retry
 * with the same client_message_id goes through once the process has room.
 * On a StreamService/Connect stream the same hint is the error's retry_after.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type ConnectResponse, ConnectRequestSchema, StreamService } from "../../gen/chat/v1/stream_service_pb.js";
import { scrape } from "../support/metrics-scrape.js";
import { type Clients, type TestServer, bearer, registerUser, startTestServer } from "../support/test-server.js";

describe("SendMessage load shedding (e2e)", () => {
  let server: TestServer;
  let alice: Clients;
  let groupId: string;
  before(async () => {
    server = await startTestServer({ SEND_MAX_IN_FLIGHT: "1" });
    alice = await registerUser(server.baseUrl, "grpc", "busy");
    const { group } = await alice.groups.createGroup({ name: "busy" });
    groupId = group?.groupId ?? "";
  });
  after(async () => {
    await server.stop();
  });

  it("refuses sends past the in-flight limit with RESOURCE_EXHAUSTED and retry-after, writes none of them, and takes their retries", async () => {
    const before = await scrape(server);
    const ids = Array.from({ length: 40 }, (_, i) => `busy-${i}`);
    // 40 sends at once on one HTTP/2 connection: the first holds the only slot until its commit (next loop turn).
    const results = await Promise.allSettled(ids.map((id) => alice.messages.sendMessage({ groupId, text: id, clientMessageId: id })));
    const accepted = ids.filter((_, i) => results[i]!.status === "fulfilled");
    const refused = ids.filter((_, i) => results[i]!.status === "rejected");
    assert.ok(accepted.length >= 1 && refused.length >= 1, `some accepted (${accepted.length}) and some refused (${refused.length})`);
    for (const r of results) {
      if (r.status === "fulfilled") continue;
      const err = ConnectError.from(r.reason);
      assert.equal(err.code, Code.ResourceExhausted, err.message);
      assert.match(err.rawMessage, /server is busy \(1 sends in progress\); retry in 1-3 s with the same client_message_id/);
      const retryAfter = Number(err.metadata.get("retry-after"));
      assert.ok(retryAfter >= 1 && retryAfter <= 3, `retry-after ${err.metadata.get("retry-after")}`);
    }

    // Nothing of a refused send was written: the history holds exactly the accepted ones.
    const page = await alice.messages.listMessages({ groupId, limit: 100 });
    assert.deepEqual(page.messages.map((m) => m.clientMessageId).sort(), [...accepted].sort());

    // Retried one at a time, every refused send goes through, once each.
    for (const id of refused) {
      const res = await alice.messages.sendMessage({ groupId, text: id, clientMessageId: id });
      assert.equal(res.message?.clientMessageId, id);
    }
    const all = await alice.messages.listMessages({ groupId, limit: 100 });
    assert.deepEqual(all.messages.map((m) => m.clientMessageId).sort(), [...ids].sort());
    assert.deepEqual(all.messages.map((m) => m.seq), all.messages.map((_, i) => all.messages[0]!.seq + BigInt(i)), "no seq skipped");

    const afterwards = await scrape(server);
    const delta = (code: string) => afterwards.get("chat_sends_total", { code, via: "rpc" }) - before.get("chat_sends_total", { code, via: "rpc" });
    assert.equal(delta("RESOURCE_EXHAUSTED"), refused.length, "each refusal is counted");
    assert.equal(afterwards.get("chat_sends_shed_total") - before.get("chat_sends_shed_total"), refused.length, "as shed, not rate-limited");
    assert.equal(delta("OK"), ids.length, "each accepted send and retry is counted once");
    assert.equal(afterwards.get("chat_sends_in_flight"), 0, "no send left in flight");
  });

  it("a send refused on a Connect stream carries the hint as retry_after (here a user's rate limit)", async () => {
    const limited = await startTestServer({ SEND_BURST: "1", SENDS_PER_SECOND: "1" });
    try {
      const bob = await registerUser(limited.baseUrl, "grpc", "hint");
      const { group } = await bob.groups.createGroup({ name: "hint" });
      const gid = group?.groupId ?? "";
      const streams = createClient(StreamService, createGrpcTransport({ baseUrl: limited.baseUrl, interceptors: [bearer(() => bob.token)] }));
      const send = (id: string) =>
        create(ConnectRequestSchema, { requestId: id, payload: { case: "sendMessage", value: { groupId: gid, text: id, clientMessageId: id } } });
      let release = () => {};
      const held = new Promise<void>((r) => (release = r));
      async function* requests() {
        yield create(ConnectRequestSchema, { requestId: "sub", payload: { case: "subscribe", value: {} } });
        yield send("one");
        yield send("two"); // the burst of 1 is spent: refused
        await held;
      }
      const results: ConnectResponse[] = [];
      for await (const r of streams.connect(requests())) {
        if (r.payload.case === "sendResult") results.push(r);
        if (results.length === 2) break;
      }
      release();
      const outcome = (i: number) => (results[i]?.payload.case === "sendResult" ? results[i].payload.value.outcome : undefined);
      assert.equal(outcome(0)?.case, "response");
      const refused = outcome(1);
      assert.equal(refused?.case, "error");
      if (refused?.case !== "error") return;
      assert.equal(refused.value.code, "resource_exhausted");
      assert.match(refused.value.message, /too many messages; retry in 1 s/);
      assert.ok(refused.value.retryAfter, "retry_after is set");
      const ms = durationMs(refused.value.retryAfter);
      assert.ok(ms > 0 && ms <= 1000, `retry_after ${ms} ms`);
    } finally {
      await limited.stop();
    }
  });
});
