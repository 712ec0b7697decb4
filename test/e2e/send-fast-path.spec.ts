/**
 * SendMessage and ListMessages over gRPC and gRPC-Web are served by a fast path
 * (services/wire/framed-unary.ts, services/wire/framed-message-routes.ts) rather than connect-node: the same
 * answers, request ids, and refusals of malformed frames, from raw HTTP/2
 * and from the grpc-js reference client.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { MessageService, SendMessageRequestSchema } from "../../gen/chat/v1/message_service_pb.js";
import { authMetadata, grpcJsClient } from "../support/grpc-js-client.js";
import { historySnapshot, sendMany } from "../support/helpers.js";
import { scrape } from "../support/metrics-scrape.js";
import { type Clients, type Protocol, type TestServer, clientsFor, registerUser, startTestServer } from "../support/test-server.js";

const PATH = "/chat.v1.MessageService/SendMessage";

function frame(payload: Uint8Array, flags = 0): Buffer {
  const out = Buffer.alloc(5 + payload.length);
  out.writeUInt8(flags, 0);
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, 5);
  return out;
}

/** rawGrpc posts `body` as a gRPC call over h2c and returns the response headers, body and trailers. */
async function rawGrpc(baseUrl: string, token: string, body: Buffer, extra: Record<string, string> = {}) {
  const session = http2.connect(baseUrl);
  try {
    return await new Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      const req = session.request({ ":method": "POST", ":path": PATH, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${token}`, ...extra });
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      req.on("response", (h) => (headers = h));
      req.on("trailers", (t) => (trailers = t));
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve({ headers, trailers, body: Buffer.concat(chunks) }));
      req.on("error", reject);
      req.end(body);
    });
  } finally {
    session.close();
  }
}

describe("SendMessage fast path (e2e)", () => {
  let server: TestServer;
  let alice: Clients;
  let groupId: string;
  before(async () => {
    server = await startTestServer();
    alice = await registerUser(server.baseUrl, "grpc", "fast");
    const { group } = await alice.groups.createGroup({ name: "fast" });
    groupId = group?.groupId ?? "";
  });
  after(async () => {
    await server.stop();
  });

  const request = (clientMessageId: string) => toBinary(SendMessageRequestSchema, create(SendMessageRequestSchema, { groupId, text: "hi", clientMessageId }));

  it("stores and answers a send, echoing a well-formed x-request-id and making one otherwise", async () => {
    const given = await rawGrpc(server.baseUrl, alice.token ?? "", frame(request("r1")), { "x-request-id": "trace-123" });
    assert.equal(given.trailers["grpc-status"], "0");
    assert.equal(given.headers["x-request-id"], "trace-123");
    assert.ok(given.body.length > 5, "one framed SendMessageResponse");
    const made = await rawGrpc(server.baseUrl, alice.token ?? "", frame(request("r2")), { "x-request-id": "bad id with spaces" });
    assert.match(String(made.headers["x-request-id"]), /^[0-9a-f-]{36}$/);
    const page = await alice.messages.listMessages({ groupId });
    assert.deepEqual(page.messages.map((m) => m.clientMessageId), ["r1", "r2"]);
  });

  it("refuses two messages, an undecodable one, a compressed one and a truncated one, storing nothing", async () => {
    const token = alice.token ?? "";
    const cases: [Buffer, number, RegExp][] = [
      [Buffer.concat([frame(request("x1")), frame(request("x2"))]), grpc.status.INVALID_ARGUMENT, /exactly one message/],
      [frame(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])), grpc.status.INVALID_ARGUMENT, /not a valid chat.v1.SendMessageRequest/],
      [frame(request("x3"), 0x01), grpc.status.UNIMPLEMENTED, /compressed/],
      [frame(request("x4")).subarray(0, 8), grpc.status.INVALID_ARGUMENT, /exactly one message/],
    ];
    for (const [body, code, message] of cases) {
      const res = await rawGrpc(server.baseUrl, token, body);
      assert.equal(res.trailers["grpc-status"], String(code), `${message}`);
      assert.match(decodeURIComponent(String(res.trailers["grpc-message"])), message);
    }
    const page = await alice.messages.listMessages({ groupId });
    assert.ok(page.messages.every((m) => !/^x/.test(m.clientMessageId)));
  });

  it("keeps grpc-timeout: a malformed one is INVALID_ARGUMENT, a passed one is not run, a generous one is served", async () => {
    const token = alice.token ?? "";
    const malformed = await rawGrpc(server.baseUrl, token, frame(request("t1")), { "grpc-timeout": "10 seconds" });
    assert.equal(malformed.trailers["grpc-status"] ?? malformed.headers["grpc-status"], String(grpc.status.INVALID_ARGUMENT));
    assert.match(decodeURIComponent(String(malformed.trailers["grpc-message"] ?? malformed.headers["grpc-message"])), /grpc-timeout "10 seconds" is malformed/);
    // 1 ns has passed by the time the request is read: the send is refused before it runs.
    const passed = await rawGrpc(server.baseUrl, token, frame(request("t2")), { "grpc-timeout": "1n" });
    assert.equal(passed.trailers["grpc-status"] ?? passed.headers["grpc-status"], String(grpc.status.DEADLINE_EXCEEDED));
    // gRPC-Web (HTTP/1.1) carries the same header: the status comes in the headers or the trailer frame.
    const web = await fetch(`${server.baseUrl}${PATH}`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", authorization: `Bearer ${token}`, "grpc-timeout": "1n" },
      body: frame(request("t5")),
    });
    const webBody = Buffer.from(await web.arrayBuffer()).toString("latin1");
    assert.equal(web.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(webBody)?.[1], String(grpc.status.DEADLINE_EXCEEDED));
    const served = await rawGrpc(server.baseUrl, token, frame(request("t3")), { "grpc-timeout": "10S" });
    assert.equal(served.trailers["grpc-status"], "0");
    const stored = (await alice.messages.listMessages({ groupId })).messages.map((m) => m.clientMessageId).filter((c) => c.startsWith("t"));
    assert.deepEqual(stored, ["t3"], "no refused send was stored");
    // The reference client's deadline maps to the same status.
    const client = grpcJsClient(server.port, MessageService);
    try {
      const code = await new Promise<number>((resolve) =>
        (client.sendMessage as (r: unknown, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void)(
          { groupId, text: "late", clientMessageId: "t4" },
          authMetadata(alice.token),
          { deadline: new Date(Date.now() + 60_000) },
          (e) => resolve(e ? e.code : grpc.status.OK),
        ),
      );
      assert.equal(code, grpc.status.OK, "a deadline a minute away is served");
    } finally {
      client.close();
    }
  });

  it("counts a send whose client goes away before sending its request as CANCELLED, not as a timeout later", async () => {
    const before = await scrape(server);
    const session = http2.connect(server.baseUrl);
    try {
      const req = session.request({ ":method": "POST", ":path": PATH, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${alice.token}`, "grpc-timeout": "1S" });
      req.on("error", () => {});
      req.write(frame(request("c1")).subarray(0, 3)); // part of the request, never finished
      await new Promise((r) => setTimeout(r, 100));
      session.destroy(); // the client goes away mid-request
      const deadline = Date.now() + 5_000;
      let cancelled = 0;
      while (Date.now() < deadline && cancelled === 0) {
        await new Promise((r) => setTimeout(r, 50));
        cancelled = (await scrape(server)).get("chat_sends_total", { code: "CANCELED", via: "rpc" }) - before.get("chat_sends_total", { code: "CANCELED", via: "rpc" });
      }
      assert.equal(cancelled, 1);
      await new Promise((r) => setTimeout(r, 1_200)); // past the 1 s deadline: no DEADLINE_EXCEEDED is recorded for it
      const after = await scrape(server);
      assert.equal(after.get("chat_sends_total", { code: "DEADLINE_EXCEEDED", via: "rpc" }), before.get("chat_sends_total", { code: "DEADLINE_EXCEEDED", via: "rpc" }));
    } finally {
      session.close();
    }
  });

  it("answers ListMessages with the same pages over gRPC and gRPC-Web (fast path) as over Connect (connect-node)", async () => {
    await sendMany(alice, groupId, 7, { concurrency: 1, prefix: "page" });
    const head = Number((await alice.messages.listMessages({ groupId })).headSeq);
    const via = (protocol: Protocol) => {
      const c = clientsFor(server.baseUrl, protocol);
      c.token = alice.token;
      return historySnapshot(c, groupId, head, [1, 4]);
    };
    const connect = await via("connect-binary");
    assert.deepEqual(await via("grpc"), connect);
    assert.deepEqual(await via("grpc-web"), connect);
  });

  it("serves the grpc-js reference client: a send, its retry, and UNAUTHENTICATED without a token", async () => {
    const client = grpcJsClient(server.port, MessageService);
    try {
      const call = (md: grpc.Metadata) =>
        new Promise<{ message?: { seq?: string }; duplicate?: boolean }>((resolve, reject) =>
          (client.sendMessage as (r: unknown, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, r: never) => void) => void)(
            { groupId, text: "from grpc-js", clientMessageId: "js-1" },
            md,
            (e, r) => (e ? reject(e) : resolve(r)),
          ),
        );
      const first = await call(authMetadata(alice.token));
      const again = await call(authMetadata(alice.token));
      assert.equal(first.duplicate, false);
      assert.equal(again.duplicate, true);
      assert.equal(again.message?.seq, first.message?.seq);
      await assert.rejects(call(new grpc.Metadata()), (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED && /authorization/.test(e.details));
    } finally {
      client.close();
    }
  });
});
