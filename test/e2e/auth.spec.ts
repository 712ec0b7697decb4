/**
 * Auth end to end, against a real server on a real socket: register and
 * login (argon2id), EdDSA access tokens verifiable from the JWKS document,
 * the signing key surviving a restart, hashed and rotated refresh tokens with
 * family revocation on reuse, logout ending live streams, login rate limits
 * with a retry-after trailer, the bearer requirement on every non-public RPC,
 * and streams ended when their token expires — over gRPC, gRPC-Web, Connect
 * and a @grpc/grpc-js client.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type DescService, create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import Database from "better-sqlite3";
import { type JSONWebKeySet, createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import { AuthService, type LoginResponse, type RefreshTokenResponse, type RegisterResponse } from "../../gen/chat/v1/auth_service_pb.js";
import { GroupService, type ListGroupsResponse } from "../../gen/chat/v1/group_service_pb.js";
import { MessageService } from "../../gen/chat/v1/message_service_pb.js";
import { NotificationService } from "../../gen/chat/v1/notification_service_pb.js";
import { StreamService, type SubscribeResponse } from "../../gen/chat/v1/stream_service_pb.js";
import { Health, type HealthCheckResponse, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import * as reflectionV1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { grpcRejects, rejectsWith } from "../support/assertions.js";
import { authMetadata, grpcJsClient, unary } from "../support/grpc-js-client.js";
import { WsStreamEnd, subscribe, wsSubscribe } from "../support/stream-reader.js";
import {
  type Clients,
  MovableClock,
  PROTOCOLS,
  type Protocol,
  type TestServer,
  clientsFor,
  registerUser,
  startTestServer,
  uniqueName,
} from "../support/test-server.js";

const PASSWORD = "correct horse battery";
const WRONG_LOGIN = "wrong username or password";



/** loginAs logs in over `protocol` and returns clients holding the new session. */
async function loginAs(baseUrl: string, protocol: Protocol, username: string, password = PASSWORD): Promise<Clients> {
  const c = clientsFor(baseUrl, protocol);
  const res = await c.auth.login({ username, password });
  c.token = res.tokens?.accessToken;
  c.refreshToken = res.tokens?.refreshToken;
  c.userId = res.user?.userId ?? "";
  c.username = username;
  return c;
}

