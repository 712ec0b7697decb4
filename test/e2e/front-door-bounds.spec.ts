/**
 * Review of the front door (a8aae09), the adapter and request-body bounds:
 * - a request with a missing or bad Host does not crash the process
 *   (connect-adapter.ts serve never throws);
 * - a connect-node answer whose writing fails does not leave the stream open;
 * - a partial frame on the fast Connect path is under the body deadline.
 * (The reflection flood, with RSS, is request-bounds.spec.ts.)
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { pino } from "pino";
import { ConnectRequestSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { createConnectAdapter } from "../../services/wire/connect-adapter.js";
import { frame, h2Call } from "../support/raw-calls.js";
import { type TestServer, registerUser, startTestServer } from "../support/test-server.js";

/** rawExchange writes `request` on a fresh TCP connection and resolves with all the server sent until it closed (or 5 s passed). */
function rawExchange(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let got = "";
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(got);
    }, 5000);
    socket.on("data", (d: Buffer) => {
      got += d.toString("latin1");
    });
    socket.on("error", reject);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
    socket.write(request);
    socket.end();
  });
}

describe("connect-adapter: a request connect-node cannot make a URL of", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  const requests = [
    {
      why: "HTTP/1.1 with Host: [ (ERR_INVALID_URL), Connect JSON",
      raw: "POST /chat.v1.AuthService/Login HTTP/1.1\r\nHost: [\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
      expect: /^HTTP\/1\.1 400 /,
      body: /"code":"invalid_argument"/,
    },
    {
      why: "HTTP/1.0 without Host (no request authority), Connect JSON",
      raw: "POST /chat.v1.AuthService/Login HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
      expect: /^HTTP\/1\.[01] 400 /,
      body: /"code":"invalid_argument"/,
    },
    {
      why: "HTTP/1.1 with Host: [, gRPC-Web",
      raw: "POST /chat.v1.AuthService/Login HTTP/1.1\r\nHost: [\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: 5\r\n\r\n\0\0\0\0\0",
      expect: /^HTTP\/1\.1 200 [\s\S]*grpc-status: 3\r\n/i,
      body: /./,
    },
    {
      why: "HTTP/1.0 without Host, a GET connect-node answers itself",
      raw: "GET /chat.v1.AuthService/Login HTTP/1.0\r\n\r\n",
      expect: /^HTTP\/1\.[01] 400 /,
      body: /./,
    },
  ];
  for (const r of requests) {
    it(`answers ${r.why} with a clean error and keeps serving`, async () => {
      const answer = await rawExchange(server.port, r.raw);
      assert.match(answer, r.expect, `answer: ${JSON.stringify(answer)}`);
      assert.match(answer.slice(answer.indexOf("\r\n\r\n") + 4) || answer, r.body, `answer: ${JSON.stringify(answer)}`);
      const after = await registerUser(server.baseUrl, "grpc", "host");
      const { group } = await after.groups.createGroup({ name: "after a bad host" });
      assert.ok(group?.groupId);
    });
  }
});

