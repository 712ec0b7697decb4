/**
 * Stream lifecycle: bounded buffers for clients that stop reading (DESIGN
 * invariant 5), heartbeats, and graceful shutdown.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { StreamService, SubscribeRequestSchema } from "../../gen/chat/v1/stream_service_pb.js";
import * as grpc from "@grpc/grpc-js";
import { authMetadata, grpcJsClient } from "../support/grpc-js-client.js";
import { freePort, range, sendMany } from "../support/helpers.js";
import { WsStreamEnd, grpcJsSubscribe, seqs, subscribe, wsSubscribe } from "../support/stream-reader.js";
import { type TestServer, clientsFor, registerUser, startTestServer } from "../support/test-server.js";

async function until(pred: () => boolean, ms = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("slow clients", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ STREAM_BUFFER_BYTES: "32768", MAX_TEXT_BYTES: "16000" });
  });
  after(async () => {
    await server.stop();
  });

  it("ends a gRPC stream that stops reading with RESOURCE_EXHAUSTED, and the client resumes from its cursor", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "sa");
    const bob = await registerUser(server.baseUrl, "grpc", "sb");
    const { group } = await alice.groups.createGroup({ name: "flood", memberUsernames: [bob.username] });
    assert.ok(group);
    const gid = group.groupId;
    const client = grpcJsClient(server.port, StreamService);
    const slow = grpcJsSubscribe(client, bob.token);
    await slow.waitReady();
    const openBefore = server.app.hub.size;
    slow.call.pause();

    // ~3 MB: far more than the HTTP/2 windows, the socket buffers and the cap.
    const text = "x".repeat(3000);
    const sent = await sendMany(alice, gid, 1000, { text, concurrency: 20 });
    await until(() => server.app.hub.size === openBefore - 1, 10_000, "the server to drop the slow stream");

    slow.call.resume();
    await slow.waitDone(10_000);
    assert.equal((slow.error as { code?: number }).code, 8, `RESOURCE_EXHAUSTED, got ${String(slow.error)}`);
    const got = seqs(slow.eventsOf(gid));
    const head = Number(group.headSeq);
    assert.ok(got.length < sent.length, "the slow stream did not get everything");
    assert.deepEqual(got, range(head + 1, head + got.length), "what it got is a gap-free prefix");

    const cursor = BigInt(got.at(-1) ?? head);
    const again = grpcJsSubscribe(client, bob.token, [{ groupId: gid, seq: cursor }]);
    await again.waitForEvents(gid, sent.length - got.length, 20_000);
    assert.deepEqual(seqs(again.eventsOf(gid)), range(Number(cursor) + 1, head + sent.length));
    again.close();
    client.close();
  });

  it("ends a WebSocket stream that stops reading with close code 4008 (RESOURCE_EXHAUSTED), and the client resumes", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "ka");
    const bob = await registerUser(server.baseUrl, "grpc", "kb");
    const { group } = await alice.groups.createGroup({ name: "flood-ws", memberUsernames: [bob.username] });
    assert.ok(group);
    const gid = group.groupId;
    const slow = wsSubscribe(server.port, bob.token);
    await slow.waitReady();
    const openBefore = server.app.hub.size;
    slow.ws.pause();

    const text = "x".repeat(3000);
    const sent = await sendMany(alice, gid, 1000, { text, concurrency: 20 });
    await until(() => server.app.hub.size === openBefore - 1, 10_000, "the server to drop the slow stream");

    slow.ws.resume();
    await slow.waitDone(15_000);
    assert.ok(slow.error instanceof WsStreamEnd, `closed with a status, got ${String(slow.error)}`);
    assert.equal(slow.error.closeCode, 4008, slow.error.reason);
    const got = seqs(slow.eventsOf(gid));
    const head = Number(group.headSeq);
    assert.ok(got.length < sent.length, "the slow stream did not get everything");
    assert.deepEqual(got, range(head + 1, head + got.length), "what it got is a gap-free prefix");

    const cursor = BigInt(got.at(-1) ?? head);
    const again = wsSubscribe(server.port, bob.token, [{ groupId: gid, seq: cursor }]);
    await again.waitForEvents(gid, sent.length - got.length, 20_000);
    assert.deepEqual(seqs(again.eventsOf(gid)), range(Number(cursor) + 1, head + sent.length));
    again.close();
  });

  it("drops a stuck WebSocket replay at once when its client breaks the protocol, and keeps serving", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "xa");
    const bob = await registerUser(server.baseUrl, "grpc", "xb");
    const { group } = await alice.groups.createGroup({ name: "stuck-ws", memberUsernames: [bob.username] });
    assert.ok(group);
    const gid = group.groupId;
    // A backlog far larger than the socket buffers, replayed to a client that sends its request and stops reading:
    // the replay waits for the socket to drain.
    await sendMany(alice, gid, 1000, { text: "z".repeat(3000), concurrency: 20 });
    const openBefore = server.app.hub.size;
    const stuck = wsSubscribe(server.port, bob.token, [{ groupId: gid, seq: group.headSeq }]);
    stuck.ws.on("open", () => stuck.ws.pause());
    await until(() => server.app.hub.size === openBefore + 1, 10_000, "the stream to open");
    await new Promise((r) => setTimeout(r, 500));
    // A second message is a protocol error: the stream ends (4003) and the hub forgets it now, not once the client
    // has read the close frame (it never will).
    stuck.ws.send(Buffer.alloc(0));
    await until(() => server.app.hub.size === openBefore, 3000, "the hub to drop the stream");
    // After the 10 s grace the socket is dropped under the waiting replay; the process must still answer.
    await new Promise((r) => setTimeout(r, 11_000));
    const answered = await Promise.race([
      alice.groups.listGroups({}).then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 3000)),
    ]);
    assert.ok(answered, "the server still answers");
    stuck.ws.terminate();
  });

  it("ends a gRPC-Web (HTTP/1.1) stream whose client stops reading", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "wa");
    const bob = await registerUser(server.baseUrl, "grpc", "wb");
    const { group } = await alice.groups.createGroup({ name: "flood-web", memberUsernames: [bob.username] });
    assert.ok(group);
    const body = Buffer.from(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, {})));
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, body.length]), body]);
    const socket = net.connect(server.port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    let received = "";
    socket.on("data", (d: Buffer) => {
      received += d.toString("latin1");
      if (received.includes("\r\n\r\n")) socket.pause(); // headers seen: stop reading
    });
    socket.write(
      `POST /chat.v1.StreamService/Subscribe HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/grpc-web+proto\r\n` +
        `x-grpc-web: 1\r\nauthorization: Bearer ${bob.token}\r\ncontent-length: ${frame.length}\r\n\r\n`,
    );
    socket.write(frame);
    await until(() => received.includes("\r\n\r\n"), 5000, "response headers");
    assert.match(received, /^HTTP\/1.1 200/);
    const openBefore = server.app.hub.size;
    // HTTP/1.1 has no flow control of its own: fill the kernel's socket buffers (several MB on loopback) first.
    await sendMany(alice, group.groupId, 1000, { text: "y".repeat(16_000), concurrency: 20 });
    await until(() => server.app.hub.size === openBefore - 1, 10_000, "the server to drop the slow stream");
    socket.destroy();
  });

  it("ends a Connect (JSON) stream whose client stops reading", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "ja");
    const bob = await registerUser(server.baseUrl, "grpc", "jb");
    const { group } = await alice.groups.createGroup({ name: "flood-json", memberUsernames: [bob.username] });
    assert.ok(group);
    const body = Buffer.from(JSON.stringify({ cursors: [] }));
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, body.length]), body]);
    const socket = net.connect(server.port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    let received = "";
    socket.on("data", (d: Buffer) => {
      received += d.toString("latin1");
      if (received.includes("\r\n\r\n")) socket.pause();
    });
    socket.write(
      `POST /chat.v1.StreamService/Subscribe HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/connect+json\r\n` +
        `connect-protocol-version: 1\r\nauthorization: Bearer ${bob.token}\r\ncontent-length: ${frame.length}\r\n\r\n`,
    );
    socket.write(frame);
    await until(() => received.includes("\r\n\r\n"), 5000, "response headers");
    assert.match(received, /^HTTP\/1.1 200/);
    assert.match(received, /application\/connect\+json/, "served by connect-node, not the binary fast path");
    const openBefore = server.app.hub.size;
    await sendMany(alice, group.groupId, 1000, { text: "z".repeat(16_000), concurrency: 20 });
    await until(() => server.app.hub.size === openBefore - 1, 10_000, "the server to drop the slow stream");
    socket.destroy();
  });

  it("ends a Connect (bidi) stream whose client sends but never reads", async () => {
    const bob = await registerUser(server.baseUrl, "grpc", "bb");
    const client = grpcJsClient(server.port, StreamService);
    const call = (client.connect as (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, unknown>).call(client, authMetadata(bob.token));
    let error: grpc.ServiceError | undefined;
    call.on("error", (e: grpc.ServiceError) => {
      error = e;
    });
    call.on("data", () => {});
    call.write({ requestId: "s", payload: { case: "subscribe", value: { cursors: [] } } });
    await until(() => server.app.hub.size >= 1, 5000, "the stream to open");
    const openBefore = server.app.hub.size;
    call.pause();
    // Every bad ack gets an error reply; unread, they pile up until the cap.
    for (let i = 0; i < 20_000 && server.app.hub.size === openBefore; i++) {
      call.write({ requestId: `a${i}`, payload: { case: "ack", value: { groupId: "not-a-group", seq: 1n } } });
      if (i % 500 === 499) await new Promise((r) => setTimeout(r, 10));
    }
    await until(() => server.app.hub.size === openBefore - 1, 10_000, "the server to drop the stream");
    call.resume();
    await until(() => error !== undefined, 10_000, "the stream to fail");
    assert.equal(error?.code, grpc.status.RESOURCE_EXHAUSTED);
    client.close();
  });
});

describe("small stream buffers", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ STREAM_BUFFER_BYTES: "8192" });
  });
  after(async () => {
    await server.stop();
  });

  for (const protocol of ["grpc", "grpc-web", "connect-binary", "connect", "websocket"] as const) {
    it(`replays a backlog larger than the buffer cap to a client that reads (${protocol})`, async () => {
      const alice = await registerUser(server.baseUrl, protocol === "websocket" ? "grpc" : protocol, "sm");
      const { group } = await alice.groups.createGroup({ name: "small" });
      assert.ok(group);
      await sendMany(alice, group.groupId, 50, { text: "q".repeat(2000), concurrency: 5 });
      const cursors = [{ groupId: group.groupId, seq: 1n }];
      const s = protocol === "websocket" ? wsSubscribe(server.port, alice.token, cursors) : subscribe(alice, cursors);
      await s.waitForEvents(group.groupId, 50, 10_000);
      assert.deepEqual(seqs(s.eventsOf(group.groupId)), range(2, 51));
      s.close();
    });
  }
});

describe("heartbeats", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ HEARTBEAT_INTERVAL: "150ms" });
  });
  after(async () => {
    await server.stop();
  });

  it("sends heartbeats on idle streams and announces the interval", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "hb");
    const s = subscribe(alice);
    await s.waitFor((r) => r.items.filter((i) => i.payload.case === "heartbeat").length >= 3, 5000, "3 heartbeats");
    const ready = s.items[0];
    assert.ok(ready?.payload.case === "ready");
    assert.equal(ready.payload.value.heartbeatIntervalSeconds, 1);
    s.close();
  });
});

describe("graceful shutdown", () => {
  it("goes NOT_SERVING, ends streams with UNAVAILABLE and lets in-flight sends finish durably", async () => {
    const server = await startTestServer({ SHUTDOWN_GRACE: "5s", PORT: String(await freePort()) });
    try {
      const alice = await registerUser(server.baseUrl, "grpc", "gs");
      const { group } = await alice.groups.createGroup({ name: "bye" });
      assert.ok(group);
      const stream = subscribe(alice);
      const wsStream = wsSubscribe(server.port, alice.token);
      await Promise.all([stream.waitReady(), wsStream.waitReady()]);
      const sends = range(1, 30).map((i) =>
        alice.messages.sendMessage({ groupId: group.groupId, text: `m${i}`, clientMessageId: `inflight-${i}` }).then(
          (r) => r.message?.clientMessageId,
          () => undefined,
        ),
      );
      // Registrations spend ~50 ms in argon2: these are surely inside their handlers when shutdown starts.
      const slow = range(1, 3).map((i) => clientsFor(server.baseUrl, "grpc").auth.register({ username: `inflight${i}`, password: "correct horse battery" }));
      await Promise.race(sends);
      await new Promise((r) => setTimeout(r, 15));
      const app = server.app;
      const stopping = app.stop();
      assert.equal(app.health.getStatus(""), 2, "NOT_SERVING as soon as shutdown starts");
      await stream.waitDone();
      assert.equal((stream.error as { code?: number }).code, Code.Unavailable);
      await wsStream.waitDone();
      assert.ok(wsStream.error instanceof WsStreamEnd);
      assert.equal(wsStream.error.closeCode, 4000 + Code.Unavailable, wsStream.error.reason);
      await stopping;
      const acked = (await Promise.all(sends)).filter((id) => id !== undefined);
      assert.ok(acked.length >= 1, "some sends were acknowledged");
      const registered = await Promise.all(slow);
      assert.equal(registered.length, 3, "calls in flight when shutdown began finished successfully");

      await server.restart(); // same port and data directory
      const history = await alice.messages.listMessages({ groupId: group.groupId, limit: 200 });
      const stored = new Set(history.messages.map((m) => m.clientMessageId));
      for (const id of acked) assert.ok(stored.has(id as string), `acknowledged send ${id} is stored`);
      for (const r of registered) {
        const again = await clientsFor(server.baseUrl, "grpc").auth.login({ username: r.user?.username ?? "", password: "correct horse battery" });
        assert.equal(again.user?.userId, r.user?.userId);
      }
    } finally {
      await server.stop();
    }
  });
});