/** grpcSubscribe opens a Subscribe stream with a grpc-js client. */
function grpcSubscribe(client: grpc.Client & Record<string, unknown>, token: string | undefined): grpc.ClientReadableStream<SubscribeResponse> {
  const open = client.subscribe as (req: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<SubscribeResponse>;
  return open.call(client, { cursors: [] }, authMetadata(token));
}

/** grpcStreamStatus waits for a grpc-js server stream to end and returns its status. */
function grpcStreamStatus(call: grpc.ClientReadableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>, ms = 5000) {
  return new Promise<{ code: grpc.status; details: string; items: unknown[] }>((resolve, reject) => {
    const items: unknown[] = [];
    const timer = setTimeout(() => {
      call.cancel();
      reject(new Error(`grpc-js stream did not end within ${ms} ms (items: ${items.length})`));
    }, ms);
    call.on("data", (d: unknown) => items.push(d));
    call.on("error", (e: grpc.ServiceError) => {
      clearTimeout(timer);
      resolve({ code: e.code, details: e.details, items });
    });
    call.on("end", () => {
      clearTimeout(timer);
      resolve({ code: grpc.status.OK, details: "", items });
    });
  });
}

describe("auth (e2e)", () => {
  let server: TestServer;
  const clock = new MovableClock();
  const grpcClients: grpc.Client[] = [];
  const grpcClient = (service: DescService) => {
    const c = grpcJsClient(server.port, service);
    grpcClients.push(c);
    return c;
  };

  before(async () => {
    server = await startTestServer({}, { clock });
  });
  after(async () => {
    for (const c of grpcClients) c.close();
    await server.stop();
  });

  for (const protocol of PROTOCOLS) {
    it(`register, login, refresh, logout over ${protocol}`, async () => {
      const anon = clientsFor(server.baseUrl, protocol);
      const username = uniqueName(`flow${protocol.replace("-", "")}`);

      const reg = await anon.auth.register({ username: username.toUpperCase(), password: PASSWORD });
      assert.equal(reg.user?.username, username, "usernames are stored lower case");
      assert.ok(reg.tokens?.accessToken && reg.tokens.refreshToken);

      // Duplicate, also in another case.
      await rejectsWith(anon.auth.register({ username, password: PASSWORD }), Code.AlreadyExists, /taken/);
      await rejectsWith(anon.auth.register({ username: ` ${username.toUpperCase()}`, password: PASSWORD }), Code.AlreadyExists);

      // A wrong password and an unknown user get the very same answer.
      const wrongPw = await rejectsWith(anon.auth.login({ username, password: "not the password" }), Code.Unauthenticated);
      const noUser = await rejectsWith(anon.auth.login({ username: `${username}zz`, password: PASSWORD }), Code.Unauthenticated);
      assert.equal(wrongPw.rawMessage, WRONG_LOGIN);
      assert.equal(noUser.rawMessage, wrongPw.rawMessage);

      // Without a token, nothing but the public RPCs.
      await rejectsWith(anon.groups.listGroups({}), Code.Unauthenticated, /authorization/);

      const alice = await loginAs(server.baseUrl, protocol, username);
      assert.equal(alice.userId, reg.user?.userId);
      assert.notEqual(alice.refreshToken, reg.tokens.refreshToken, "each login is a new session");
      await alice.groups.listGroups({});

      // Rotation: the new pair works, the old refresh token is spent.
      const first = alice.refreshToken ?? "";
      const rotated = await alice.auth.refreshToken({ refreshToken: first });
      const second = rotated.tokens?.refreshToken ?? "";
      assert.ok(second && second !== first);
      assert.ok(rotated.tokens?.accessToken);
      alice.token = rotated.tokens.accessToken;
      await alice.groups.listGroups({});
      assert.equal(decodeJwt(alice.token).sub, alice.userId);

      // Logout (authenticated) revokes the session: its refresh token is dead.
      await alice.auth.logout({ refreshToken: second });
      await rejectsWith(alice.auth.refreshToken({ refreshToken: second }), Code.Unauthenticated, /revoked/);
      // The registration session is a separate family and still works.
      await anon.auth.refreshToken({ refreshToken: reg.tokens.refreshToken });
      // Logout itself needs a token.
      await rejectsWith(anon.auth.logout({ refreshToken: second }), Code.Unauthenticated, /authorization/);
    });
  }

  it("register, login, refresh, logout with a @grpc/grpc-js client", async () => {
    const auth = grpcClient(AuthService);
    const groups = grpcClient(GroupService);
    const username = uniqueName("grpcjs");
    const reg = await unary<RegisterResponse>(auth, "register", { username, password: PASSWORD });
    assert.equal(reg.user?.username, username);
    await grpcRejects(unary(auth, "register", { username, password: PASSWORD }), grpc.status.ALREADY_EXISTS);

    const wrongPw = await grpcRejects(unary(auth, "login", { username, password: "nope nope nope" }), grpc.status.UNAUTHENTICATED);
    const noUser = await grpcRejects(unary(auth, "login", { username: `${username}q`, password: PASSWORD }), grpc.status.UNAUTHENTICATED);
    assert.equal(wrongPw.details, WRONG_LOGIN);
    assert.equal(noUser.details, WRONG_LOGIN);

    const login = await unary<LoginResponse>(auth, "login", { username, password: PASSWORD });
    const access = login.tokens?.accessToken ?? "";
    await grpcRejects(unary(groups, "listGroups", {}), grpc.status.UNAUTHENTICATED, /authorization/);
    await unary<ListGroupsResponse>(groups, "listGroups", {}, authMetadata(access));

    const r1 = login.tokens?.refreshToken ?? "";
    const rotated = await unary<RefreshTokenResponse>(auth, "refreshToken", { refreshToken: r1 });
    const r2 = rotated.tokens?.refreshToken ?? "";
    await unary<ListGroupsResponse>(groups, "listGroups", {}, authMetadata(rotated.tokens?.accessToken));

    await grpcRejects(unary(auth, "logout", { refreshToken: r2 }), grpc.status.UNAUTHENTICATED);
    await unary(auth, "logout", { refreshToken: r2 }, authMetadata(access));
    await grpcRejects(unary(auth, "refreshToken", { refreshToken: r2 }), grpc.status.UNAUTHENTICATED, /revoked/);
  });

  it("issues EdDSA JWTs with iss/aud/sub/exp/jti for 15 minutes, verifiable with the served JWKS", async () => {
    const alice = await registerUser(server.baseUrl, "connect", "jwt");
    const token = alice.token ?? "";
    const header = decodeProtectedHeader(token);
    assert.equal(header.alg, "EdDSA");
    const claims = decodeJwt(token);
    assert.equal(claims.iss, "chat");
    assert.equal(claims.aud, "chat");
    assert.equal(claims.sub, alice.userId);
    assert.equal(typeof claims.jti, "string");
    assert.ok((claims.jti ?? "").length >= 16);
    assert.equal(typeof claims.iat, "number");
    assert.equal((claims.exp ?? 0) - (claims.iat ?? 0), 15 * 60, "access tokens live 15 minutes");
    assert.ok(Math.abs((claims.exp ?? 0) * 1000 - (clock.now() + 15 * 60_000)) < 5_000);

    const again = await loginAs(server.baseUrl, "connect", alice.username);
    assert.notEqual(decodeJwt(again.token ?? "").jti, claims.jti, "every token has its own jti");

    const res = await fetch(`${server.baseUrl}/.well-known/jwks.json`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
    const jwks = (await res.json()) as JSONWebKeySet;
    assert.equal(jwks.keys.length, 1);
    const [key] = jwks.keys;
    assert.equal(key?.kty, "OKP");
    assert.equal(key?.crv, "Ed25519");
    assert.equal(key?.kid, header.kid);
    assert.equal(key?.d, undefined, "the private part is never served");

    const options = { issuer: "chat", audience: "chat", algorithms: ["EdDSA"] };
    const local = await jwtVerify(token, createLocalJWKSet(jwks), options);
    assert.equal(local.payload.sub, alice.userId);
    const remote = await jwtVerify(token, createRemoteJWKSet(new URL(`${server.baseUrl}/.well-known/jwks.json`)), options);
    assert.equal(remote.payload.sub, alice.userId);
    // Sanity: the JWKS check itself can fail.
    const tampered = `${token.slice(0, -4)}${token.slice(-4) === "AAAA" ? "BBBB" : "AAAA"}`;
    await assert.rejects(jwtVerify(tampered, createLocalJWKSet(jwks), options));
  });

  it("accepts a token until exp and rejects it after (15 minutes, server clock)", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "exp");
    try {
      clock.offsetMs = 14 * 60_000 + 50_000;
      await alice.groups.listGroups({});
      clock.offsetMs = 15 * 60_000 + 2_000;
      await rejectsWith(alice.groups.listGroups({}), Code.Unauthenticated, /expired/);
    } finally {
      clock.offsetMs = 0;
    }
    await alice.groups.listGroups({});
  });

  it("stores the password as argon2id (m=19456,t=2,p=1) and neither raw passwords nor refresh tokens", async () => {
    const password = `pw-${randomBytes(12).toString("hex")}`;
    const c = clientsFor(server.baseUrl, "grpc");
    const username = uniqueName("stored");
    const reg = await c.auth.register({ username, password });
    const login = await c.auth.login({ username, password });
    const rotated = await c.auth.refreshToken({ refreshToken: login.tokens?.refreshToken ?? "" });
    const rawTokens = [reg.tokens?.refreshToken, login.tokens?.refreshToken, rotated.tokens?.refreshToken].map((t) => t ?? "");
    assert.ok(rawTokens.every((t) => t.length >= 32), "refresh tokens are long random values");
    assert.equal(new Set(rawTokens).size, 3);

    const db = new Database(join(server.dataDir, "chat.db"), { readonly: true, fileMustExist: true });
    try {
      const row = db.prepare("SELECT password_hash FROM users WHERE username = ?").get(username) as { password_hash: string } | undefined;
      assert.ok(row, "the user row exists");
      assert.ok(
        row.password_hash.startsWith("$argon2id$v=19$m=19456,t=2,p=1$"),
        `expected an argon2id PHC string with OWASP parameters, got ${row.password_hash.slice(0, 40)}`,
      );
      const tokenRows = db.prepare("SELECT * FROM refresh_tokens WHERE user_id = ?").all(reg.user?.userId) as Record<string, unknown>[];
      assert.equal(tokenRows.length, 3, "one stored row per issued refresh token");
      const stored = JSON.stringify(tokenRows);
      for (const raw of rawTokens) {
        assert.ok(!stored.includes(raw), "a raw refresh token is stored");
        assert.ok(stored.includes(createHash("sha256").update(raw).digest("hex")), "the token is stored as its hash");
      }
    } finally {
      db.close();
    }

    // Nothing on disk (database, WAL, key file) holds the password or a raw refresh token.
    const files = await readdir(server.dataDir);
    assert.ok(files.includes("chat.db"));
    for (const file of files) {
      const bytes = await readFile(join(server.dataDir, file));
      assert.ok(!bytes.includes(password), `${file} contains the raw password`);
      for (const raw of rawTokens) assert.ok(!bytes.includes(raw), `${file} contains a raw refresh token`);
    }
  });

  it("revokes the whole family when a rotated refresh token is reused, and ends its streams", async () => {
    const alice = await registerUser(server.baseUrl, "grpc-web", "reuse");
    const other = await loginAs(server.baseUrl, "grpc", alice.username); // another session of the same user
    const r1 = alice.refreshToken ?? "";
    const t2 = (await alice.auth.refreshToken({ refreshToken: r1 })).tokens;
    const t3 = (await alice.auth.refreshToken({ refreshToken: t2?.refreshToken ?? "" })).tokens;
    assert.ok(t3?.refreshToken && t3.accessToken);
    alice.token = t3.accessToken;

    const stream = subscribe(alice);
    const otherStream = subscribe(other);
    await stream.waitReady();
    await otherStream.waitReady();

    // An attacker replays r1 (already rotated): refused, and the family is revoked.
    await rejectsWith(alice.auth.refreshToken({ refreshToken: r1 }), Code.Unauthenticated, /already used/);
    await stream.waitDone();
    assert.equal(ConnectError.from(stream.error).code, Code.Unauthenticated);
    // The newest token of the family no longer works either; nor do the older ones.
    await rejectsWith(alice.auth.refreshToken({ refreshToken: t3.refreshToken }), Code.Unauthenticated);
    await rejectsWith(alice.auth.refreshToken({ refreshToken: t2?.refreshToken ?? "" }), Code.Unauthenticated);
    // The user's other session is untouched.
    assert.equal(otherStream.done, false);
    await other.auth.refreshToken({ refreshToken: other.refreshToken ?? "" });
    otherStream.close();
  });

  it("answers a repeated RefreshToken (its answer lost) with the same refresh token, and the session and its streams live on", async () => {
    const alice = await registerUser(server.baseUrl, "connect", "lostanswer");
    const r1 = alice.refreshToken ?? "";
    const stream = subscribe(alice);
    await stream.waitReady();
    const lost = (await alice.auth.refreshToken({ refreshToken: r1 })).tokens; // never reaches the client
    const retried = (await alice.auth.refreshToken({ refreshToken: r1 })).tokens;
    assert.ok(lost?.refreshToken && retried?.accessToken);
    assert.equal(retried.refreshToken, lost.refreshToken);
    assert.notEqual(retried.accessToken, lost.accessToken);
    alice.token = retried.accessToken;
    await alice.groups.listGroups({});
    // The successor rotates as usual; the old token, its successor now used, is a theft signal again.
    const next = (await alice.auth.refreshToken({ refreshToken: retried.refreshToken })).tokens;
    assert.ok(next?.refreshToken && next.refreshToken !== retried.refreshToken);
    assert.equal(stream.done, false, "the live stream was not ended");
    await rejectsWith(alice.auth.refreshToken({ refreshToken: r1 }), Code.Unauthenticated, /already used/);
    await stream.waitDone();
  });

  it("logout revokes the session and ends only that session's live streams with UNAUTHENTICATED", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "logout");
    const otherSession = await loginAs(server.baseUrl, "connect", alice.username);
    const { group } = await alice.groups.createGroup({ name: "logout test" });
    assert.ok(group);

    const ended = subscribe(alice);
    const kept = subscribe(otherSession);
    const grpcStreams = grpcClient(StreamService);
    const grpcCall = grpcSubscribe(grpcStreams, alice.token);
    const grpcEnded = grpcStreamStatus(grpcCall);
    await ended.waitReady();
    await kept.waitReady();

    await alice.auth.logout({ refreshToken: alice.refreshToken ?? "" });
    await ended.waitDone();
    const err = ConnectError.from(ended.error);
    assert.equal(err.code, Code.Unauthenticated);
    assert.match(err.rawMessage, /revoked/);
    const g = await grpcEnded;
    assert.equal(g.code, grpc.status.UNAUTHENTICATED);

    await rejectsWith(alice.auth.refreshToken({ refreshToken: alice.refreshToken ?? "" }), Code.Unauthenticated);
    // Logout is idempotent.
    await alice.auth.logout({ refreshToken: alice.refreshToken ?? "" });

    // The other session's stream still delivers.
    await otherSession.messages.sendMessage({ groupId: group.groupId, text: "still here", clientMessageId: "after-logout" });
    await kept.waitForEvents(group.groupId, 1);
    assert.equal(kept.done, false);
    kept.close();
  });

  it("requires a bearer token on every RPC except Register, Login, RefreshToken, health and reflection", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "bearer");
    const publicMethods = new Set(["chat.v1.AuthService/Register", "chat.v1.AuthService/Login", "chat.v1.AuthService/RefreshToken"]);
    const checked: string[] = [];
    for (const service of [AuthService, GroupService, MessageService, StreamService, NotificationService] as DescService[]) {
      const client = grpcClient(service);
      for (const method of service.methods) {
        const name = `${service.typeName}/${method.name}`;
        if (publicMethods.has(name)) continue;
        for (const md of [new grpc.Metadata(), authMetadata("not-a-jwt"), basicAuth()]) {
          const request = create(method.input);
          const fn = client[method.localName] as (...args: unknown[]) => unknown;
          let status: { code: grpc.status; details: string };
          if (method.methodKind === "unary") {
            status = await new Promise((resolve) => {
              fn.call(client, request, md, (e: grpc.ServiceError | null) => resolve(e ?? { code: grpc.status.OK, details: "" }));
            });
          } else if (method.methodKind === "server_streaming") {
            status = await grpcStreamStatus(fn.call(client, request, md) as grpc.ClientReadableStream<unknown>);
          } else {
            const call = fn.call(client, md) as grpc.ClientDuplexStream<unknown, unknown>;
            const done = grpcStreamStatus(call);
            call.write(request);
            status = await done;
          }
          assert.equal(status.code, grpc.status.UNAUTHENTICATED, `${name} without a valid token: ${status.details}`);
        }
        checked.push(name);
      }
    }
    assert.equal(checked.length, 1 + 9 + 2 + 2 + 4, `every non-public chat.v1 RPC was checked: ${checked.join(", ")}`);

    // The public ones work without a token.
    const auth = grpcClient(AuthService);
    const login = await unary<LoginResponse>(auth, "login", { username: alice.username, password: PASSWORD });
    await unary<RefreshTokenResponse>(auth, "refreshToken", { refreshToken: login.tokens?.refreshToken ?? "" });
    const health = await unary<HealthCheckResponse>(grpcClient(Health), "check", { service: "" });
    assert.equal(health.status, HealthCheckResponse_ServingStatus.SERVING);
    const reflection = grpcClient(reflectionV1.ServerReflection);
    const call = (reflection.serverReflectionInfo as (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, reflectionV1.ServerReflectionResponse>)(
      new grpc.Metadata(),
    );
    const reflected = grpcStreamStatus(call);
    call.write(create(reflectionV1.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } }));
    call.end();
    const result = await reflected;
    assert.equal(result.code, grpc.status.OK, result.details);
    const listed = (result.items as reflectionV1.ServerReflectionResponse[]).flatMap((r) =>
      r.messageResponse.case === "listServicesResponse" ? r.messageResponse.value.service.map((s) => s.name) : [],
    );
    assert.ok(listed.includes("chat.v1.GroupService"), `reflection lists the services: ${listed.join(", ")}`);
    assert.ok(listed.includes("chat.v1.NotificationService"), `reflection lists NotificationService: ${listed.join(", ")}`);
  });

  it("refuses a refresh token after its 30-day lifetime", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "stale");
    const other = await registerUser(server.baseUrl, "grpc", "stale");
    try {
      clock.offsetMs = 29 * 86_400_000;
      const rotated = await other.auth.refreshToken({ refreshToken: other.refreshToken ?? "" });
      assert.ok(rotated.tokens?.refreshToken);
      clock.offsetMs = 30 * 86_400_000 + 60_000;
      await rejectsWith(alice.auth.refreshToken({ refreshToken: alice.refreshToken ?? "" }), Code.Unauthenticated, /expired/);
    } finally {
      clock.offsetMs = 0;
    }
  });

  it("restricts what an authenticated bearer may log out: not another user's session", async () => {
    const alice = await registerUser(server.baseUrl, "connect", "owner");
    const mallory = await registerUser(server.baseUrl, "connect", "mallory");
    await rejectsWith(mallory.auth.logout({ refreshToken: alice.refreshToken ?? "" }), Code.PermissionDenied);
    await alice.auth.refreshToken({ refreshToken: alice.refreshToken ?? "" });
  });
});

