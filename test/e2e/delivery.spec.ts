/**
 * Delivery (DESIGN invariants 1-3): dense per-group seqs, idempotent sends,
 * and every open stream of every member receiving each event exactly once,
 * in order, over every protocol (the gRPC fast path included).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { type ConnectResponse, StreamService } from "../../gen/chat/v1/stream_service_pb.js";
import { authMetadata, grpcJsClient } from "../support/grpc-js-client.js";
import { codeOf, range, sendMany } from "../support/helpers.js";
import { grpcJsSubscribe, seqs, subscribe } from "../support/stream-reader.js";
import { type TestServer, bearer, registerUser, startTestServer } from "../support/test-server.js";

describe("delivery", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it("delivers every event once, in seq order, to every stream of every member over every protocol", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "alice");
    const bob = await registerUser(server.baseUrl, "grpc-web", "bob");
    const carol = await registerUser(server.baseUrl, "connect", "carol");
    const { group } = await alice.groups.createGroup({ name: "all", memberUsernames: [bob.username, carol.username] });
    assert.ok(group);
    const gid = group.groupId;
    const head = Number(group.headSeq);
    const grpcJs = grpcJsClient(server.port, StreamService);
    const streams = [
      subscribe(alice), // alice's first device: connect-es over gRPC (fast path)
      grpcJsSubscribe(grpcJs, alice.token), // alice's second device: grpc-js (fast path)
      subscribe(bob), // gRPC-Web over HTTP/1.1 (fast path)
      subscribe(carol), // Connect protocol with JSON over HTTP/2 (connect-node)
    ];
    await Promise.all(streams.map((s) => s.waitReady()));

    const senders = [alice, bob, carol];
    const sends = senders.map((c, i) => sendMany(c, gid, 40, { prefix: `s${i}`, concurrency: 8 }));
    const changed = alice.groups.updateGroup({ groupId: gid, name: "renamed" });
    await Promise.all([...sends, changed]);
    const total = 3 * 40 + 1;

    for (const s of streams) await s.waitForEvents(gid, total, 10_000);
    for (const s of streams) {
      assert.deepEqual(seqs(s.eventsOf(gid)), range(head + 1, head + total), "dense, ordered, no duplicates");
    }
    // The sender's own other device sees its messages too, with the sender and text intact.
    const texts = streams[1]?.eventsOf(gid).flatMap((e) => (e.kind.case === "message" ? [e.kind.value.text] : []));
    assert.equal(texts?.filter((t) => t.startsWith("s0 ")).length, 40);
    for (const s of streams) s.close();
    grpcJs.close();
    // Client-side cancels free the server's streams (no leak per protocol).
    for (let i = 0; i < 250 && server.app.hub.size > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.app.hub.size, 0);
  });

  it("concurrent sends from many clients get dense, unique seqs", async () => {
    const owner = await registerUser(server.baseUrl, "grpc", "own");
    const members = await Promise.all(range(1, 8).map(() => registerUser(server.baseUrl, "grpc", "mem")));
    const { group } = await owner.groups.createGroup({ name: "busy", memberUsernames: members.map((m) => m.username) });
    assert.ok(group);
    const results = (await Promise.all(members.map((m, i) => sendMany(m, group.groupId, 25, { prefix: `c${i}`, concurrency: 5 })))).flat();
    const got = results.map((m) => Number(m.seq)).sort((a, b) => a - b);
    const head = Number(group.headSeq);
    assert.deepEqual(got, range(head + 1, head + 200));
    const ids = new Set(results.map((m) => m.messageId));
    assert.equal(ids.size, 200);
  });

  it("a retry with the same client_message_id returns the original and is delivered once", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "retry");
    const { group } = await alice.groups.createGroup({ name: "retry", memberUsernames: [] });
    assert.ok(group);
    const stream = subscribe(alice);
    await stream.waitReady();
    const req = { groupId: group.groupId, text: "once", clientMessageId: "retry-1" };
    const first = await alice.messages.sendMessage(req);
    const [second, third] = await Promise.all([alice.messages.sendMessage(req), alice.messages.sendMessage(req)]);
    assert.equal(first.duplicate, false);
    for (const r of [second, third]) {
      assert.equal(r.duplicate, true);
      assert.equal(r.message?.seq, first.message?.seq);
      assert.equal(r.message?.messageId, first.message?.messageId);
    }
    const marker = await alice.messages.sendMessage({ groupId: group.groupId, text: "marker", clientMessageId: "retry-2" });
    await stream.waitFor((r) => r.eventsOf(group.groupId).some((e) => e.seq === marker.message?.seq));
    assert.deepEqual(seqs(stream.eventsOf(group.groupId)), [Number(first.message?.seq), Number(marker.message?.seq)]);
    const history = await alice.messages.listMessages({ groupId: group.groupId });
    assert.deepEqual(
      history.messages.map((m) => m.text),
      ["once", "marker"],
    );
    stream.close();
  });

  it("message ids sort by creation time and carry the server's clock", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "ids");
    const { group } = await alice.groups.createGroup({ name: "ids" });
    assert.ok(group);
    const before = Date.now();
    const sent = await sendMany(alice, group.groupId, 5, { concurrency: 1 });
    const ids = sent.map((m) => m.messageId);
    assert.deepEqual([...ids].sort(), ids);
    for (const m of sent) {
      const at = Number(m.sentAt?.seconds) * 1000 + Math.floor((m.sentAt?.nanos ?? 0) / 1e6);
      assert.ok(at >= before - 1000 && at <= Date.now() + 1000);
      assert.equal(m.sender?.userId, alice.userId);
      assert.equal(m.sender?.username, alice.username);
    }
  });

  // gRPC and Connect-binary over HTTP/2 take the fast path; Connect with JSON goes through connect-node.
  const bidiTransports = {
    grpc: (token: () => string | undefined) => createGrpcTransport({ baseUrl: server.baseUrl, interceptors: [bearer(token)] }),
    "connect-binary-h2": (token: () => string | undefined) =>
      createConnectTransport({ baseUrl: server.baseUrl, httpVersion: "2", useBinaryFormat: true, interceptors: [bearer(token)] }),
    "connect-json-h2": (token: () => string | undefined) =>
      createConnectTransport({ baseUrl: server.baseUrl, httpVersion: "2", useBinaryFormat: false, interceptors: [bearer(token)] }),
  };
  for (const [name, makeTransport] of Object.entries(bidiTransports)) it(`Connect carries sends, their results, acks and the events on one stream (${name})`, async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "bidi");
    const streams = createClient(StreamService, makeTransport(() => alice.token));
    const { group } = await alice.groups.createGroup({ name: "bidi" });
    assert.ok(group);
    const gid = group.groupId;
    const outbox: import("../../gen/chat/v1/stream_service_pb.js").ConnectRequest[] = [];
    let wake: (() => void) | undefined;
    let closed = false;
    const push = (r: (typeof outbox)[number]) => {
      outbox.push(r);
      wake?.();
    };
    async function* requests() {
      for (;;) {
        const next = outbox.shift();
        if (next) {
          yield next;
          continue;
        }
        if (closed) return;
        await new Promise<void>((r) => {
          wake = r;
        });
      }
    }
    const abort = new AbortController();
    const responses: import("../../gen/chat/v1/stream_service_pb.js").ConnectResponse[] = [];
    push({ $typeName: "chat.v1.ConnectRequest", requestId: "sub", payload: { case: "subscribe", value: { $typeName: "chat.v1.SubscribeRequest", cursors: [] } } });
    const reading = (async () => {
      for await (const r of streams.connect(requests(), { signal: abort.signal })) responses.push(r);
    })().catch(() => {});
    const waitFor = async (pred: () => boolean) => {
      for (let i = 0; i < 250 && !pred(); i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(pred(), "timed out");
    };
    await waitFor(() => responses.some((r) => r.payload.case === "item" && r.payload.value.payload.case === "ready"));
    const send = (id: string, text: string) =>
      push({
        $typeName: "chat.v1.ConnectRequest",
        requestId: id,
        payload: { case: "sendMessage", value: { $typeName: "chat.v1.SendMessageRequest", groupId: gid, text, clientMessageId: id } },
      });
    send("a", "over the stream");
    send("b", "   ");
    send("c", "second");
    await waitFor(() => responses.filter((r) => r.payload.case === "sendResult").length === 3);
    const results = responses.filter((r) => r.payload.case === "sendResult");
    assert.deepEqual(
      results.map((r) => r.requestId),
      ["a", "b", "c"],
    );
    const outcome = (i: number) => {
      const r = results[i];
      return r?.payload.case === "sendResult" ? r.payload.value.outcome : undefined;
    };
    const sentSeq = (i: number) => {
      const o = outcome(i);
      return o?.case === "response" ? o.value.message?.seq : undefined;
    };
    const errorCode = (i: number) => {
      const o = outcome(i);
      return o?.case === "error" ? o.value.code : undefined;
    };
    assert.equal(outcome(0)?.case, "response");
    assert.equal(errorCode(1), "invalid_argument");
    const seqA = sentSeq(0);
    const seqC = sentSeq(2);
    assert.ok(seqA !== undefined && seqC !== undefined && seqC === seqA + 1n);
    const events = () =>
      responses.flatMap((r) => (r.payload.case === "item" && r.payload.value.payload.case === "event" ? [r.payload.value.payload.value.seq] : []));
    await waitFor(() => events().length === 2);
    assert.deepEqual(events(), [seqA, seqC]);

    push({ $typeName: "chat.v1.ConnectRequest", requestId: "ack", payload: { case: "ack", value: { $typeName: "chat.v1.Ack", groupId: gid, seq: seqC ?? 0n } } });
    for (let i = 0; i < 100; i++) {
      const g = await alice.groups.getGroup({ groupId: gid });
      if (g.group?.ackedSeq === seqC) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal((await alice.groups.getGroup({ groupId: gid })).group?.ackedSeq, seqC);
    closed = true;
    wake?.();
    abort.abort();
    await reading;
  });

  for (const protocol of ["grpc", "grpc-web", "connect-binary", "connect"] as const) {
    it(`Subscribe answers bad calls with a clear status and delivers normally (${protocol})`, async () => {
      const alice = await registerUser(server.baseUrl, protocol, "fp");
      const { group } = await alice.groups.createGroup({ name: "fast" });
      assert.ok(group);
      const token = alice.token;
      alice.token = undefined;
      const anonymous = subscribe(alice);
      await anonymous.waitDone();
      assert.equal((anonymous.error as { code?: number }).code, Code.Unauthenticated);
      alice.token = `${token}x`;
      const tampered = subscribe(alice);
      await tampered.waitDone();
      assert.equal((tampered.error as { code?: number }).code, Code.Unauthenticated);
      alice.token = token;
      const malformed = subscribe(alice, [{ groupId: "not-an-id", seq: 1n }]);
      await malformed.waitDone();
      assert.equal((malformed.error as { code?: number }).code, Code.InvalidArgument);
      assert.match(String(malformed.error), /cursors.group_id/);

      const s = subscribe(alice);
      await s.waitReady();
      await sendMany(alice, group.groupId, 3, { concurrency: 1 });
      await s.waitForEvents(group.groupId, 3);
      assert.deepEqual(seqs(s.eventsOf(group.groupId)), [2, 3, 4]);
      s.close();
    });
  }

  it("Connect works from a grpc-js client: subscribe, send, result and event on one stream", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "gbidi");
    const { group } = await alice.groups.createGroup({ name: "gbidi" });
    assert.ok(group);
    const client = grpcJsClient(server.port, StreamService);
    const call = (client.connect as (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, ConnectResponse>).call(
      client,
      authMetadata(alice.token),
    );
    const got: ConnectResponse[] = [];
    call.on("data", (r: ConnectResponse) => got.push(r));
    call.on("error", () => {});
    const until = async (pred: () => boolean) => {
      for (let i = 0; i < 250 && !pred(); i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(pred(), "timed out");
    };
    call.write({ requestId: "sub", payload: { case: "subscribe", value: { cursors: [] } } });
    await until(() => got.some((r) => r.payload.case === "item" && r.payload.value.payload.case === "ready"));
    call.write({
      requestId: "m1",
      payload: { case: "sendMessage", value: { groupId: group.groupId, text: "from a phone", clientMessageId: "phone-1" } },
    });
    await until(() => got.some((r) => r.payload.case === "item" && r.payload.value.payload.case === "event"));
    const result = got.find((r) => r.requestId === "m1");
    assert.ok(result?.payload.case === "sendResult" && result.payload.value.outcome.case === "response");
    const sentSeq = result.payload.value.outcome.value.message?.seq;
    const event = got.find((r) => r.payload.case === "item" && r.payload.value.payload.case === "event");
    assert.ok(event?.payload.case === "item" && event.payload.value.payload.case === "event");
    assert.equal(event.payload.value.payload.value.seq, sentSeq);
    call.cancel();
    client.close();
  });

  it("Connect rejects a first request without subscribe", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "bidi2");
    async function* requests() {
      yield {
        $typeName: "chat.v1.ConnectRequest" as const,
        requestId: "x",
        payload: { case: "ack" as const, value: { $typeName: "chat.v1.Ack" as const, groupId: "", seq: 0n } },
      };
    }
    const code = await codeOf(
      (async () => {
        for await (const _ of alice.streams.connect(requests())) {
          // nothing expected
        }
      })(),
    );
    assert.equal(code, Code.InvalidArgument);
  });
});
