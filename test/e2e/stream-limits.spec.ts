/**
 * The stream's documented limits hold end to end (issue 12, point 4), on a
 * real server with the default MAX_REQUEST_BYTES:
 * - a Subscribe with exactly MAX_CURSORS cursors (the server-made kind: a
 *   UUID group id and epoch each, and large seqs) opens on every transport
 *   and codec — grpc-js, gRPC-Web and Connect JSON with connect-es, the
 *   Connect RPC's first message, the WebSocket — and resumes the user's own
 *   group from its cursor (cursors for groups the user is not in are
 *   ignored); one cursor more is INVALID_ARGUMENT naming the limit;
 * - a user is in at most MAX_GROUPS_PER_USER groups: CreateGroup and
 *   AddMember past it fail FAILED_PRECONDITION with a message naming the
 *   limit, nothing is written, and concurrent joins cannot overshoot it.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { MemberRole } from "../../gen/chat/v1/group_pb.js";
import { ConnectRequestSchema, type GroupCursor, StreamService, SubscribeRequestSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { newId } from "../../services/core/ids.js";
import { MAX_CURSORS, STREAM_OPEN_REQUEST_BYTES } from "../../services/delivery/stream-limits.js";
import { rejectsWith } from "../support/assertions.js";
import { grpcJsClient } from "../support/grpc-js-client.js";
import { sendMany } from "../support/helpers.js";
import { StreamReader, WsStreamEnd, grpcJsSubscribe, seqs, wsSubscribe } from "../support/stream-reader.js";
import { type Clients, type Protocol, type TestServer, clientsFor, registerUser, startTestServer } from "../support/test-server.js";

/** cursorsFor makes `n` cursors: `own` first, then cursors of groups nobody is in, each as large as a valid cursor gets. */
function cursorsFor(n: number, own: Partial<GroupCursor>): Partial<GroupCursor>[] {
  const strangers = Array.from({ length: n - 1 }, () => ({ groupId: newId(), seq: BigInt(Number.MAX_SAFE_INTEGER), epoch: newId() }));
  return [own, ...strangers];
}