function basicAuth(): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("authorization", `Basic ${Buffer.from("alice:secret").toString("base64")}`);
  return md;
}

describe("auth (e2e): signing key across restarts", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it("keeps the Ed25519 key (mode 0600): tokens and refresh tokens issued before a restart still work", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "restart");
    const jwksBefore = await (await fetch(`${server.baseUrl}/.well-known/jwks.json`)).json();
    const keyFile = join(server.dataDir, "jwt-ed25519.jwk");
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600);

    await server.restart();

    const jwksAfter = await (await fetch(`${server.baseUrl}/.well-known/jwks.json`)).json();
    assert.deepEqual(jwksAfter, jwksBefore);
    for (const protocol of PROTOCOLS) {
      const c = clientsFor(server.baseUrl, protocol);
      c.token = alice.token;
      const { groups } = await c.groups.listGroups({});
      assert.deepEqual(groups, []);
    }
    const grpcJs = grpcJsClient(server.port, GroupService);
    try {
      await unary<ListGroupsResponse>(grpcJs, "listGroups", {}, authMetadata(alice.token));
    } finally {
      grpcJs.close();
    }
    const fresh = clientsFor(server.baseUrl, "connect");
    const rotated = await fresh.auth.refreshToken({ refreshToken: alice.refreshToken ?? "" });
    assert.ok(rotated.tokens?.accessToken);
    assert.equal(decodeProtectedHeader(rotated.tokens.accessToken).kid, decodeProtectedHeader(alice.token ?? "").kid);
    await loginAs(server.baseUrl, "grpc-web", alice.username);
  });
});

