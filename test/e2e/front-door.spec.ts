/**
 * The front door (services/wire/front-door.ts) end to end, issue 12:
 * - point 2: the token is checked before a body is read; bodies are bounded
 *   in size (small for the public methods), time (REQUEST_BODY_TIMEOUT) and,
 *   without a token, process-wide bytes (UNAUTHENTICATED_BODY_BYTES);
 * - point 5: undecodable request bytes are INVALID_ARGUMENT on every path,
 *   logged below error level;
 * - point 6: grpc-message reads back as the original text in grpc-js and in
 *   connect-es (gRPC and gRPC-Web), on the fast paths and connect-node's;
 * - point 7: gRPC-Web text mode (base64), unary and Subscribe.
 * (The attack itself, with RSS, is request-bounds.spec.ts.)
 */
import assert from "node:assert/strict";
import { constants as http2Constants } from "node:http2";
import net from "node:net";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { LoginRequestSchema, RegisterRequestSchema, RegisterResponseSchema } from "../../gen/chat/v1/auth_service_pb.js";
import { GroupService } from "../../gen/chat/v1/group_service_pb.js";
import { MessageService, SendMessageRequestSchema, SendMessageResponseSchema } from "../../gen/chat/v1/message_service_pb.js";
import { SubscribeRequestSchema, SubscribeResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { rejectsWith } from "../support/assertions.js";
import { authMetadata, grpcJsClient, unary } from "../support/grpc-js-client.js";
import { decodeBase64Text, frame, h2Call, parseFrames, trailerOf, webCall } from "../support/raw-calls.js";
import { type Clients, type Protocol, type TestServer, bearer, clientsFor, registerUser, startTestServer, transportFor, uniqueName } from "../support/test-server.js";

const PASSWORD = "correct horse battery";
/** The issue's bytes: a frame of 9 bytes whose field 1 announces a length far past the end. */
const ISSUE_FRAME = Buffer.from("00000000090affffffff0f010208", "hex");
const ISSUE_MESSAGE = ISSUE_FRAME.subarray(5);

/** LogLine is one parsed pino line. */
type LogLine = Record<string, unknown> & { level: number; msg?: string };

function capturingLogger(lines: LogLine[]) {
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n")) if (line.trim()) lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  return pino({ level: "debug" }, sink);
}

/** percentDecode undoes grpc-message's percent-encoding the way grpc-js does (decodeURI). */
const grpcJsDecode = (value: string | undefined) => decodeURI(value ?? "");

describe("front door (e2e)", () => {
  let server: TestServer;
  let alice: Clients;
  let groupId: string;
  const lines: LogLine[] = [];
  const grpcClients: grpc.Client[] = [];

  before(async () => {
    server = await startTestServer({ REQUEST_BODY_TIMEOUT: "1s" }, { logger: capturingLogger(lines) });
    alice = await registerUser(server.baseUrl, "grpc", "door");
    groupId = (await alice.groups.createGroup({ name: "door" })).group!.groupId;
  });
  after(async () => {
    for (const c of grpcClients) c.close();
    await server.stop();
  });

  describe("point 2: bounds before and while reading a body", () => {
    it("refuses a call without a token at once, without waiting for (or reading) its body", async () => {
      const head = Buffer.alloc(10);
      head.writeUInt32BE(65_000, 1); // announces 65,000 bytes, sends 5, never ends
      for (const path of ["/chat.v1.MessageService/SendMessage", "/chat.v1.GroupService/CreateGroup", "/chat.v1.StreamService/Subscribe"]) {
        const r = await h2Call(server.baseUrl, path, { "content-type": "application/grpc" }, head, false);
        assert.equal(r.grpcStatus, String(Code.Unauthenticated), path);
        assert.equal(grpcJsDecode(r.grpcMessage), "missing authorization: send the header `authorization: Bearer <access token>`");
      }
    });

    it("caps the public methods' requests at 8 KiB (PUBLIC_REQUEST_BYTES) on every protocol, others at MAX_REQUEST_BYTES", async () => {
      for (const protocol of ["grpc", "grpc-web", "connect", "connect-binary"] as Protocol[]) {
        const c = clientsFor(server.baseUrl, protocol);
        await rejectsWith(c.auth.login({ username: "x".repeat(9000), password: PASSWORD }), Code.ResourceExhausted, /larger than 8192 bytes/);
        // Under the cap, the use-case answers.
        await rejectsWith(c.auth.login({ username: "x".repeat(7000), password: PASSWORD }), Code.Unauthenticated, /wrong username or password/);
      }
      const c = clientsFor(server.baseUrl, "connect-binary");
      c.token = alice.token;
      await rejectsWith(c.groups.createGroup({ name: "n".repeat(9000) }), Code.InvalidArgument, /at most 100 characters/);
    });

    it("answers a body that never completes with DEADLINE_EXCEEDED at REQUEST_BODY_TIMEOUT, over HTTP/2", async () => {
      const partial = Buffer.alloc(900);
      partial.writeUInt32BE(1000, 1);
      const login = await h2Call(server.baseUrl, "/chat.v1.AuthService/Login", { "content-type": "application/grpc" }, partial, false);
      assert.equal(login.grpcStatus, String(Code.DeadlineExceeded));
      assert.match(grpcJsDecode(login.grpcMessage), /did not arrive within 1000 ms \(REQUEST_BODY_TIMEOUT\)/);
      const send = await h2Call(server.baseUrl, "/chat.v1.MessageService/SendMessage", { "content-type": "application/grpc", authorization: `Bearer ${alice.token}` }, partial, false);
      assert.equal(send.grpcStatus, String(Code.DeadlineExceeded));
    });

    it("answers a body that never completes with DEADLINE_EXCEEDED over HTTP/1.1, and closes the connection", async () => {
      const answer = await new Promise<{ text: string; closed: boolean }>((resolve, reject) => {
        const socket = net.connect(server.port, "127.0.0.1");
        const chunks: Buffer[] = [];
        const timer = setTimeout(() => {
          socket.destroy();
          resolve({ text: Buffer.concat(chunks).toString("latin1"), closed: false });
        }, 10_000);
        socket.on("data", (d) => chunks.push(d));
        socket.on("error", reject);
        socket.on("close", () => {
          clearTimeout(timer);
          resolve({ text: Buffer.concat(chunks).toString("latin1"), closed: true });
        });
        const body = Buffer.alloc(100);
        body.writeUInt32BE(200, 1);
        socket.write(`POST /chat.v1.AuthService/Login HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: 205\r\n\r\n`);
        socket.write(body);
      });
      assert.ok(answer.closed, "the server closes the connection");
      assert.match(answer.text, /^HTTP\/1\.1 200 /);
      assert.match(answer.text, /grpc-status: 4\r\n/);
      assert.match(answer.text, /REQUEST_BODY_TIMEOUT/);
    });
  });

  describe("point 5: undecodable requests are INVALID_ARGUMENT everywhere", () => {
    const routes = [
      { path: "/chat.v1.AuthService/Login", type: "chat.v1.LoginRequest", token: false },
      { path: "/chat.v1.GroupService/CreateGroup", type: "chat.v1.CreateGroupRequest", token: true },
      { path: "/chat.v1.MessageService/SendMessage", type: "chat.v1.SendMessageRequest", token: true },
    ];

    it("answers the issue's bytes INVALID_ARGUMENT naming the request type, over gRPC, gRPC-Web and Connect, logged at debug", async () => {
      const from = lines.length;
      for (const r of routes) {
        const auth: Record<string, string> = r.token ? { authorization: `Bearer ${alice.token}` } : {};
        const viaGrpc = await h2Call(server.baseUrl, r.path, { "content-type": "application/grpc", ...auth }, ISSUE_FRAME);
        assert.equal(viaGrpc.grpcStatus, String(Code.InvalidArgument), `gRPC ${r.path}`);
        assert.match(grpcJsDecode(viaGrpc.grpcMessage), new RegExp(`not a valid ${r.type.replace(".", "\\.")}`));
        const viaWeb = await webCall(server.baseUrl, r.path, ISSUE_FRAME, { token: r.token ? alice.token : undefined });
        assert.equal(viaWeb.trailer["grpc-status"], String(Code.InvalidArgument), `gRPC-Web ${r.path}`);
        assert.match(decodeURI(viaWeb.trailer["grpc-message"] ?? ""), new RegExp(`not a valid ${r.type.replace(".", "\\.")}`));
        const viaConnect = await fetch(`${server.baseUrl}${r.path}`, {
          method: "POST",
          headers: { "content-type": "application/proto", "connect-protocol-version": "1", ...auth },
          body: ISSUE_MESSAGE,
        });
        assert.equal(viaConnect.status, 400, `Connect ${r.path}`);
        const body = (await viaConnect.json()) as { code: string; message: string };
        assert.equal(body.code, "invalid_argument");
        assert.match(body.message, new RegExp(`^request is not a valid ${r.type.replace(".", "\\.")} \\(protobuf binary\\): premature EOF`));
      }
      // A bidirectional stream served by connect-node (reflection) checks each message the same way.
      const reflection = await h2Call(server.baseUrl, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", { "content-type": "application/grpc" }, ISSUE_FRAME);
      assert.equal(reflection.grpcStatus, String(Code.InvalidArgument), "reflection");
      assert.match(grpcJsDecode(reflection.grpcMessage), /not a valid grpc\.reflection\.v1\.ServerReflectionRequest/);
      const mine = lines.slice(from);
      assert.deepEqual(mine.filter((l) => l.level >= 50), [], "nothing logged at error");
      assert.ok(mine.some((l) => l.level === 20 && l.rpc === "chat.v1.AuthService/Login" && l.code === "InvalidArgument"), "a debug line says what was refused");
    });

    it("answers invalid UTF-8 in a username or a group name INVALID_ARGUMENT", async () => {
      const from = lines.length;
      // RegisterRequest { username: ff 61 62 63 (not UTF-8), password }
      const register = Buffer.concat([Buffer.from("0a04ff616263", "hex"), Buffer.from(toBinary(RegisterRequestSchema, create(RegisterRequestSchema, { password: PASSWORD })))]);
      const viaGrpc = await h2Call(server.baseUrl, "/chat.v1.AuthService/Register", { "content-type": "application/grpc" }, frame(register));
      assert.equal(viaGrpc.grpcStatus, String(Code.InvalidArgument));
      assert.match(grpcJsDecode(viaGrpc.grpcMessage), /not a valid chat\.v1\.RegisterRequest .*utf-8/);
      const viaConnect = await fetch(`${server.baseUrl}/chat.v1.AuthService/Login`, {
        method: "POST",
        headers: { "content-type": "application/proto" },
        body: Buffer.concat([Buffer.from("0a04ff616263", "hex"), Buffer.from(toBinary(LoginRequestSchema, create(LoginRequestSchema, { password: PASSWORD })))]),
      });
      assert.equal(((await viaConnect.json()) as { code: string }).code, "invalid_argument");
      // CreateGroupRequest { name: "gr" c3 28 (a broken two-byte sequence) }
      const viaWeb = await webCall(server.baseUrl, "/chat.v1.GroupService/CreateGroup", frame(Buffer.from("0a046772c328", "hex")), { token: alice.token });
      assert.equal(viaWeb.trailer["grpc-status"], String(Code.InvalidArgument));
      assert.match(decodeURI(viaWeb.trailer["grpc-message"] ?? ""), /not a valid chat\.v1\.CreateGroupRequest/);
      assert.deepEqual(lines.slice(from).filter((l) => l.level >= 50), [], "nothing logged at error");
      // Nothing was created.
      assert.deepEqual((await alice.groups.listGroups({})).groups.map((g) => g.name), ["door"]);
    });
  });

  describe("point 6: grpc-message reads back as sent in every stock client", () => {
    // A message with ':' ',' '%' and non-ASCII text, echoed by the id check.
    const weird = "50%: é, ü, 漢字 — ok?";
    const expected = `group_id "${weird}" is not a valid id (expected a lower-case UUID)`;

    it("over connect-node (GetGroup) and the unary fast path (ListMessages): grpc-js, connect-es gRPC and gRPC-Web", async () => {
      const groups = grpcJsClient(server.port, GroupService);
      const messages = grpcJsClient(server.port, MessageService);
      grpcClients.push(groups, messages);
      for (const [client, method] of [
        [groups, "getGroup"],
        [messages, "listMessages"],
      ] as const) {
        const err = await unary(client, method, { groupId: weird }, authMetadata(alice.token)).then(
          () => assert.fail("the call succeeded"),
          (e: grpc.ServiceError) => e,
        );
        assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
        assert.equal(err.details, expected, `grpc-js ${method}`);
      }
      for (const protocol of ["grpc", "grpc-web", "connect"] as Protocol[]) {
        const transport = transportFor(server.baseUrl, protocol, [bearer(() => alice.token)]);
        const g = createClient(GroupService, transport);
        const m = createClient(MessageService, transport);
        assert.equal((await rejectsWith(g.getGroup({ groupId: weird }), Code.InvalidArgument)).rawMessage, expected, `connect-es ${protocol} GetGroup`);
        assert.equal((await rejectsWith(m.listMessages({ groupId: weird }), Code.InvalidArgument)).rawMessage, expected, `connect-es ${protocol} ListMessages`);
      }
    });

    it("for the front door's own refusals (no token) in grpc-js and connect-es", async () => {
      const text = "missing authorization: send the header `authorization: Bearer <access token>`";
      const groups = grpcJsClient(server.port, GroupService);
      grpcClients.push(groups);
      const err = await unary(groups, "createGroup", { name: "x" }).then(
        () => assert.fail("the call succeeded"),
        (e: grpc.ServiceError) => e,
      );
      assert.equal(err.details, text);
      for (const protocol of ["grpc", "grpc-web"] as Protocol[]) {
        const c = clientsFor(server.baseUrl, protocol);
        assert.equal((await rejectsWith(c.groups.createGroup({ name: "x" }), Code.Unauthenticated)).rawMessage, text);
        assert.equal((await rejectsWith(c.messages.sendMessage({ groupId, text: "x", clientMessageId: "x" }), Code.Unauthenticated)).rawMessage, text);
      }
    });

    it("encodes only what the gRPC spec asks: printable ASCII but '%' as is", async () => {
      const r = await h2Call(
        server.baseUrl,
        "/chat.v1.GroupService/GetGroup",
        { "content-type": "application/grpc", authorization: `Bearer ${alice.token}` },
        frame(Buffer.from([0x0a, Buffer.byteLength(weird), ...Buffer.from(weird)])),
      );
      const encoded = `group_id "50%25: %C3%A9, %C3%BC, %E6%BC%A2%E5%AD%97 %E2%80%94 ok?" is not a valid id (expected a lower-case UUID)`;
      assert.equal(r.grpcMessage, encoded, "gRPC trailers");
      // connect-node's gRPC-Web trailer frame, binary and text.
      const request = frame(Buffer.from([0x0a, Buffer.byteLength(weird), ...Buffer.from(weird)]));
      for (const text of [false, true]) {
        const web = await webCall(server.baseUrl, "/chat.v1.GroupService/GetGroup", request, { text, token: alice.token });
        assert.equal(web.trailer["grpc-message"], encoded, `gRPC-Web trailer frame${text ? " (text)" : ""}`);
      }
    });
  });

  describe("point 7: gRPC-Web text mode", () => {
    it("serves unary calls through connect-node (Register) and the fast path (SendMessage), base64 both ways", async () => {
      const username = uniqueName("text");
      const reg = await webCall(server.baseUrl, "/chat.v1.AuthService/Register", frame(toBinary(RegisterRequestSchema, create(RegisterRequestSchema, { username, password: PASSWORD }))), { text: true });
      assert.equal(reg.status, 200);
      assert.match(reg.contentType ?? "", /^application\/grpc-web-text/);
      assert.equal(reg.trailer["grpc-status"], "0");
      assert.equal(reg.messages.length, 1);
      const registered = fromBinary(RegisterResponseSchema, reg.messages[0]!);
      assert.equal(registered.user?.username, username);
      for (const chunk of reg.chunks) assert.doesNotThrow(() => decodeBase64Text(chunk), "every chunk is base64 on its own");

      const send = create(SendMessageRequestSchema, { groupId, text: "in text mode", clientMessageId: "text-1" });
      const sent = await webCall(server.baseUrl, "/chat.v1.MessageService/SendMessage", frame(toBinary(SendMessageRequestSchema, send)), { text: true, token: alice.token });
      assert.match(sent.contentType ?? "", /^application\/grpc-web-text/);
      assert.equal(sent.trailer["grpc-status"], "0");
      assert.equal(fromBinary(SendMessageResponseSchema, sent.messages[0]!).message?.text, "in text mode");
    });

    it("decodes a request sent as separately padded base64 chunks", async () => {
      const bytes = frame(toBinary(SendMessageRequestSchema, create(SendMessageRequestSchema, { groupId, text: "padded chunks", clientMessageId: "text-2" })));
      const body = bytes.subarray(0, 7).toString("base64") + bytes.subarray(7).toString("base64");
      assert.match(body, /=[^=]/, "padding inside the body");
      const sent = await webCall(server.baseUrl, "/chat.v1.MessageService/SendMessage", body, { text: true, token: alice.token });
      assert.equal(sent.trailer["grpc-status"], "0");
      assert.equal(fromBinary(SendMessageResponseSchema, sent.messages[0]!).message?.text, "padded chunks");
    });

    it("answers errors in text mode: status and message in the base64 trailer frame", async () => {
      const login = await webCall(server.baseUrl, "/chat.v1.AuthService/Login", frame(toBinary(LoginRequestSchema, create(LoginRequestSchema, { username: alice.username, password: "wrong password" }))), { text: true });
      assert.match(login.contentType ?? "", /^application\/grpc-web-text/);
      assert.equal(login.trailer["grpc-status"], String(Code.Unauthenticated));
      assert.equal(decodeURI(login.trailer["grpc-message"] ?? ""), "wrong username or password");
      const noToken = await webCall(server.baseUrl, "/chat.v1.StreamService/Subscribe", frame(new Uint8Array()), { text: true });
      assert.equal(noToken.trailer["grpc-status"], String(Code.Unauthenticated));
      const notBase64 = await webCall(server.baseUrl, "/chat.v1.AuthService/Login", "not base64!", { text: true });
      assert.equal(notBase64.trailer["grpc-status"], String(Code.InvalidArgument));
      assert.match(decodeURI(notBase64.trailer["grpc-message"] ?? ""), /must be base64/);
    });

    it("streams Subscribe: ready, then a live message while the stream is open, each chunk decodable on its own", async () => {
      const abort = new AbortController();
      const res = await fetch(`${server.baseUrl}/chat.v1.StreamService/Subscribe`, {
        method: "POST",
        headers: { "content-type": "application/grpc-web-text", accept: "application/grpc-web-text", "x-grpc-web": "1", authorization: `Bearer ${alice.token}` },
        body: frame(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, {}))).toString("base64"),
        signal: abort.signal,
      });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^application\/grpc-web-text/);
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      let pending: Buffer = Buffer.alloc(0);
      const items: ReturnType<typeof fromBinary<typeof SubscribeResponseSchema>>[] = [];
      const next = async (pred: () => boolean) => {
        const deadline = Date.now() + 5000;
        while (!pred()) {
          assert.ok(Date.now() < deadline, `timed out; items: ${items.map((i) => i.payload.case).join(",")}`);
          const { value, done } = await reader.read();
          assert.ok(!done, "the stream stays open");
          const text = Buffer.from(value).toString("latin1");
          assert.equal(text.length % 4, 0, "a chunk is whole base64 groups");
          const { frames, rest } = parseFrames(Buffer.concat([pending, decodeBase64Text(text)]));
          pending = rest;
          for (const f of frames) {
            assert.equal(f.flags & 0x80, 0, `no trailer on an open stream: ${JSON.stringify(trailerOf(f))}`);
            items.push(fromBinary(SubscribeResponseSchema, f.payload));
          }
        }
      };
      try {
        await next(() => items.some((i) => i.payload.case === "ready"));
        await alice.messages.sendMessage({ groupId, text: "live in text mode", clientMessageId: "text-live" });
        await next(() => items.some((i) => i.payload.case === "event" && i.payload.value.kind.case === "message" && i.payload.value.kind.value.text === "live in text mode"));
      } finally {
        abort.abort();
        await reader.cancel().catch(() => {});
      }
    });

    it("serves text mode over HTTP/2 too", async () => {
      const body = frame(toBinary(LoginRequestSchema, create(LoginRequestSchema, { username: alice.username, password: PASSWORD }))).toString("base64");
      const session = await import("node:http2").then((h) => h.connect(server.baseUrl));
      try {
        const text = await new Promise<string>((resolve, reject) => {
          const s = session.request({ ":method": "POST", ":path": "/chat.v1.AuthService/Login", "content-type": "application/grpc-web-text" });
          let out = "";
          s.setEncoding("latin1");
          s.on("data", (d: string) => (out += d));
          s.on("end", () => resolve(out));
          s.on("error", reject);
          s.end(body);
        });
        const { frames } = parseFrames(decodeBase64Text(text));
        assert.equal(frames.length, 2);
        assert.equal(trailerOf(frames[1]!)["grpc-status"], "0");
      } finally {
        session.close();
      }
    });
  });
});