describe("stream limits (e2e): MAX_CURSORS cursors per Subscribe", () => {
  let server: TestServer;
  let alice: Clients;
  let groupId: string;
  let epoch: string;
  before(async () => {
    server = await startTestServer();
    alice = await registerUser(server.baseUrl, "grpc", "curs");
    const { group } = await alice.groups.createGroup({ name: "many cursors" });
    assert.ok(group);
    groupId = group.groupId;
    epoch = group.epoch;
    await sendMany(alice, groupId, 5); // seqs 2..6
  });
  after(async () => {
    await server.stop();
  });

  /** checkResumed asserts that a stream opened with the big request resumed alice's group from seq 3. */
  async function checkResumed(stream: StreamReader, how: string): Promise<void> {
    await stream.waitForEvents(groupId, 3, 10_000).catch((e: unknown) => assert.fail(`${how}: ${String(e)}`));
    const ready = stream.items[0];
    assert.ok(ready?.payload.case === "ready", `${how}: StreamReady first`);
    assert.deepEqual(
      ready.payload.value.groups.map((g) => [g.groupId, g.seq]),
      [[groupId, 3n]],
      `${how}: only alice's group, from her cursor`,
    );
    assert.deepEqual(seqs(stream.eventsOf(groupId)), [4, 5, 6], how);
    stream.close();
  }

  it(`opens with exactly ${MAX_CURSORS} cursors on every transport and resumes from the user's own`, async () => {
    const cursors = cursorsFor(MAX_CURSORS, { groupId, seq: 3n, epoch });
    const asRequest = cursors.map((c) => ({ groupId: c.groupId ?? "", seq: c.seq ?? 0n, epoch: c.epoch ?? "" }));
    const client = grpcJsClient(server.port, StreamService);
    try {
      await checkResumed(grpcJsSubscribe(client, alice.token, cursors), "grpc-js Subscribe (gRPC, HTTP/2)");
    } finally {
      client.close();
    }
    for (const protocol of ["grpc-web", "connect", "connect-binary"] as Protocol[]) {
      const c = clientsFor(server.baseUrl, protocol);
      c.token = alice.token;
      await checkResumed(new StreamReader((signal) => c.streams.subscribe({ cursors: asRequest }, { signal })), `connect-es Subscribe over ${protocol}`);
    }
    for (const protocol of ["grpc", "connect"] as Protocol[]) {
      const c = clientsFor(server.baseUrl, protocol);
      c.token = alice.token;
      const connect = new StreamReader(async function* (signal) {
        async function* requests() {
          yield create(ConnectRequestSchema, { payload: { case: "subscribe", value: { cursors: asRequest } } });
          await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        }
        for await (const res of c.streams.connect(requests(), { signal })) if (res.payload.case === "item") yield res.payload.value;
      });
      await checkResumed(connect, `connect-es Connect over ${protocol}`);
    }
    await checkResumed(wsSubscribe(server.port, alice.token, cursors), "WebSocket Subscribe");
  });

  it(`refuses ${MAX_CURSORS + 1} cursors with INVALID_ARGUMENT naming the limit`, async () => {
    const cursors = cursorsFor(MAX_CURSORS + 1, { groupId, seq: 3n, epoch }).map((c) => ({ groupId: c.groupId ?? "", seq: c.seq ?? 0n, epoch: c.epoch ?? "" }));
    for (const protocol of ["grpc", "connect"] as Protocol[]) {
      const c = clientsFor(server.baseUrl, protocol);
      c.token = alice.token;
      const stream = new StreamReader((signal) => c.streams.subscribe({ cursors }, { signal }));
      await stream.waitDone(10_000);
      assert.equal(stream.items.length, 0, protocol);
      const err = ConnectError.from(stream.error);
      assert.equal(err.code, Code.InvalidArgument, `${protocol}: ${err.rawMessage}`);
      assert.match(err.rawMessage, new RegExp(`at most ${MAX_CURSORS} cursors per request`));
    }
  });

  it("still bounds the opening message: one over the larger of MAX_REQUEST_BYTES and STREAM_OPEN_REQUEST_BYTES is RESOURCE_EXHAUSTED (WebSocket: 1009)", async () => {
    const cursors = Array.from({ length: 2000 }, () => ({ groupId: newId(), seq: 1n, epoch: "e".repeat(1000) })); // ~2 MB
    assert.ok(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { cursors })).length > STREAM_OPEN_REQUEST_BYTES);
    const c = clientsFor(server.baseUrl, "grpc");
    c.token = alice.token;
    const stream = new StreamReader((signal) => c.streams.subscribe({ cursors }, { signal }));
    await stream.waitDone(10_000);
    const err = ConnectError.from(stream.error);
    assert.equal(err.code, Code.ResourceExhausted, err.rawMessage);
    assert.match(err.rawMessage, new RegExp(`larger than ${STREAM_OPEN_REQUEST_BYTES} bytes`));
    const ws = wsSubscribe(server.port, alice.token, cursors);
    await ws.waitDone(10_000);
    assert.ok(ws.error instanceof WsStreamEnd && ws.error.closeCode === 1009, String(ws.error));
  });
});

describe("stream limits (e2e): Connect's later messages keep MAX_REQUEST_BYTES", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  // gRPC: the fast path's reader; Connect JSON: connect-node, fed by the front door's stream reader.
  for (const protocol of ["grpc", "connect"] as const)
  it(`refuses a send over MAX_REQUEST_BYTES after a large opening message (${protocol}), with RESOURCE_EXHAUSTED`, { timeout: 30_000 }, async () => {
    const alice = await registerUser(server.baseUrl, protocol, "later");
    const { group } = await alice.groups.createGroup({ name: "later" });
    assert.ok(group);
    const cursors = cursorsFor(MAX_CURSORS, { groupId: group.groupId, seq: 1n, epoch: group.epoch }).map((c) => ({
      groupId: c.groupId ?? "",
      seq: c.seq ?? 0n,
      epoch: c.epoch ?? "",
    }));
    let ready: (() => void) | undefined;
    const isReady = new Promise<void>((resolve) => {
      ready = resolve;
    });
    async function* requests() {
      yield create(ConnectRequestSchema, { payload: { case: "subscribe", value: { cursors } } });
      await isReady;
      const text = "x".repeat(70_000); // over 65,536 bytes, far under the opening limit
      yield create(ConnectRequestSchema, { requestId: "big", payload: { case: "sendMessage", value: { groupId: group?.groupId ?? "", text, clientMessageId: "big" } } });
      await new Promise(() => {}); // keep the request side open: the server must end the stream
    }
    let error: unknown;
    let sawReady = false;
    try {
      for await (const res of alice.streams.connect(requests())) {
        if (res.payload.case === "item" && res.payload.value.payload.case === "ready") {
          sawReady = true;
          ready?.();
        }
        assert.notEqual(res.payload.case, "sendResult", "the oversized send was not answered as a send");
      }
    } catch (e) {
      error = e;
    }
    const err = ConnectError.from(error);
    // Without StreamReady the opening message itself was refused: the error would say nothing about later messages.
    assert.ok(sawReady, `StreamReady came before the error (the opening message was taken): ${err.rawMessage}`);
    assert.equal(err.code, Code.ResourceExhausted, err.rawMessage);
    assert.match(err.rawMessage, /larger than 65536 bytes/);
  });
});

