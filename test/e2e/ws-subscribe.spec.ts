/**
 * Subscribe over WebSocket (services/wire/ws-subscribe.ts, docs/websocket.md):
 * the same stream as over gRPC (DESIGN invariants 3 and 4: every event once,
 * in seq order, resumable from cursors with no gap or duplicate), with its
 * own handshake, authentication and close codes (4000 + gRPC status).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";
import { StreamService } from "../../gen/chat/v1/stream_service_pb.js";
import { grpcJsClient } from "../support/grpc-js-client.js";
import { range, sendMany } from "../support/helpers.js";
import { grpcJsSubscribe, seqs, wsSubscribe } from "../support/stream-reader.js";
import { type TestServer, registerUser, startTestServer } from "../support/test-server.js";

describe("Subscribe over WebSocket", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it("delivers what the gRPC stream delivers, once and in order, and resumes from a cursor with no gap or duplicate", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "wsa");
    const bob = await registerUser(server.baseUrl, "grpc", "wsb");
    const { group } = await alice.groups.createGroup({ name: "ws", memberUsernames: [bob.username] });
    assert.ok(group && bob.token);
    const gid = group.groupId;
    const head = Number(group.headSeq);
    const ws = wsSubscribe(server.port, bob.token);
    const client = grpcJsClient(server.port, StreamService);
    const grpcStream = grpcJsSubscribe(client, bob.token);
    await Promise.all([ws.waitReady(), grpcStream.waitReady()]);
    assert.equal(ws.ws.protocol, "chat.v1.proto", "the server selects the chat.v1.proto subprotocol");

    await sendMany(alice, gid, 50, { concurrency: 10 });
    await Promise.all([ws.waitForEvents(gid, 50), grpcStream.waitForEvents(gid, 50)]);
    assert.deepEqual(seqs(ws.eventsOf(gid)), range(head + 1, head + 50));
    assert.deepEqual(ws.eventsOf(gid), grpcStream.eventsOf(gid), "the same events as on the gRPC stream");
    grpcStream.close();
    client.close();

    ws.close();
    await ws.waitDone();
    assert.equal(ws.error, undefined, "a client's own close is a clean end");
    await sendMany(alice, gid, 30, { concurrency: 5, prefix: "missed" });
    // A browser sends its token as a subprotocol; the server must not echo it.
    const again = wsSubscribe(server.port, bob.token, [{ groupId: gid, seq: BigInt(head + 50) }], { via: "protocol" });
    await again.waitReady();
    assert.equal(again.ws.protocol, "chat.v1.proto");
    const live = sendMany(alice, gid, 10, { concurrency: 2, prefix: "live" });
    await live;
    await again.waitForEvents(gid, 40, 10_000);
    assert.deepEqual(seqs(again.eventsOf(gid)), range(head + 51, head + 90));
    again.close();
  });

  it("cuts a removed member's stream off the group at once", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "wra");
    const bob = await registerUser(server.baseUrl, "grpc", "wrb");
    const { group } = await alice.groups.createGroup({ name: "ws-removal", memberUsernames: [bob.username] });
    assert.ok(group);
    const gid = group.groupId;
    const ws = wsSubscribe(server.port, bob.token);
    await ws.waitReady();
    await alice.groups.removeMember({ groupId: gid, userId: bob.userId });
    await ws.waitFor((r) => r.eventsOf(gid).some((e) => e.kind.case === "memberRemoved"), 5000, "member_removed");
    await sendMany(alice, gid, 5, { concurrency: 1, prefix: "after" });
    // A later event of another group of bob's proves the stream is still live and past alice's sends.
    const { group: other } = await alice.groups.createGroup({ name: "ws-other", memberUsernames: [bob.username] });
    assert.ok(other);
    await ws.waitFor((r) => r.items.some((i) => i.payload.case === "groupJoined") || r.eventsOf(other.groupId).length > 0, 5000, "the new group");
    assert.ok(!ws.eventsOf(gid).some((e) => e.kind.case === "message"), "no message after the removal reached bob");
    ws.close();
  });

  it("refuses the handshake with 401 and a text body without a valid token, in either place: nothing is upgraded", async () => {
    const refusal = (token: string | undefined, via: "header" | "protocol") =>
      new Promise<{ status: number; type: string; challenge: string; body: string }>((resolve, reject) => {
        const protocols = ["chat.v1.proto", ...(token && via === "protocol" ? [`bearer.${token}`] : [])];
        const headers: Record<string, string> = token && via === "header" ? { authorization: `Bearer ${token}` } : {};
        const ws = new WebSocket(`ws://127.0.0.1:${server.port}/chat.v1.StreamService/Subscribe`, protocols, { headers });
        ws.on("unexpected-response", (_req, res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => (body += d));
          res.on("end", () => {
            resolve({
              status: res.statusCode ?? 0,
              type: String(res.headers["content-type"]),
              challenge: String(res.headers["www-authenticate"]),
              body,
            });
            ws.terminate();
          });
        });
        ws.on("open", () => reject(new Error(`upgraded with ${token ?? "no token"} via ${via}`)));
        ws.on("error", () => {});
      });
    const expired = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"; // well-formed, not ours
    for (const [token, via] of [
      [undefined, "header"],
      ["not-a-jwt", "header"],
      ["not-a-jwt", "protocol"],
      [expired, "protocol"],
    ] as const) {
      const r = await refusal(token, via);
      assert.equal(r.status, 401, `${token ?? "no token"} via ${via}`);
      assert.match(r.type, /^text\/plain/);
      assert.match(r.challenge, /^Bearer/);
      assert.ok(r.body.trim().length > 0, "the body says why");
      if (token) assert.ok(!r.body.includes(token), "the token is not echoed");
    }
  });

  it("ends with 4003 (INVALID_ARGUMENT) for a request that is not one binary SubscribeRequest", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "wia");
    const cases: [string, (ws: WebSocket) => void, RegExp][] = [
      ["a text message", (ws) => ws.send("{}"), /binary/],
      ["bytes that are no protobuf", (ws) => ws.send(Buffer.from([0xff, 0xff, 0xff])), /SubscribeRequest/],
      ["a second message", (ws) => (ws.send(Buffer.alloc(0)), ws.send(Buffer.alloc(0))), /one SubscribeRequest/],
    ];
    for (const [what, sendBad, reason] of cases) {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/chat.v1.StreamService/Subscribe`, ["chat.v1.proto"], {
        headers: { authorization: `Bearer ${alice.token}` },
      });
      ws.on("open", () => sendBad(ws));
      const [code, why] = await new Promise<[number, string]>((resolve) => ws.on("close", (c, r) => resolve([c, r.toString()])));
      assert.equal(code, 4003, `${what}: ${why}`);
      assert.match(why, reason, what);
    }
  });

  it("serves other upgrade requests (h2c, as curl --http2 sends) as plain HTTP/1.1, with their bodies", async () => {
    const h2c = "connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    /** exchange sends one request (its parts 50 ms apart) and reads until `until` shows up in the answer (or 5 s pass). */
    const exchange = (parts: string[], until: RegExp) =>
      new Promise<string>((resolve, reject) => {
        let text = "";
        const socket = net.connect(server.port, "127.0.0.1", () => {
          parts.forEach((part, i) => setTimeout(() => socket.write(part), 50 * i));
        });
        const done = () => {
          clearTimeout(timer);
          socket.destroy();
          resolve(text);
        };
        const timer = setTimeout(done, 5000);
        socket.on("data", (d) => {
          text += d.toString("latin1");
          if (until.test(text)) done();
        });
        socket.on("close", done);
        socket.on("error", reject);
      });
    const metrics = await exchange([`GET /metrics HTTP/1.1\r\nhost: x\r\n${h2c}\r\n`], /chat_streams_active/);
    assert.match(metrics, /^HTTP\/1\.1 200 /, metrics.slice(0, 200));
    assert.match(metrics, /chat_streams_active/, "the metrics page");
    // The body follows the head in another packet, as a slow client would send it.
    const body = "{}";
    const head = `POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: x\r\n${h2c}content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`;
    const health = await exchange([head, body], /SERVING/);
    assert.match(health, /^HTTP\/1\.1 200 /, health.slice(0, 200));
    assert.match(health, /"status":"SERVING"/, "the health check, its body read in full");
    // More header lines than the parser keeps: it cannot be replayed faithfully, so it is refused.
    const crowded = await exchange([`GET /metrics HTTP/1.1\r\nhost: x\r\n${h2c}${"x-many: 1\r\n".repeat(2100)}\r\n`], /\r\n\r\n/);
    assert.match(crowded, /^HTTP\/1\.1 431 /, crowded.slice(0, 200));
  });

  it("closes the socket of a refused handshake even if the client keeps its side open", async () => {
    const socket = net.connect({ port: server.port, host: "127.0.0.1", allowHalfOpen: true });
    const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
    socket.on("error", () => {});
    let response = "";
    socket.on("data", (d) => (response += d.toString("latin1")));
    const ended = new Promise<void>((resolve) => socket.on("end", () => resolve()));
    socket.write(
      "GET /elsewhere HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n" +
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-protocol: chat.v1.proto\r\n\r\n",
    );
    await ended;
    assert.match(response, /^HTTP\/1\.1 404 /);
    // Our side stays open; a server that only half-closed would keep taking these bytes. One that closed resets us
    // (seen on a later write: after the server's FIN our side no longer reads).
    const writes = setInterval(() => socket.write("more bytes\r\n"), 100);
    const gone = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 3000))]);
    clearInterval(writes);
    assert.ok(gone, "the server closed the socket");
    socket.destroy();
  });

  it("refuses the handshake without the chat.v1.proto subprotocol (400) or at another path (404)", async () => {
    const statusOf = (path: string, protocols: string[]) =>
      new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${server.port}${path}`, protocols);
        ws.on("unexpected-response", (_req, res) => {
          resolve(res.statusCode ?? 0);
          ws.terminate();
        });
        ws.on("open", () => reject(new Error(`${path} was upgraded`)));
        ws.on("error", () => {});
      });
    assert.equal(await statusOf("/chat.v1.StreamService/Subscribe", []), 400);
    assert.equal(await statusOf("/chat.v1.StreamService/Subscribe", ["json"]), 400);
    assert.equal(await statusOf("/chat.v1.StreamService/Connect", []), 400);
    assert.equal(await statusOf("/chat.v1.StreamService/SendMessage", ["chat.v1.proto"]), 404);
    assert.equal(await statusOf("/chat.v1.MessageService/SendMessage", ["chat.v1.proto"]), 404);
  });
});