describe("front door (e2e): the process-wide budget for bodies without a token", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ REQUEST_BODY_TIMEOUT: "3s", UNAUTHENTICATED_BODY_BYTES: "65536" });
  });
  after(async () => {
    await server.stop();
  });

  it("refuses calls without a token past UNAUTHENTICATED_BODY_BYTES with RESOURCE_EXHAUSTED and retry-after, not calls with one", async () => {
    const http2 = await import("node:http2");
    const session = http2.connect(server.baseUrl);
    session.on("error", () => {});
    const alice = await registerUser(server.baseUrl, "grpc", "budget");
    const partial = Buffer.alloc(4096);
    partial.writeUInt32BE(5000, 1);
    // 20 incomplete Login bodies (under its 8 KiB cap) of 4,096 bytes: 81,920 bytes, over the 65,536 budget.
    const outcomes = Array.from({ length: 20 }, () => {
      const s = session.request({ ":method": "POST", ":path": "/chat.v1.AuthService/Login", "content-type": "application/grpc", te: "trailers" });
      s.on("error", () => {});
      s.on("data", () => {});
      s.write(partial);
      return new Promise<{ status: string | undefined; retryAfter: string | undefined }>((resolve) => {
        let status: string | undefined;
        let retryAfter: string | undefined;
        const take = (h: Record<string, unknown>) => {
          status ??= h["grpc-status"] as string | undefined;
          retryAfter ??= h["retry-after"] as string | undefined;
        };
        s.on("response", take);
        s.on("trailers", take);
        const timer = setTimeout(() => resolve({ status: "no answer", retryAfter }), 10_000);
        s.on("close", () => {
          clearTimeout(timer);
          resolve({ status, retryAfter });
        });
      });
    });
    try {
      // The first refusals come at once, while the others still hold the budget.
      const first = await Promise.race(outcomes);
      assert.equal(first.status, String(Code.ResourceExhausted));
      assert.equal(first.retryAfter, "1");
      // A public call without a token is refused now; an authenticated one is served.
      const login = clientsFor(server.baseUrl, "grpc").auth.login({ username: alice.username, password: PASSWORD });
      await rejectsWith(login, Code.ResourceExhausted, /without a token/);
      const { group } = await alice.groups.createGroup({ name: "served while the budget is spent" });
      assert.ok(group);
      const all = await Promise.all(outcomes);
      const tally = new Map<string | undefined, number>();
      for (const o of all) tally.set(o.status, (tally.get(o.status) ?? 0) + 1);
      assert.deepEqual([...tally.keys()].sort(), [String(Code.DeadlineExceeded), String(Code.ResourceExhausted)], JSON.stringify([...tally]));
      assert.ok((tally.get(String(Code.DeadlineExceeded)) ?? 0) <= 65_536 / 4096, "no more bodies held than the budget allows");
    } finally {
      session.destroy();
    }
    // Every byte was given back: public calls are served again.
    const ok = await clientsFor(server.baseUrl, "grpc").auth.login({ username: alice.username, password: PASSWORD });
    assert.equal(ok.user?.userId, alice.userId);
  });
});


