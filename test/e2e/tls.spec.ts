/**
 * TLS on the one port (TLS_CERT_FILE, TLS_KEY_FILE; issue 15.6; Chromium:
 * test/browser/tls-browser.spec.ts): with a certificate from a test CA, ALPN takes HTTP/2
 * clients (grpc-js, connect-node's gRPC and Connect) to the HTTP/2 server and
 * HTTP/1.1 ones (gRPC-Web, Connect over HTTP/1.1, `wss://` upgrades, clients
 * that offer no ALPN) to the HTTP/1.1 server; a cleartext client fails at
 * the handshake and the server carries on. Each test reads the ALPN the
 * server negotiated from its debug log line "tls connection".
 */
import assert from "node:assert/strict";
import https from "node:https";
import http2 from "node:http2";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import type { RegisterResponse } from "../../gen/chat/v1/auth_service_pb.js";
import { AuthService } from "../../gen/chat/v1/auth_service_pb.js";
import type { CreateGroupResponse } from "../../gen/chat/v1/group_service_pb.js";
import { GroupService } from "../../gen/chat/v1/group_service_pb.js";
import type { SendMessageResponse } from "../../gen/chat/v1/message_service_pb.js";
import { MessageService } from "../../gen/chat/v1/message_service_pb.js";
import { StreamService } from "../../gen/chat/v1/stream_service_pb.js";
import { startApp } from "../../services/server/app.js";
import { loadConfig } from "../../services/server/config.js";
import { authMetadata, grpcJsClient, unary } from "../support/grpc-js-client.js";
import { grpcJsSubscribe, subscribe, wsSubscribe } from "../support/stream-reader.js";
import { type Clients, type ClientTls, type TestServer, registerUser, startTestServer, uniqueName } from "../support/test-server.js";
import { type TestCertificates, makeTestCertificates } from "../support/tls-fixture.js";

/** LogRecord is one JSON line of the server's log. */
type LogRecord = { msg?: string; alpn?: string; err?: { code?: string } };

/** tlsServer starts the app with TLS from `certs`, its debug log kept in `records`. */
async function tlsServer(certs: TestCertificates, records: LogRecord[]): Promise<TestServer> {
  const logger = pino({ level: "debug" }, { write: (line: string) => void records.push(JSON.parse(line) as LogRecord) });
  return startTestServer({ TLS_CERT_FILE: certs.certFile, TLS_KEY_FILE: certs.keyFile }, { logger });
}

