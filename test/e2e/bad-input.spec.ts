/**
 * Bad input end to end: every malformed, oversized, unknown or forged input
 * gets a clear status and message, writes nothing, and leaves the server
 * serving normal calls — blank and oversized texts (UTF-8 bytes), unknown
 * and malformed ids, over-long names, out-of-range limits, garbage bytes on
 * the port, request bodies over MAX_REQUEST_BYTES, and missing, expired,
 * tampered or forged access tokens.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { type CryptoKey, type JWK, type JWTPayload, SignJWT, base64url, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK } from "jose";
import { AuthService } from "../../gen/chat/v1/auth_service_pb.js";
import { MemberRole } from "../../gen/chat/v1/group_pb.js";
import { GroupService, type ListGroupsResponse } from "../../gen/chat/v1/group_service_pb.js";
import { MessageService } from "../../gen/chat/v1/message_service_pb.js";
import { grpcRejects, rejectsWith } from "../support/assertions.js";
import { authMetadata, grpcJsClient, unary } from "../support/grpc-js-client.js";
import { subscribe } from "../support/stream-reader.js";
import {
  type Clients,
  MovableClock,
  PROTOCOLS,
  type TestServer,
  clientsFor,
  registerUser,
  startTestServer,
  uniqueName,
} from "../support/test-server.js";

const PASSWORD = "correct horse battery";



/** RawResult is what a raw TCP client saw: the bytes the server sent and whether it closed the connection. */
interface RawResult {
  readonly response: string;
  readonly closed: boolean;
}

/** rawExchange writes `bytes` on a fresh TCP connection and collects the answer until the server closes or `ms` pass. */
function rawExchange(port: number, bytes: Buffer, ms = 3000): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, "127.0.0.1");
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ response: Buffer.concat(chunks).toString("latin1"), closed });
    };
    const timer = setTimeout(() => finish(false), ms);
    socket.on("connect", () => socket.write(bytes));
    socket.on("data", (d) => chunks.push(d));
    socket.on("end", () => finish(true));
    socket.on("close", () => finish(true));
    socket.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "ECONNRESET" || e.code === "EPIPE") finish(true);
      else {
        clearTimeout(timer);
        reject(e);
      }
    });
  });
}