/**
 * openH2 starts a raw gRPC call over `session` and reads its frames as they
 * come: `frames` fills, `done` resolves with the status at the stream's close.
 */
function openH2(session: import("node:http2").ClientHttp2Session, path: string, headers: Record<string, string>) {
  const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
  const frames: Buffer[] = [];
  let pending: Buffer = Buffer.alloc(0);
  const meta: Record<string, string | undefined> = {};
  let at = 0;
  const take = (h: Record<string, unknown>) => {
    for (const k of ["grpc-status", "grpc-message", "retry-after"]) meta[k] ??= h[k] as string | undefined;
    if (meta["grpc-status"] !== undefined && at === 0) at = performance.now();
  };
  stream.on("response", take);
  stream.on("trailers", take);
  stream.on("error", () => {});
  stream.on("data", (d: Buffer) => {
    const { frames: got, rest } = parseFrames(Buffer.concat([pending, d]));
    pending = rest;
    for (const f of got) frames.push(f.payload);
  });
  // A call still open after 8 s is cancelled here (its status: none), so a test fails instead of hanging.
  const timer = setTimeout(() => stream.close(http2Constants.NGHTTP2_CANCEL), 8000);
  /** done: `at` is when the status came (the stream may close later). */
  const done = new Promise<{ status: string | undefined; message: string | undefined; retryAfter: string | undefined; at: number }>((resolve) =>
    stream.on("close", () => {
      clearTimeout(timer);
      resolve({ status: meta["grpc-status"], message: grpcJsDecode(meta["grpc-message"]), retryAfter: meta["retry-after"], at: at || performance.now() });
    }),
  );
  return { stream, frames, done };
}