describe("TLS on the one port", () => {
  let certs: TestCertificates;
  let server: TestServer;
  const records: LogRecord[] = [];
  let baseUrl: string;
  let tls: ClientTls;
  let http1: ClientTls;

  before(async () => {
    certs = await makeTestCertificates();
    server = await tlsServer(certs, records);
    baseUrl = `https://127.0.0.1:${server.port}`;
    tls = { ca: certs.ca };
    http1 = { ca: certs.ca, http1Alpn: ["http/1.1"] };
  });
  after(async () => {
    await server.stop();
    await certs.remove();
  });

  /** alpnDuring runs `fn` and returns the ALPN protocols of the TLS connections the server accepted meanwhile ("none": not offered). */
  async function alpnDuring(fn: () => Promise<void>): Promise<string[]> {
    const from = records.length;
    await fn();
    return [...new Set(records.slice(from).flatMap((r) => (r.msg === "tls connection" && r.alpn ? [r.alpn] : [])))].sort();
  }

  /** exchange makes a group for `c`, opens Subscribe, sends a message and waits for it on the stream. */
  async function exchange(c: Clients): Promise<void> {
    const { group } = await c.groups.createGroup({ name: "tls" });
    assert.ok(group);
    const stream = subscribe(c);
    try {
      await stream.waitReady();
      const { message } = await c.messages.sendMessage({ groupId: group.groupId, text: "over tls", clientMessageId: "tls-1" });
      assert.ok(message);
      await stream.waitFor((r) => r.eventsOf(group.groupId).some((e) => e.seq === message.seq), 5000, "the message");
      const page = await c.messages.listMessages({ groupId: group.groupId, limit: 10 });
      assert.ok(page.messages.some((m) => m.text === "over tls"));
    } finally {
      stream.close();
    }
  }

  it("grpc-js trusts the server with the test CA: a unary call and a stream, over h2", async () => {
    const creds = grpc.credentials.createSsl(Buffer.from(certs.ca));
    const auth = grpcJsClient(server.port, AuthService, {}, creds);
    const groups = grpcJsClient(server.port, GroupService, {}, creds);
    const messages = grpcJsClient(server.port, MessageService, {}, creds);
    const streams = grpcJsClient(server.port, StreamService, {}, creds);
    try {
      const alpn = await alpnDuring(async () => {
        const reg = await unary<RegisterResponse>(auth, "register", { username: uniqueName("tlsg"), password: "correct horse battery" });
        const md = authMetadata(reg.tokens?.accessToken);
        const { group } = await unary<CreateGroupResponse>(groups, "createGroup", { name: "tls" }, md);
        assert.ok(group);
        const stream = grpcJsSubscribe(streams, reg.tokens?.accessToken);
        await stream.waitReady();
        const { message } = await unary<SendMessageResponse>(messages, "sendMessage", { groupId: group.groupId, text: "hi", clientMessageId: "g1" }, md);
        assert.ok(message);
        await stream.waitFor((r) => r.eventsOf(group.groupId).some((e) => e.seq === message.seq), 5000, "the message");
        stream.close();
      });
      assert.deepEqual(alpn, ["h2"]);
    } finally {
      for (const c of [auth, groups, messages, streams]) c.close();
    }
  });

  for (const protocol of ["grpc", "connect"] as const) {
    it(`connect-node over HTTP/2 (${protocol}) with the test CA: unary calls and Subscribe, over h2`, async () => {
      const alpn = await alpnDuring(async () => exchange(await registerUser(baseUrl, protocol, "tlsh2", tls)));
      assert.deepEqual(alpn, ["h2"]);
    });
  }

  for (const protocol of ["grpc-web", "connect-binary"] as const) {
    it(`connect-node over HTTP/1.1 (${protocol}) with the test CA: unary calls and Subscribe, over http/1.1`, async () => {
      const alpn = await alpnDuring(async () => exchange(await registerUser(baseUrl, protocol, "tlsh1", http1)));
      assert.deepEqual(alpn, ["http/1.1"]);
    });
  }

  it("serves HTTP/1.1 to a client that offers no ALPN (Node's https by default)", async () => {
    const alpn = await alpnDuring(async () => {
      const { status, body } = await new Promise<{ status: number | undefined; body: string }>((resolve, reject) => {
        https
          .get({ host: "127.0.0.1", port: server.port, path: "/readyz", ca: certs.ca, agent: false }, (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (d: string) => {
              body += d;
            });
            res.on("end", () => resolve({ status: res.statusCode, body }));
          })
          .on("error", reject);
      });
      assert.equal(status, 200);
      assert.equal(body, "ready\n");
    });
    assert.deepEqual(alpn, ["none"]);
  });

  it("upgrades wss:// to the WebSocket Subscribe, with ALPN http/1.1 (as a browser's WebSocket offers) or none", async () => {
    const alice = await registerUser(baseUrl, "grpc", "tlsws", tls);
    assert.ok(alice.token);
    const { group } = await alice.groups.createGroup({ name: "wss" });
    assert.ok(group);
    for (const [offer, want] of [[["http/1.1"], "http/1.1"], [undefined, "none"]] as const) {
      const ws = wsSubscribe(server.port, alice.token, [], { tls: { ca: certs.ca, ...(offer ? { alpn: [...offer] } : {}) } });
      try {
        const alpn = await alpnDuring(() => ws.waitReady());
        assert.deepEqual(alpn, [want]);
        assert.equal(ws.ws.protocol, "chat.v1.proto");
        const { message } = await alice.messages.sendMessage({ groupId: group.groupId, text: "to wss", clientMessageId: `wss-${want}` });
        assert.ok(message);
        await ws.waitFor((r) => r.eventsOf(group.groupId).some((e) => e.seq === message.seq), 5000, "the message");
      } finally {
        ws.close();
      }
      await ws.waitDone();
      assert.equal(ws.error, undefined);
    }
  });

  it("refuses a client that trusts another CA: its handshake fails, nothing is served", async () => {
    const other = await makeTestCertificates();
    try {
      const c = await registerUser(baseUrl, "grpc", "tlsbad", { ca: other.ca }).then(
        () => assert.fail("a client that does not trust the server's CA registered"),
        (e: unknown) => e,
      );
      assert.match(String(c), /certificate|self.signed|unable to verify/i);
    } finally {
      await other.remove();
    }
  });

  it("fails a cleartext client at the handshake, cheaply, and keeps serving TLS", async () => {
    const from = records.length;
    // HTTP/2 with prior knowledge (h2c): the preface is no TLS record, so the server drops the connection.
    const session = http2.connect(`http://127.0.0.1:${server.port}`);
    session.on("error", () => {});
    const req = session.request({ ":path": "/readyz" });
    req.on("error", () => {});
    let answered = false;
    req.on("response", () => {
      answered = true;
    });
    req.end();
    const started = Date.now();
    await new Promise<void>((resolve) => session.once("close", () => resolve()));
    assert.equal(answered, false, "no HTTP/2 response over cleartext");
    assert.ok(Date.now() - started < 3000, "dropped at once, not after a timeout");

    // HTTP/1.1 in cleartext: the connection ends without an HTTP answer.
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const socket = net.connect(server.port, "127.0.0.1", () => socket.write("GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n"));
      const chunks: Buffer[] = [];
      socket.on("data", (d: Buffer) => chunks.push(d));
      socket.on("error", reject);
      socket.on("close", () => resolve(Buffer.concat(chunks)));
      socket.setTimeout(3000, () => reject(new Error("the server kept a cleartext connection open")));
    });
    assert.ok(!reply.toString("latin1").startsWith("HTTP/"), "no HTTP/1.1 answer in cleartext");

    // grpc-js in cleartext gets UNAVAILABLE, as for a server that is not there.
    const plain = grpcJsClient(server.port, AuthService);
    try {
      await assert.rejects(
        new Promise((resolve, reject) =>
          (plain.login as (...a: unknown[]) => void)({}, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err: unknown, res: unknown) =>
            err ? reject(err) : resolve(res),
          ),
        ),
        (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE,
      );
    } finally {
      plain.close();
    }
    const failures = records.slice(from).filter((r) => r.msg === "tls handshake failed");
    assert.ok(failures.length >= 2, `each cleartext connection is a failed handshake (${failures.length})`);
    assert.ok(records.slice(from).every((r) => r.msg !== "tls connection"), "none reached an HTTP server");

    // The server still serves TLS clients.
    await exchange(await registerUser(baseUrl, "grpc", "tlsafter", tls));
  });
});