describe("connect-adapter: an answer whose writing fails", () => {
  it("does not leave the HTTP/2 stream open (reset), nor the HTTP/1.1 connection", { timeout: 20_000 }, async () => {
    const adapter = createConnectAdapter({ routes: () => {}, logger: pino({ level: "silent" }) });
    // A handler whose response body fails after its first chunk: universalResponseToNodeResponse rejects with the
    // headers sent and the response neither ended nor destroyed.
    const failing = Object.assign(
      async () => ({
        status: 200,
        header: new Headers({ "content-type": "application/connect+proto" }),
        body: (async function* () {
          yield new Uint8Array([0, 0, 0, 0, 0]);
          await new Promise((r) => setTimeout(r, 20));
          throw new Error("the answer could not be written");
        })(),
      }),
      { service: { typeName: "test.v1.Failing" }, method: { name: "Fail" } },
    ) as unknown as Parameters<typeof adapter.serve>[0];

    const h2server = http2.createServer((req, res) => adapter.serve(failing, req, res, undefined as never));
    await new Promise<void>((r) => h2server.listen(0, "127.0.0.1", r));
    const h2port = (h2server.address() as net.AddressInfo).port;
    const session = http2.connect(`http://127.0.0.1:${h2port}`);
    session.on("error", () => {});
    try {
      const stream = session.request({ ":method": "POST", ":path": "/test.v1.Failing/Fail", "content-type": "application/connect+proto" });
      stream.on("error", () => {});
      stream.resume();
      stream.end();
      const closed = await new Promise<string>((resolve) => {
        const timer = setTimeout(() => resolve("still open after 5 s"), 5000);
        stream.on("close", () => {
          clearTimeout(timer);
          resolve(`closed, rst ${stream.rstCode}`);
        });
      });
      assert.match(closed, /^closed, rst [1-9]/, "the stream is reset, not left open nor ended as if complete");
    } finally {
      session.destroy();
      h2server.close();
    }

    const { createServer } = await import("node:http");
    const h1server = createServer((req, res) => adapter.serve(failing, req, res, undefined as never));
    await new Promise<void>((r) => h1server.listen(0, "127.0.0.1", r));
    const h1port = (h1server.address() as net.AddressInfo).port;
    try {
      const t0 = Date.now();
      const socket = net.connect(h1port, "127.0.0.1");
      socket.on("error", () => {});
      socket.resume();
      socket.write("POST /test.v1.Failing/Fail HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/connect+proto\r\ncontent-length: 0\r\n\r\n");
      const closed = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 5000);
        socket.on("close", () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      assert.ok(closed, `the connection is closed (after ${Date.now() - t0} ms), not left with a half-written answer`);
    } finally {
      h1server.closeAllConnections();
      h1server.close();
    }
  });
});

describe("fast Connect path: a partial request message", () => {
  let server: TestServer;
  let token: string;
  before(async () => {
    server = await startTestServer({ REQUEST_BODY_TIMEOUT: "1s" });
    token = (await registerUser(server.baseUrl, "grpc", "partial")).token!;
  });
  after(async () => {
    await server.stop();
  });

  /** partialOf announces a message of `announced` bytes and carries `sent` of them. */
  const partialOf = (announced: number, sent: number) => {
    const head = Buffer.alloc(5 + sent);
    head.writeUInt32BE(announced, 1);
    return head;
  };
  const subscribe = frame(toBinary(ConnectRequestSchema, create(ConnectRequestSchema, { requestId: "s", payload: { case: "subscribe", value: { cursors: [] } } })));

  for (const c of [
    { why: "the opening message (cap 1.3 MB) never completed", body: partialOf(1_300_000, 1000) },
    { why: "a later message never completed", body: Buffer.concat([subscribe, partialOf(60_000, 100)]) },
  ]) {
    // The front door's deadline (REQUEST_BODY_TIMEOUT) when it passes its own, else the fast path's 10 s default.
    it(`ends the stream DEADLINE_EXCEEDED when ${c.why}, within the body deadline`, { timeout: 30_000 }, async () => {
      for (const contentType of ["application/grpc", "application/connect+proto"]) {
        const t0 = Date.now();
        const got = await h2Call(server.baseUrl, "/chat.v1.StreamService/Connect", { "content-type": contentType, authorization: `Bearer ${token}` }, c.body, false, 15_000);
        const elapsed = Date.now() - t0;
        const status = got.grpcStatus ?? (got.frames.length > 0 ? trailingConnectCode(got.frames.at(-1)!.payload) : undefined);
        assert.ok(status === "4" || status === "deadline_exceeded", `${contentType}: ${JSON.stringify({ status, rst: got.rstCode, elapsed })}`);
        assert.ok(elapsed >= 900 && elapsed < 12_000, `${contentType}: answered after ${elapsed} ms`);
      }
    });
  }
});

/** trailingConnectCode reads the code of a Connect end-of-stream frame's error, if any. */
function trailingConnectCode(payload: Buffer): string | undefined {
  try {
    return (JSON.parse(payload.toString()) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}