describe("auth (e2e): login rate limits", () => {
  it("limits login attempts per username, with a retry-after trailer, on every protocol", async () => {
    const clock = new MovableClock();
    const server = await startTestServer({ LOGIN_ATTEMPTS_PER_MINUTE: "3" }, { clock });
    const grpcAuth = grpcJsClient(server.port, AuthService);
    try {
      const bob = await registerUser(server.baseUrl, "grpc", "limited");
      const bystander = await registerUser(server.baseUrl, "grpc", "bystander");
      const anon = clientsFor(server.baseUrl, "connect");
      for (let i = 0; i < 3; i++) {
        await rejectsWith(anon.auth.login({ username: bob.username, password: `guess number ${i}` }), Code.Unauthenticated);
      }
      // The right password does not help once the username is limited — on any protocol.
      for (const protocol of PROTOCOLS) {
        const c = clientsFor(server.baseUrl, protocol);
        const err = await rejectsWith(
          c.auth.login({ username: bob.username.toUpperCase(), password: PASSWORD }),
          Code.ResourceExhausted,
          /too many login attempts for this username/,
        );
        const retryAfter = Number(err.metadata.get("retry-after"));
        assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 20, `retry-after over ${protocol}: ${err.metadata.get("retry-after")}`);
      }
      const grpcErr = await grpcRejects(
        unary(grpcAuth, "login", { username: bob.username, password: PASSWORD }),
        grpc.status.RESOURCE_EXHAUSTED,
      );
      const [retry] = grpcErr.metadata.get("retry-after");
      assert.ok(Number(retry) >= 1 && Number(retry) <= 20, `retry-after over grpc-js: ${String(retry)}`);

      // Another username from the same address is not affected.
      await loginAs(server.baseUrl, "grpc", bystander.username);
      // After the advertised wait, bob may try again.
      clock.offsetMs = 21_000;
      await loginAs(server.baseUrl, "grpc", bob.username);
    } finally {
      grpcAuth.close();
      await server.stop();
    }
  });

  it("limits login attempts per client address across usernames; X-Forwarded-For only counts behind a trusted proxy", async () => {
    const server = await startTestServer({ LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS: "4" });
    try {
      const carol = await registerUser(server.baseUrl, "grpc", "addr");
      const anon = clientsFor(server.baseUrl, "grpc-web");
      // A spoofed X-Forwarded-For does not escape the limit when the proxy is not trusted.
      const spoof = (i: number) => ({ headers: { "x-forwarded-for": `10.0.0.${i}` } });
      for (let i = 0; i < 4; i++) {
        await rejectsWith(anon.auth.login({ username: uniqueName("nobody"), password: PASSWORD }, spoof(i)), Code.Unauthenticated);
      }
      for (const protocol of PROTOCOLS) {
        const err = await rejectsWith(
          clientsFor(server.baseUrl, protocol).auth.login({ username: carol.username, password: PASSWORD }, spoof(99)),
          Code.ResourceExhausted,
          /too many login attempts from your address/,
        );
        const retryAfter = Number(err.metadata.get("retry-after"));
        assert.ok(retryAfter >= 1 && retryAfter <= 15, `retry-after over ${protocol}: ${err.metadata.get("retry-after")}`);
      }
      // Registered users with tokens are unaffected: only Login is limited.
      await carol.groups.listGroups({});
    } finally {
      await server.stop();
    }

    const proxied = await startTestServer({ LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS: "2", TRUST_PROXY: "true" });
    try {
      const dave = await registerUser(proxied.baseUrl, "grpc", "proxied");
      const c = clientsFor(proxied.baseUrl, "connect");
      // The proxy appends the real address; what the client put before it is ignored.
      const from = (ip: string) => ({ headers: { "x-forwarded-for": `203.0.113.66, ${ip}` } });
      await rejectsWith(c.auth.login({ username: dave.username, password: "wrong password" }, from("192.0.2.1")), Code.Unauthenticated);
      await rejectsWith(c.auth.login({ username: dave.username, password: "wrong password" }, from("192.0.2.1")), Code.Unauthenticated);
      await rejectsWith(c.auth.login({ username: dave.username, password: PASSWORD }, from("192.0.2.1")), Code.ResourceExhausted, /address/);
      // Another client behind the proxy has its own budget.
      const ok = await c.auth.login({ username: dave.username, password: PASSWORD }, from("192.0.2.2"));
      assert.equal(ok.user?.userId, dave.userId);
    } finally {
      await proxied.stop();
    }
  });
});