describe("TLS on the one port: start and stop", () => {
  let certs: TestCertificates;
  before(async () => {
    certs = await makeTestCertificates();
  });
  after(async () => {
    await certs.remove();
  });

  it("refuses to start with an unreadable certificate or a key that is not the certificate's", async () => {
    const env = { DATA_DIR: join(certs.dir, "data"), PORT: "0", LOG_LEVEL: "silent" };
    const silent = { logger: pino({ level: "silent" }) };
    await assert.rejects(
      startApp(loadConfig({ ...env, TLS_CERT_FILE: join(certs.dir, "missing.pem"), TLS_KEY_FILE: certs.keyFile }), silent),
      /^Error: TLS_CERT_FILE: cannot read .*missing\.pem: ENOENT/,
    );
    await assert.rejects(
      startApp(loadConfig({ ...env, TLS_CERT_FILE: certs.certFile, TLS_KEY_FILE: certs.otherKeyFile }), silent),
      /TLS_CERT_FILE, TLS_KEY_FILE: .* are not a usable certificate and key/,
    );
  });

  it("stops gracefully: streams end UNAVAILABLE (h2 and wss), idle TLS connections close at once, not after the grace", async () => {
    const records: LogRecord[] = [];
    const server = await tlsServer(certs, records);
    const baseUrl = `https://127.0.0.1:${server.port}`;
    const h2 = await registerUser(baseUrl, "grpc", "tlsstop", { ca: certs.ca });
    const h1 = await registerUser(baseUrl, "grpc-web", "tlsstop", { ca: certs.ca, http1Alpn: ["http/1.1"] });
    assert.ok(h2.token);
    const stream = subscribe(h2);
    const ws = wsSubscribe(server.port, h2.token, [], { tls: { ca: certs.ca, alpn: ["http/1.1"] } });
    await Promise.all([stream.waitReady(), ws.waitReady()]);
    await h1.groups.listGroups({}); // leaves an idle HTTP/1.1 keep-alive connection
    const started = Date.now();
    await server.stop(); // SHUTDOWN_GRACE is 2s in tests
    const took = Date.now() - started;
    await Promise.all([stream.waitDone(), ws.waitDone()]);
    assert.equal((stream.error as { code?: number } | undefined)?.code, 14, `the h2 stream ends UNAVAILABLE: ${String(stream.error)}`);
    assert.equal((ws.error as { code?: number } | undefined)?.code, 14, `the wss stream ends UNAVAILABLE: ${String(ws.error)}`);
    assert.ok(took < 1500, `stop took ${took} ms: idle TLS connections must not wait for the grace`);
  });
});