describe("bad input (e2e)", () => {
  let server: TestServer;
  const clock = new MovableClock();
  let alice: Clients;
  let bob: Clients;
  let groupId: string;
  const grpcClients: grpc.Client[] = [];

  /** healthy proves the server still serves a normal authenticated call, and that nothing was written to the group. */
  let expectedHead = 0n;
  async function healthy(): Promise<void> {
    const { group } = await alice.groups.getGroup({ groupId });
    assert.equal(group?.groupId, groupId);
    const page = await alice.messages.listMessages({ groupId });
    assert.equal(page.headSeq, expectedHead, "no event was written by a rejected call");
  }

  /** send sends a valid message and bumps the expected head. */
  async function send(text: string): Promise<bigint> {
    const res = await alice.messages.sendMessage({ groupId, text, clientMessageId: randomUUID() });
    expectedHead += 1n;
    assert.equal(res.message?.seq, expectedHead, "seqs stay dense: rejected sends took none");
    return res.message?.seq ?? 0n;
  }

  before(async () => {
    server = await startTestServer({ MAX_REQUEST_BYTES: "65536" }, { clock });
    alice = await registerUser(server.baseUrl, "grpc", "badin");
    bob = await registerUser(server.baseUrl, "connect", "badinb");
    const { group } = await alice.groups.createGroup({ name: "bad input", memberUsernames: [bob.username] });
    assert.ok(group);
    groupId = group.groupId;
    expectedHead = (await alice.messages.listMessages({ groupId })).headSeq;
    assert.equal(expectedHead, 2n, "created + bob added");
  });
  after(async () => {
    for (const c of grpcClients) c.close();
    await server.stop();
  });

  describe("message text", () => {
    it("rejects empty and whitespace-only text with INVALID_ARGUMENT and writes nothing", async () => {
      for (const text of ["", " ", "   \t\n  ", "\r\n", "\u00a0\u2003\u3000", "\ufeff"]) {
        await rejectsWith(
          alice.messages.sendMessage({ groupId, text, clientMessageId: randomUUID() }),
          Code.InvalidArgument,
          /text must not be empty/,
        );
      }
      await healthy();
      await send("  not blank  ");
    });

    it("accepts exactly 4096 UTF-8 bytes and rejects 4097, counting multibyte characters in bytes", async () => {
      const ok: [string, string][] = [
        ["ascii", "a".repeat(4096)],
        ["2-byte", "é".repeat(2048)],
        ["3-byte", `${"€".repeat(1365)}a`],
        ["4-byte", "😀".repeat(1024)],
      ];
      const tooBig: [string, string][] = [
        ["ascii", "a".repeat(4097)],
        ["2-byte", `${"é".repeat(2048)}a`],
        ["3-byte", "€".repeat(1366) /* 4098 bytes, 1366 chars */],
        ["4-byte", `${"😀".repeat(1024)}a`],
        ["2-byte, under 4096 chars", "é".repeat(2100)],
      ];
      for (const [what, text] of tooBig) {
        const bytes = Buffer.byteLength(text, "utf8");
        assert.ok(bytes > 4096 && text.length < 4200);
        const err = await rejectsWith(
          alice.messages.sendMessage({ groupId, text, clientMessageId: randomUUID() }),
          Code.InvalidArgument,
          /limit is 4096 bytes/,
        );
        assert.ok(err.rawMessage.includes(String(bytes)), `${what}: message names the size ${bytes}: ${err.rawMessage}`);
      }
      await healthy();
      for (const [what, text] of ok) {
        assert.equal(Buffer.byteLength(text, "utf8"), 4096, what);
        await send(text);
      }
      const page = await alice.messages.listMessages({ groupId, limit: 4 });
      assert.deepEqual(
        page.messages.map((m) => m.text),
        ok.map(([, t]) => t),
        "stored texts are byte-exact",
      );
      await healthy();
    });

    it("rejects a bad client_message_id with INVALID_ARGUMENT", async () => {
      for (const clientMessageId of ["", "has space", "x".repeat(65), "tab\there", "ünïcode"]) {
        await rejectsWith(alice.messages.sendMessage({ groupId, text: "hi", clientMessageId }), Code.InvalidArgument, /client_message_id/);
      }
      await healthy();
    });
  });

  describe("ids", () => {
    it("answers NOT_FOUND for well-formed but unknown ids", async () => {
      const unknown = randomUUID();
      await rejectsWith(alice.groups.getGroup({ groupId: unknown }), Code.NotFound, new RegExp(`group ${unknown} not found`));
      await rejectsWith(alice.messages.sendMessage({ groupId: unknown, text: "hi", clientMessageId: "x1" }), Code.NotFound);
      await rejectsWith(alice.messages.listMessages({ groupId: unknown }), Code.NotFound);
      await rejectsWith(alice.groups.listMembers({ groupId: unknown }), Code.NotFound);
      await rejectsWith(alice.groups.updateGroup({ groupId: unknown, name: "x" }), Code.NotFound);
      await rejectsWith(alice.groups.addMember({ groupId: unknown, user: { case: "username", value: bob.username } }), Code.NotFound);
      // Unknown users in a group the caller owns.
      await rejectsWith(alice.groups.addMember({ groupId, user: { case: "userId", value: unknown } }), Code.NotFound, /not found/);
      await rejectsWith(alice.groups.addMember({ groupId, user: { case: "username", value: "nosuchuser" } }), Code.NotFound);
      await rejectsWith(alice.groups.removeMember({ groupId, userId: unknown }), Code.NotFound, /not a member/);
      await rejectsWith(alice.groups.updateMemberRole({ groupId, userId: unknown, role: MemberRole.ADMIN }), Code.NotFound);
      // Creating a group with an unknown member creates nothing.
      const before = (await alice.groups.listGroups({})).groups.length;
      await rejectsWith(alice.groups.createGroup({ name: "half", memberUsernames: [bob.username, "nosuchuser"] }), Code.NotFound);
      assert.equal((await alice.groups.listGroups({})).groups.length, before, "no partial group");
      assert.equal((await bob.groups.listGroups({})).groups.length, 1, "bob was not added to a half-made group");
      await healthy();
    });

    it("answers INVALID_ARGUMENT for malformed ids", async () => {
      const malformed = ["", "not-an-id", randomUUID().toUpperCase(), `${randomUUID()} `, `${randomUUID()}0`, "'; DROP TABLE users; --", "x".repeat(10_000)];
      for (const bad of malformed) {
        const field = bad === "" ? /group_id is required/ : /group_id .* is not a valid id/;
        await rejectsWith(alice.groups.getGroup({ groupId: bad }), Code.InvalidArgument, field);
        await rejectsWith(alice.messages.sendMessage({ groupId: bad, text: "hi", clientMessageId: "m" }), Code.InvalidArgument, field);
        await rejectsWith(alice.messages.listMessages({ groupId: bad }), Code.InvalidArgument, field);
        await rejectsWith(alice.groups.listMembers({ groupId: bad }), Code.InvalidArgument, field);
        await rejectsWith(alice.groups.removeMember({ groupId, userId: bad }), Code.InvalidArgument, /user_id/);
        await rejectsWith(alice.groups.addMember({ groupId, user: { case: "userId", value: bad } }), Code.InvalidArgument, /user_id/);
        if (bad !== "") {
          await rejectsWith(alice.groups.listGroups({ pageToken: bad }), Code.InvalidArgument, /page_token/);
          await rejectsWith(alice.groups.listMembers({ groupId, pageToken: bad }), Code.InvalidArgument, /page_token/);
        }
      }
      const err = await rejectsWith(alice.groups.getGroup({ groupId: "x".repeat(10_000) }), Code.InvalidArgument);
      assert.ok(err.rawMessage.length < 200, "a huge id is not echoed back whole");
      await rejectsWith(alice.groups.addMember({ groupId }), Code.InvalidArgument, /user_id or username/);
      await rejectsWith(alice.groups.addMember({ groupId, user: { case: "username", value: bob.username }, role: 99 as MemberRole }), Code.InvalidArgument, /role/);
      await healthy();
    });

    it("ends a Subscribe with a malformed cursor group id with INVALID_ARGUMENT", async () => {
      const stream = subscribe(alice, [{ groupId: "nope" }]);
      await stream.waitDone();
      const err = ConnectError.from(stream.error);
      assert.equal(err.code, Code.InvalidArgument, err.message);
      assert.match(err.rawMessage, /cursors.group_id/);
      await healthy();
    });
  });

  describe("names and limits", () => {
    it("rejects over-long or invalid group names and writes nothing", async () => {
      const before = (await alice.groups.listGroups({})).groups.length;
      for (const name of ["", "   ", "n".repeat(101), "😀".repeat(101), "tab\tname", "nul\u0000name"]) {
        await rejectsWith(alice.groups.createGroup({ name }), Code.InvalidArgument, /name must/);
        await rejectsWith(alice.groups.updateGroup({ groupId, name }), Code.InvalidArgument, /name must/);
      }
      assert.equal((await alice.groups.listGroups({})).groups.length, before);
      await healthy();
      // The limits themselves are allowed: 100 characters, also when multibyte.
      const { group } = await alice.groups.createGroup({ name: "😀".repeat(100) });
      assert.equal(group?.name, "😀".repeat(100));
      const renamed = await alice.groups.updateGroup({ groupId, name: "n".repeat(100) });
      expectedHead += 1n;
      assert.equal(renamed.seq, expectedHead);
      await healthy();
    });

    it("rejects over-long or invalid usernames and passwords at register, creating no account", async () => {
      const anon = clientsFor(server.baseUrl, "connect");
      for (const username of ["ab", "u".repeat(33), "has space", "émile", "semi;colon", "x".repeat(1_000)]) {
        await rejectsWith(anon.auth.register({ username, password: PASSWORD }), Code.InvalidArgument, /username must be/);
      }
      const name = uniqueName("pwcheck");
      await rejectsWith(anon.auth.register({ username: name, password: "short" }), Code.InvalidArgument, /at least 8/);
      await rejectsWith(anon.auth.register({ username: name, password: "p".repeat(257) }), Code.InvalidArgument, /at most 256/);
      await rejectsWith(anon.auth.login({ username: name, password: PASSWORD }), Code.Unauthenticated, /wrong username or password/);
      // The name is still free: the rejected calls created nothing.
      const ok = await anon.auth.register({ username: name, password: "p".repeat(256) });
      assert.equal(ok.user?.username, name);
      const u32 = "u".repeat(32);
      const longest = await anon.auth.register({ username: u32, password: PASSWORD });
      assert.equal(longest.user?.username, u32);
      await rejectsWith(anon.auth.login({ username: "", password: "" }), Code.InvalidArgument, /required/);
      await healthy();
    });

    it("rejects page sizes and limits out of range", async () => {
      await rejectsWith(alice.groups.listGroups({ pageSize: 501 }), Code.InvalidArgument, /page_size must be between 1 and 500/);
      await rejectsWith(alice.groups.listGroups({ pageSize: 0xffffffff }), Code.InvalidArgument, /page_size/);
      await rejectsWith(alice.groups.listMembers({ groupId, pageSize: 1001 }), Code.InvalidArgument, /page_size must be between 1 and 1000/);
      await rejectsWith(alice.messages.listMessages({ groupId, limit: 201 }), Code.InvalidArgument, /limit must be between 1 and 200/);
      await rejectsWith(alice.messages.listMessages({ groupId, limit: 0xffffffff }), Code.InvalidArgument, /limit/);
      await rejectsWith(
        alice.messages.listMessages({ groupId, anchor: { case: "beforeSeq", value: 2n ** 63n } }),
        Code.InvalidArgument,
        /before_seq is out of range/,
      );
      await rejectsWith(
        alice.messages.listMessages({ groupId, anchor: { case: "afterSeq", value: 2n ** 64n - 1n } }),
        Code.InvalidArgument,
        /after_seq is out of range/,
      );
      // The maxima themselves are fine.
      await alice.groups.listGroups({ pageSize: 500 });
      await alice.groups.listMembers({ groupId, pageSize: 1000 });
      await alice.messages.listMessages({ groupId, limit: 200 });
      await healthy();
    });
  });

  describe("request size", () => {
    const big = "u".repeat(100_000);

    it("rejects a request body over MAX_REQUEST_BYTES with RESOURCE_EXHAUSTED on every protocol", async () => {
      for (const protocol of PROTOCOLS) {
        const c = clientsFor(server.baseUrl, protocol);
        c.token = alice.token;
        // Register, Login and RefreshToken have their own small cap (front-door.ts PUBLIC_REQUEST_BYTES).
        await rejectsWith(c.auth.register({ username: big, password: PASSWORD }), Code.ResourceExhausted, /larger than 8192 bytes/);
        await rejectsWith(c.messages.sendMessage({ groupId, text: big, clientMessageId: randomUUID() }), Code.ResourceExhausted, /larger than 65536 bytes/);
        // Under the request limit but over the text limit: the text rule answers.
        await rejectsWith(
          c.messages.sendMessage({ groupId, text: "t".repeat(60_000), clientMessageId: randomUUID() }),
          Code.InvalidArgument,
          /60000 bytes/,
        );
        await healthy();
      }
    });

    it("rejects a request body over MAX_REQUEST_BYTES with RESOURCE_EXHAUSTED from a grpc-js client", async () => {
      const auth = grpcJsClient(server.port, AuthService);
      const messages = grpcJsClient(server.port, MessageService);
      const groups = grpcJsClient(server.port, GroupService);
      grpcClients.push(auth, messages, groups);
      await grpcRejects(unary(auth, "register", { username: big, password: PASSWORD }), grpc.status.RESOURCE_EXHAUSTED);
      await grpcRejects(
        unary(messages, "sendMessage", { groupId, text: big, clientMessageId: "big" }, authMetadata(alice.token)),
        grpc.status.RESOURCE_EXHAUSTED,
      );
      // The same grpc-js channel keeps working.
      await unary<ListGroupsResponse>(groups, "listGroups", {}, authMetadata(alice.token));
      await healthy();
    });
  });

  describe("garbage on the port", () => {
    it("answers random bytes with 400 or a close, and keeps serving", async () => {
      for (let i = 0; i < 5; i++) {
        const bytes = randomBytes(1024 + i * 997);
        bytes[0] = 0x01 + (bytes[0] ?? 0) % 0x40; // never a prefix of the HTTP/2 preface ("PRI ...")
        const r = await rawExchange(server.port, bytes);
        assert.ok(r.closed, "the server closes the connection");
        if (r.response !== "") assert.match(r.response, /^HTTP\/1\.1 400 /);
        await healthy();
      }
    });

    it("answers an HTTP/1 garbage line with 400 and closes", async () => {
      for (const line of [
        "HELLO WORLD THIS IS NOT HTTP\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "POST /chat.v1.AuthService/Login HTTP/1.1\r\ncontent-length: nope\r\n\r\n",
        `GET /${"a".repeat(20_000)} HTTP/1.1\r\n${"x-junk: y\r\n".repeat(2_000)}\r\n`,
      ]) {
        const r = await rawExchange(server.port, Buffer.from(line, "latin1"));
        assert.ok(r.closed, `the server closes after ${JSON.stringify(line.slice(0, 30))}`);
        assert.match(r.response, /^HTTP\/1\.1 4\d\d /, `an HTTP error for ${JSON.stringify(line.slice(0, 30))}`);
        await healthy();
      }
    });

    it("closes an HTTP/2 connection that sends garbage after the preface", async () => {
      const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
      const r = await rawExchange(server.port, Buffer.concat([preface, randomBytes(2048)]));
      assert.ok(r.closed, "the server closes the HTTP/2 connection");
      await healthy();
    });

    it("answers a gRPC-framed or Connect request with an undecodable body with an error status", async () => {
      // Connect unary, binary: the body is not a LoginRequest.
      const proto = await fetch(`${server.baseUrl}/chat.v1.AuthService/Login`, {
        method: "POST",
        headers: { "content-type": "application/proto", "connect-protocol-version": "1" },
        body: Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]),
      });
      assert.equal(proto.status, 400);
      const protoBody = (await proto.json()) as { code?: string; message?: string };
      // Bad bytes are the client's error on every path (the front door decodes before connect-node, which would say internal).
      assert.equal(protoBody.code, "invalid_argument", JSON.stringify(protoBody));
      assert.match(protoBody.message ?? "", /^request is not a valid chat\.v1\.LoginRequest \(protobuf binary\): /);
      // Connect unary, JSON: not JSON at all.
      const json = await fetch(`${server.baseUrl}/chat.v1.AuthService/Login`, {
        method: "POST",
        headers: { "content-type": "application/json", "connect-protocol-version": "1" },
        body: "{not json",
      });
      assert.ok(json.status >= 400 && json.status < 600, `status ${json.status}`);
      const jsonBody = (await json.json()) as { code?: string; message?: string };
      assert.equal(jsonBody.code, "invalid_argument", JSON.stringify(jsonBody));
      assert.match(jsonBody.message ?? "", /cannot decode message chat.v1.LoginRequest from JSON/);
      // A gRPC-Web frame that claims more bytes than it has.
      const web = await fetch(`${server.baseUrl}/chat.v1.AuthService/Login`, {
        method: "POST",
        headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
        body: Buffer.from([0x00, 0x00, 0x00, 0x10, 0x00, 0x0a]),
      });
      const status = web.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(await web.text())?.[1];
      assert.equal(status, String(Code.InvalidArgument), `grpc-web status ${String(status)}`);
      await healthy();
    });
  });

  describe("access tokens", () => {
    let serverKey: JWK;
    let claims: JWTPayload;
    let kid: string;

    before(async () => {
      serverKey = JSON.parse(await readFile(join(server.dataDir, "jwt-ed25519.jwk"), "utf8")) as JWK;
      claims = decodeJwt(alice.token ?? "");
      kid = decodeProtectedHeader(alice.token ?? "").kid ?? "";
    });

    /** sign makes a JWT over `payload` with `key` (the server's own unless given). */
    async function sign(payload: JWTPayload, opts: { alg?: string; key?: CryptoKey | Uint8Array; header?: Record<string, unknown> } = {}) {
      const alg = opts.alg ?? "EdDSA";
      const key = opts.key ?? ((await importJWK({ ...serverKey, alg: "EdDSA" }, "EdDSA")) as CryptoKey);
      return new SignJWT(payload).setProtectedHeader({ typ: "JWT", kid, ...opts.header, alg }).sign(key);
    }

    const now = () => Math.floor(clock.now() / 1000);
    const fresh = (): JWTPayload => ({ ...claims, iat: now(), exp: now() + 600, jti: randomUUID() });

    /** expectRejected checks a token is refused on every protocol and by grpc-js, and that the server then serves. */
    async function expectRejected(token: string | undefined, message: RegExp, header?: string, checkHealthy = true): Promise<void> {
      for (const protocol of PROTOCOLS) {
        const c = clientsFor(server.baseUrl, protocol);
        if (header === undefined) c.token = token;
        const opts = header === undefined ? {} : { headers: { authorization: header } };
        await rejectsWith(c.groups.getGroup({ groupId }, opts), Code.Unauthenticated, message);
      }
      const groups = grpcJsClient(server.port, GroupService);
      try {
        const md = header === undefined ? authMetadata(token) : new grpc.Metadata();
        if (header !== undefined) md.set("authorization", header);
        await grpcRejects(unary(groups, "getGroup", { groupId }, md), grpc.status.UNAUTHENTICATED, message);
      } finally {
        groups.close();
      }
      if (checkHealthy) await healthy();
    }

    it("accepts a token signed with the server key and the right claims (control)", async () => {
      const c = clientsFor(server.baseUrl, "grpc");
      c.token = await sign(fresh());
      const { group } = await c.groups.getGroup({ groupId });
      assert.equal(group?.groupId, groupId);
    });

    it("rejects a missing or malformed authorization header", async () => {
      await expectRejected(undefined, /missing authorization/);
      await expectRejected(undefined, /missing authorization/, "Bearer");
      await expectRejected(undefined, /missing authorization/, "Bearer    ");
      await expectRejected(undefined, /missing authorization/, "Basic YWxpY2U6c2VjcmV0");
      await expectRejected(undefined, /missing authorization/, `Bearer ${alice.token} extra`);
      await expectRejected("garbage", /malformed/);
      await expectRejected("a.b.c", /malformed/);
    });

    it("rejects an expired token (server clock) and accepts it again before exp", async () => {
      try {
        clock.offsetMs = 16 * 60_000;
        await expectRejected(alice.token, /expired/, undefined, false);
        const c = clientsFor(server.baseUrl, "grpc");
        c.token = await sign({ ...fresh(), exp: now() - 1 });
        await rejectsWith(c.groups.getGroup({ groupId }), Code.Unauthenticated, /expired/);
      } finally {
        clock.offsetMs = 0;
      }
      await healthy();
    });

    it("rejects a tampered payload or signature", async () => {
      const [h, p, s] = (alice.token ?? "").split(".") as [string, string, string];
      // Payload changed to claim bob's identity, signature kept.
      const forgedPayload = base64url.encode(JSON.stringify({ ...claims, sub: bob.userId, name: bob.username }));
      await expectRejected(`${h}.${forgedPayload}.${s}`, /signature is invalid/);
      // One character of the payload flipped.
      const i = Math.floor(p.length / 2);
      const flipped = `${p.slice(0, i)}${p[i] === "A" ? "B" : "A"}${p.slice(i + 1)}`;
      await expectRejected(`${h}.${flipped}.${s}`, /signature is invalid|malformed/);
      // One character of the signature flipped.
      const j = 5;
      await expectRejected(`${h}.${p}.${s.slice(0, j)}${s[j] === "A" ? "B" : "A"}${s.slice(j + 1)}`, /signature is invalid/);
      // Signature removed.
      await expectRejected(`${h}.${p}.`, /signature is invalid|malformed/);
    });

    it('rejects alg "none"', async () => {
      const header = base64url.encode(JSON.stringify({ alg: "none", typ: "JWT" }));
      const payload = base64url.encode(JSON.stringify(fresh()));
      await expectRejected(`${header}.${payload}.`, /algorithm not accepted|malformed/);
      const header2 = base64url.encode(JSON.stringify({ alg: "NONE", typ: "JWT", kid }));
      await expectRejected(`${header2}.${payload}.`, /algorithm not accepted|malformed/);
    });

    it("rejects tokens signed with another algorithm (HS256, also keyed with the public key; ES256)", async () => {
      await expectRejected(await sign(fresh(), { alg: "HS256", key: randomBytes(32) }), /algorithm not accepted/);
      // Algorithm confusion: HMAC keyed with the server's public key material.
      await expectRejected(await sign(fresh(), { alg: "HS256", key: base64url.decode(serverKey.x ?? "") }), /algorithm not accepted/);
      const { x: _x, d: _d, ...rest } = serverKey;
      await expectRejected(
        await sign(fresh(), { alg: "HS256", key: new TextEncoder().encode(JSON.stringify({ ...rest, x: serverKey.x })) }),
        /algorithm not accepted/,
      );
      const es = await generateKeyPair("ES256");
      await expectRejected(await sign(fresh(), { alg: "ES256", key: es.privateKey }), /algorithm not accepted/);
    });

    it("rejects a token signed by a different Ed25519 key with the right claims, also with that key embedded", async () => {
      const other = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
      await expectRejected(await sign(fresh(), { key: other.privateKey }), /signature is invalid/);
      const jwk = await exportJWK(other.publicKey);
      await expectRejected(await sign(fresh(), { key: other.privateKey, header: { jwk } }), /signature is invalid|malformed/);
    });

    it("rejects wrong or missing iss, aud, sub, exp and jti, even when signed with the server key", async () => {
      await expectRejected(await sign({ ...fresh(), iss: "evil" }), /claim "iss" is invalid/);
      await expectRejected(await sign({ ...fresh(), aud: "other-service" }), /claim "aud" is invalid/);
      await expectRejected(await sign({ ...fresh(), aud: ["other-service", "x"] }), /claim "aud" is invalid/);
      const { iss: _iss, ...noIss } = fresh();
      await expectRejected(await sign(noIss), /claim "iss" is invalid/);
      const { aud: _aud, ...noAud } = fresh();
      await expectRejected(await sign(noAud), /claim "aud" is invalid/);
      const { exp: _exp, ...noExp } = fresh();
      await expectRejected(await sign(noExp), /claim "exp" is invalid/);
      const { jti: _jti, ...noJti } = fresh();
      await expectRejected(await sign(noJti), /claim "jti" is invalid/);
      const { sub: _sub, ...noSub } = fresh();
      await expectRejected(await sign(noSub), /claim "sub" is invalid/);
      await expectRejected(await sign({ ...fresh(), nbf: now() + 600 }), /claim "nbf" is invalid/);
    });
  });
});