describe("auth (e2e): registration limit", () => {
  it("limits registrations per client address (each costs an argon2 hash)", async () => {
    const server = await startTestServer({ REGISTRATIONS_PER_MINUTE_PER_ADDRESS: "2" });
    try {
      const anon = clientsFor(server.baseUrl, "grpc");
      await anon.auth.register({ username: uniqueName("reg"), password: PASSWORD });
      await anon.auth.register({ username: uniqueName("reg"), password: PASSWORD });
      const err = await rejectsWith(
        anon.auth.register({ username: uniqueName("reg"), password: PASSWORD }),
        Code.ResourceExhausted,
        /too many registrations from your address/,
      );
      assert.ok(Number(err.metadata.get("retry-after")) >= 1);
      // Logging in is a separate budget.
      await rejectsWith(anon.auth.login({ username: uniqueName("nobody"), password: PASSWORD }), Code.Unauthenticated);
    } finally {
      await server.stop();
    }
  });
});

describe("auth (e2e): login limits, order of checks", () => {
  it("does not charge the username for an attempt refused for its address; impossible names get the wrong-login answer", async () => {
    const server = await startTestServer({ LOGIN_ATTEMPTS_PER_MINUTE: "2", LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS: "1", TRUST_PROXY: "true" });
    try {
      const erin = await registerUser(server.baseUrl, "grpc", "erin");
      const c = clientsFor(server.baseUrl, "connect");
      const from = (ip: string) => ({ headers: { "x-forwarded-for": ip } });
      await rejectsWith(c.auth.login({ username: erin.username, password: "wrong password" }, from("198.51.100.1")), Code.Unauthenticated);
      for (const username of [erin.username, "x".repeat(4_000), uniqueName("ghost")]) {
        await rejectsWith(c.auth.login({ username, password: PASSWORD }, from("198.51.100.1")), Code.ResourceExhausted, /address/);
      }
      // erin has used one of two attempts: the refused ones above did not count.
      const ok = await c.auth.login({ username: erin.username, password: PASSWORD }, from("198.51.100.2"));
      assert.equal(ok.user?.userId, erin.userId);
      for (const [i, username] of ["E".repeat(33), "x".repeat(4_000), "bad name!"].entries()) {
        const err = await rejectsWith(c.auth.login({ username, password: PASSWORD }, from(`198.51.100.${10 + i}`)), Code.Unauthenticated);
        assert.equal(err.rawMessage, WRONG_LOGIN);
      }
    } finally {
      await server.stop();
    }
  });
});