/** until polls `pred` every 10 ms for up to `ms`. */
async function until(pred: () => boolean, ms = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("front door (e2e): review of a8aae09", () => {
  let server: TestServer;
  let alice: Clients;
  let http2: typeof import("node:http2");
  before(async () => {
    http2 = await import("node:http2");
    server = await startTestServer({ REQUEST_BODY_TIMEOUT: "5s" });
    alice = await registerUser(server.baseUrl, "grpc", "review");
  });
  after(async () => {
    await server.stop();
  });

  it("finding 6: a Subscribe's token is verified once (by the front door), not again by the fast path", async () => {
    const { AccessTokens } = await import("../../services/auth/access-tokens.js");
    const original = AccessTokens.prototype.verify;
    let verifies = 0;
    AccessTokens.prototype.verify = function (this: typeof AccessTokens.prototype, ...args: Parameters<typeof original>) {
      verifies++;
      return original.apply(this, args);
    };
    const session = http2.connect(server.baseUrl);
    session.on("error", () => {});
    try {
      const call = openH2(session, "/chat.v1.StreamService/Subscribe", { authorization: `Bearer ${alice.token}` });
      call.stream.end(frame(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, {}))));
      await until(() => call.frames.some((f) => fromBinary(SubscribeResponseSchema, f).payload.case === "ready"), 5000, "ready");
      assert.equal(verifies, 1, "one token check per Subscribe");
    } finally {
      AccessTokens.prototype.verify = original;
      session.destroy();
    }
  });

  describe("finding 5: grpc-timeout counts from the request's arrival", () => {
    const sendBody = (groupId: string, id: string) =>
      frame(toBinary(SendMessageRequestSchema, create(SendMessageRequestSchema, { groupId, text: "trickled", clientMessageId: id })));

    it("answers DEADLINE_EXCEEDED at the deadline while a body still trickles (bound by grpc-timeout, not REQUEST_BODY_TIMEOUT)", async () => {
      const { group } = await alice.groups.createGroup({ name: "trickle" });
      const body = sendBody(group!.groupId, "trickle-1");
      const session = http2.connect(server.baseUrl);
      session.on("error", () => {});
      try {
        const started = performance.now();
        const call = openH2(session, "/chat.v1.MessageService/SendMessage", { authorization: `Bearer ${alice.token}`, "grpc-timeout": "500m" });
        call.stream.write(body.subarray(0, 3)); // the rest never comes (REQUEST_BODY_TIMEOUT is 5 s)
        const end = await call.done;
        assert.equal(end.status, String(Code.DeadlineExceeded), end.message);
        assert.match(end.message ?? "", /grpc-timeout/);
        const took = end.at - started;
        assert.ok(took >= 450 && took < 1500, `answered after ${Math.round(took)} ms, at the 500 ms deadline`);
      } finally {
        session.destroy();
      }
    });

    it("a call whose body took 600 ms of a 1 s deadline gets the 400 ms left, not a fresh 1 s", async () => {
      const { group } = await alice.groups.createGroup({ name: "slow send" });
      const body = sendBody(group!.groupId, "trickle-2");
      const { MessageService: Service } = await import("../../services/message/message-service.js");
      const original = Service.prototype.send;
      // The use-case takes 800 ms: done at ~1.4 s from arrival, past the deadline at 1 s.
      Service.prototype.send = async function (this: typeof Service.prototype, ...args: Parameters<typeof original>) {
        await new Promise((r) => setTimeout(r, 800));
        return original.apply(this, args);
      };
      const session = http2.connect(server.baseUrl);
      session.on("error", () => {});
      try {
        const started = performance.now();
        const call = openH2(session, "/chat.v1.MessageService/SendMessage", { authorization: `Bearer ${alice.token}`, "grpc-timeout": "1000m" });
        call.stream.write(body.subarray(0, 3));
        await new Promise((r) => setTimeout(r, 600));
        call.stream.end(body.subarray(3));
        const end = await call.done;
        const took = end.at - started;
        assert.equal(end.status, String(Code.DeadlineExceeded), `${end.status} ${end.message} after ${Math.round(took)} ms`);
        assert.ok(took < 1350, `answered after ${Math.round(took)} ms, at the 1 s deadline`);
      } finally {
        Service.prototype.send = original;
        session.destroy();
      }
    });
  });
});