describe("stream limits (e2e): MAX_GROUPS_PER_USER", () => {
  const MAX = 3;
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ MAX_GROUPS_PER_USER: String(MAX) });
  });
  after(async () => {
    await server.stop();
  });

  it("refuses CreateGroup past the limit with FAILED_PRECONDITION, writing nothing; leaving a group frees a place", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "cap");
    const groups = [];
    for (let i = 0; i < MAX; i++) groups.push((await alice.groups.createGroup({ name: `g${i}` })).group);
    await rejectsWith(
      alice.groups.createGroup({ name: "one too many" }),
      Code.FailedPrecondition,
      /^you are already in 3 groups, the most a user may be in \(MAX_GROUPS_PER_USER\); leave a group before creating another$/,
    );
    assert.equal((await alice.groups.listGroups({})).groups.length, MAX, "no group was created");
    // Make someone else owner of one group, leave it, and there is room again.
    const bob = await registerUser(server.baseUrl, "grpc", "capb");
    const first = groups[0];
    assert.ok(first);
    await alice.groups.addMember({ groupId: first.groupId, user: { case: "username", value: bob.username }, role: MemberRole.OWNER });
    await alice.groups.removeMember({ groupId: first.groupId, userId: alice.userId });
    await alice.groups.createGroup({ name: "after leaving" });
  });

  it("refuses AddMember of a user at the limit (and CreateGroup naming them), over every protocol; nothing is written", async () => {
    const bob = await registerUser(server.baseUrl, "grpc", "capfull");
    for (let i = 0; i < MAX; i++) await bob.groups.createGroup({ name: `b${i}` });
    for (const protocol of ["grpc", "grpc-web", "connect"] as Protocol[]) {
      const owner = await registerUser(server.baseUrl, protocol, "capo");
      const { group } = await owner.groups.createGroup({ name: "wants bob" });
      assert.ok(group);
      await rejectsWith(
        owner.groups.addMember({ groupId: group.groupId, user: { case: "username", value: bob.username } }),
        Code.FailedPrecondition,
        new RegExp(`^${bob.username} is already in 3 groups, the most a user may be in \\(MAX_GROUPS_PER_USER\\); they must leave a group before they can be added$`),
      );
      assert.equal((await owner.groups.getGroup({ groupId: group.groupId })).group?.headSeq, 1n, `${protocol}: no event was appended`);
      await rejectsWith(owner.groups.createGroup({ name: "with bob", memberUsernames: [bob.username] }), Code.FailedPrecondition, /already in 3 groups/);
      assert.equal((await owner.groups.listGroups({})).groups.length, 1, `${protocol}: the group with bob was not created`);
    }
  });

  it("lets concurrent AddMembers of one user to many groups admit exactly MAX_GROUPS_PER_USER", async () => {
    const carol = await registerUser(server.baseUrl, "grpc", "capc");
    const owners = await Promise.all(Array.from({ length: MAX + 3 }, () => registerUser(server.baseUrl, "grpc", "capx")));
    const groups = await Promise.all(owners.map(async (o) => (await o.groups.createGroup({ name: "race" })).group?.groupId ?? ""));
    const results = await Promise.allSettled(
      owners.map((o, i) => o.groups.addMember({ groupId: groups[i] ?? "", user: { case: "userId", value: carol.userId } })),
    );
    assert.equal(results.filter((r) => r.status === "fulfilled").length, MAX);
    for (const r of results) if (r.status === "rejected") assert.equal(ConnectError.from(r.reason).code, Code.FailedPrecondition);
    assert.equal((await carol.groups.listGroups({})).groups.length, MAX);
  });
});