describe("auth (e2e): streams end when their access token expires", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ ACCESS_TOKEN_TTL: "3s" });
  });
  after(async () => {
    await server.stop();
  });

  it("ends Subscribe streams with UNAUTHENTICATED on every protocol and grpc-js; a refreshed token works", async () => {
    const users = await Promise.all(PROTOCOLS.map((p) => registerUser(server.baseUrl, p, "ttl")));
    const streams = users.map((u) => subscribe(u));
    const grpcStreams = grpcJsClient(server.port, StreamService);
    try {
      const grpcCall = grpcSubscribe(grpcStreams, users[0]?.token);
      const grpcEnded = grpcStreamStatus(grpcCall, 7000);
      // The WebSocket's token is checked at the upgrade; one that expires later ends the stream with close 4016.
      const ws = wsSubscribe(server.port, users[0]?.token);
      await ws.waitReady();
      await Promise.all(streams.map((s) => s.waitReady()));
      assert.ok(streams.every((s) => !s.done), "streams are open while the token is valid");
      await Promise.all(streams.map((s) => s.waitDone(7000)));
      for (const [i, s] of streams.entries()) {
        const err = ConnectError.from(s.error);
        assert.equal(err.code, Code.Unauthenticated, `${PROTOCOLS[i]}: ${err.message}`);
        assert.match(err.rawMessage, /expired/);
      }
      const g = await grpcEnded;
      assert.equal(g.code, grpc.status.UNAUTHENTICATED, g.details);
      await ws.waitDone(7000);
      assert.ok(ws.error instanceof WsStreamEnd && ws.error.closeCode === 4016, String(ws.error));
      assert.match(ws.error.reason, /expired/);
      // Once expired, the token gets no WebSocket at all (HTTP 401 at the handshake).
      const late = wsSubscribe(server.port, users[0]?.token);
      await late.waitDone(7000);
      assert.match(String(late.error), /401/);

      for (const u of users) {
        await rejectsWith(u.groups.listGroups({}), Code.Unauthenticated, /expired/);
        const { tokens } = await u.auth.refreshToken({ refreshToken: u.refreshToken ?? "" });
        u.token = tokens?.accessToken;
        await u.groups.listGroups({});
      }
    } finally {
      grpcStreams.close();
    }
  });
});