describe("front door (e2e): finding 3, calls without a token that stay open", () => {
  let server: TestServer;
  let http2: typeof import("node:http2");
  let health: typeof import("../../gen/grpc/health/v1/health_pb.js");
  let reflection: typeof import("../../gen/grpc/reflection/v1/reflection_pb.js");
  before(async () => {
    http2 = await import("node:http2");
    health = await import("../../gen/grpc/health/v1/health_pb.js");
    reflection = await import("../../gen/grpc/reflection/v1/reflection_pb.js");
    server = await startTestServer({ MAX_OPEN_CALLS_WITHOUT_TOKEN: "3", REFLECTION_IDLE_TIMEOUT: "500ms" });
  });
  after(async () => {
    await server.stop();
  });
  const watchBody = (service: string) => frame(toBinary(health.HealthCheckRequestSchema, create(health.HealthCheckRequestSchema, { service })));
  const listServices = () =>
    frame(toBinary(reflection.ServerReflectionRequestSchema, create(reflection.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } })));

  it("refuses a health service name over 256 bytes with INVALID_ARGUMENT (Watch and Check), holding no watcher", async () => {
    const session = http2.connect(server.baseUrl);
    session.on("error", () => {});
    try {
      for (const method of ["Watch", "Check"]) {
        const call = openH2(session, `/grpc.health.v1.Health/${method}`, {});
        call.stream.end(watchBody("x".repeat(8000)));
        const end = await call.done;
        assert.equal(end.status, String(Code.InvalidArgument), `${method}: ${end.message}`);
        assert.match(end.message ?? "", /service name is 8000 bytes; at most 256/);
      }
      assert.equal(server.app.health.watcherCount, 0);
    } finally {
      session.destroy();
    }
  });

  it("holds at most MAX_OPEN_CALLS_WITHOUT_TOKEN Watches and reflection streams; the next gets RESOURCE_EXHAUSTED with retry-after", async () => {
    const session = http2.connect(server.baseUrl);
    session.on("error", () => {});
    try {
      const watches = [0, 1].map(() => {
        const call = openH2(session, "/grpc.health.v1.Health/Watch", {});
        call.stream.end(watchBody("no.such.Service"));
        return call;
      });
      const refl = openH2(session, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", {});
      refl.stream.write(listServices());
      await until(() => watches.every((w) => w.frames.length === 1) && refl.frames.length === 1, 5000, "3 open calls answered");
      // The 4th, of either kind, is refused at once.
      for (const path of ["/grpc.health.v1.Health/Watch", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"]) {
        const fourth = openH2(session, path, {});
        fourth.stream.end(path.includes("Health") ? watchBody("") : listServices());
        const end = await fourth.done;
        assert.equal(end.status, String(Code.ResourceExhausted), `${path}: ${end.message}`);
        assert.equal(end.retryAfter, "5");
        assert.match(end.message ?? "", /MAX_OPEN_CALLS_WITHOUT_TOKEN=3/);
      }
      // Unary public calls are not counted.
      const check = await h2Call(server.baseUrl, "/grpc.health.v1.Health/Check", { "content-type": "application/grpc" }, watchBody(""));
      assert.equal(check.grpcStatus, "0");
      // A cancelled Watch frees its slot.
      watches[0]!.stream.close(http2.constants.NGHTTP2_CANCEL);
      await watches[0]!.done;
      const again = openH2(session, "/grpc.health.v1.Health/Watch", {});
      again.stream.end(watchBody(""));
      await until(() => again.frames.length === 1, 5000, "a Watch served once a slot is free");
    } finally {
      session.destroy();
    }
  });

  it("ends a reflection stream with no request for REFLECTION_IDLE_TIMEOUT with DEADLINE_EXCEEDED, freeing its slot", async () => {
    const session = http2.connect(server.baseUrl);
    session.on("error", () => {});
    try {
      await until(() => server.app.health.watcherCount === 0, 5000, "the last test's watches to go");
      const started = performance.now();
      const refl = openH2(session, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", {});
      refl.stream.write(listServices()); // and never half-closes
      const end = await refl.done;
      const took = end.at - started;
      assert.equal(refl.frames.length, 1, "the request was answered");
      assert.equal(end.status, String(Code.DeadlineExceeded), end.message);
      assert.match(end.message ?? "", /no reflection request for 500 ms \(REFLECTION_IDLE_TIMEOUT\)/);
      assert.ok(took >= 450 && took < 3000, `ended after ${Math.round(took)} ms`);
      // Its slot is free again: three calls open (the cap).
      const watches = [0, 1, 2].map(() => {
        const call = openH2(session, "/grpc.health.v1.Health/Watch", {});
        call.stream.end(watchBody(""));
        return call;
      });
      await until(() => watches.every((w) => w.frames.length === 1), 5000, "3 Watches served");
    } finally {
      session.destroy();
    }
  });
});

describe("front door (e2e): finding 7, refusals", () => {
  let server: TestServer;
  let alice: Clients;
  const lines: LogLine[] = [];
  before(async () => {
    server = await startTestServer({}, { logger: capturingLogger(lines) });
    alice = await registerUser(server.baseUrl, "grpc", "nits");
  });
  after(async () => {
    await server.stop();
  });

  it("logs its refusals with userId (when the token was verified) and durationMs, like the framed unary path's lines", async () => {
    const noToken = await h2Call(server.baseUrl, "/chat.v1.GroupService/GetGroup", { "content-type": "application/grpc", "x-request-id": "refused-no-token" }, ISSUE_FRAME);
    assert.equal(noToken.grpcStatus, String(Code.Unauthenticated));
    const badBody = await h2Call(
      server.baseUrl,
      "/chat.v1.GroupService/GetGroup",
      { "content-type": "application/grpc", authorization: `Bearer ${alice.token}`, "x-request-id": "refused-bad-body" },
      ISSUE_FRAME,
    );
    assert.equal(badBody.grpcStatus, String(Code.InvalidArgument));
    await until(() => lines.some((l) => l.requestId === "refused-bad-body"), 2000, "the log line");
    const first = lines.find((l) => l.requestId === "refused-no-token");
    const second = lines.find((l) => l.requestId === "refused-bad-body");
    assert.equal(first?.code, "Unauthenticated");
    assert.equal(typeof first?.durationMs, "number", JSON.stringify(first));
    assert.equal(first?.userId, undefined);
    assert.equal(second?.code, "InvalidArgument");
    assert.equal(typeof second?.durationMs, "number", JSON.stringify(second));
    assert.equal(second?.userId, alice.userId);
  });

  /** h1Exchange writes `first` then, after 150 ms, `later` on one HTTP/1.1 connection and returns the responses' heads and whether it closed. */
  const h1Exchange = (first: string | Buffer, later: string | Buffer | undefined) =>
    new Promise<{ text: string; closed: boolean }>((resolve, reject) => {
      const socket = net.connect(server.port, "127.0.0.1");
      const chunks: Buffer[] = [];
      let closed = false;
      socket.on("data", (d) => chunks.push(d));
      socket.on("error", reject);
      socket.on("close", () => (closed = true));
      socket.write(first);
      setTimeout(() => {
        if (later !== undefined && !closed) socket.write(later);
        setTimeout(() => {
          socket.destroy();
          resolve({ text: Buffer.concat(chunks).toString("latin1"), closed });
        }, 400);
      }, 150);
    });
  const head = (length: number) =>
    `POST /chat.v1.GroupService/GetGroup HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: ${length}\r\n\r\n`;

  it("refusing a token over HTTP/1.1 keeps the connection when the whole body had arrived, and closes it otherwise", async () => {
    const body = frame(new Uint8Array(5));
    // The whole body with the headers: answered, kept; a second request on the same connection is answered too.
    const kept = await h1Exchange(Buffer.concat([Buffer.from(head(body.length)), body]), Buffer.concat([Buffer.from(head(body.length)), body]));
    assert.equal(kept.text.match(/HTTP\/1\.1 200/g)?.length, 2, kept.text);
    assert.doesNotMatch(kept.text, /connection: close/i);
    assert.ok(!kept.closed);
    // The body not yet sent: answered at once with connection: close, and closed.
    const closed = await h1Exchange(head(body.length), undefined);
    assert.match(closed.text, /HTTP\/1\.1 200/);
    assert.match(closed.text, /connection: close/i);
    assert.ok(closed.closed);
  });
});

describe("front door (e2e): finding 3, HTTP/2 connections with no call open (HTTP2_IDLE_TIMEOUT)", () => {
  let server: TestServer;
  let http2: typeof import("node:http2");
  before(async () => {
    http2 = await import("node:http2");
    server = await startTestServer({ HTTP2_IDLE_TIMEOUT: "300ms" });
  });
  after(async () => {
    await server.stop();
  });

  it("closes a connection idle past the timeout with GOAWAY (NO_ERROR), never one with a stream open", async () => {
    const health = await import("../../gen/grpc/health/v1/health_pb.js");
    const body = frame(toBinary(health.HealthCheckRequestSchema, create(health.HealthCheckRequestSchema, { service: "" })));
    const idle = http2.connect(server.baseUrl);
    const busy = http2.connect(server.baseUrl);
    for (const s of [idle, busy]) s.on("error", () => {});
    try {
      let goaway: number | undefined;
      let idleClosedAt = 0;
      idle.on("goaway", (code) => (goaway = code));
      idle.on("close", () => (idleClosedAt = performance.now()));
      let busyClosed = false;
      busy.on("close", () => (busyClosed = true));
      const started = performance.now();
      // One call on each; the busy connection then keeps a Watch open, silent, past the timeout.
      const check = openH2(idle, "/grpc.health.v1.Health/Check", {});
      check.stream.end(body);
      assert.equal((await check.done).status, "0");
      const watch = openH2(busy, "/grpc.health.v1.Health/Watch", {});
      watch.stream.end(body);
      await until(() => idleClosedAt > 0, 3000, "the idle connection to close");
      assert.equal(goaway, http2.constants.NGHTTP2_NO_ERROR);
      assert.ok(idleClosedAt - started >= 250, `closed after ${Math.round(idleClosedAt - started)} ms`);
      await new Promise((r) => setTimeout(r, 700));
      assert.ok(!busyClosed, "a connection with an open stream stays");
      assert.equal(watch.frames.length, 1, "the Watch is open and answered");
      assert.equal(watch.stream.closed, false);
    } finally {
      idle.destroy();
      busy.destroy();
    }
  });
});