describe("bad input (e2e): connections left behind by bad requests", () => {
  it("an idle HTTP/1.1 keep-alive connection does not hold up shutdown", async () => {
    const server = await startTestServer({ SHUTDOWN_GRACE: "5s" });
    const socket = net.connect(server.port, "127.0.0.1");
    try {
      const answer = await new Promise<string>((resolve, reject) => {
        socket.once("error", reject);
        socket.write("GET /.well-known/jwks.json HTTP/1.1\r\nhost: x\r\nconnection: keep-alive\r\n\r\n");
        socket.once("data", (d) => resolve(d.toString("latin1")));
      });
      assert.match(answer, /^HTTP\/1\.1 200 /);
      const t = Date.now();
      await server.stop();
      assert.ok(Date.now() - t < 1000, `stop took ${Date.now() - t} ms with an idle keep-alive connection`);
    } finally {
      socket.destroy();
    }
  });

  it("an HTTP/2 request refused before its body was read does not stay open", async () => {
    const server = await startTestServer({ MAX_REQUEST_BYTES: "65536", SHUTDOWN_GRACE: "5s" });
    try {
      const c = clientsFor(server.baseUrl, "grpc"); // one HTTP/2 connection for all calls
      for (let i = 0; i < 3; i++) {
        await rejectsWith(c.auth.register({ username: "u".repeat(100_000), password: PASSWORD }), Code.ResourceExhausted);
      }
      await rejectsWith(c.auth.login({ username: "nobody", password: PASSWORD }), Code.Unauthenticated);
    } finally {
      const t = Date.now();
      await server.stop();
      assert.ok(Date.now() - t < 2500, `stop took ${Date.now() - t} ms: refused streams were left open`);
    }
  });
});
