/**
 * GroupService end to end, on a real server over real sockets: the main
 * membership flow over every protocol (and a @grpc/grpc-js client), the
 * timeline events it produces (Subscribe and ListMessages), the rules
 * (roles, last owner, size limit), no existence oracle for non-members,
 * paging, validation and concurrent adds.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type DescService, type MessageInitShape, create } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import { MemberRole } from "../../gen/chat/v1/group_pb.js";
import { GroupService } from "../../gen/chat/v1/group_service_pb.js";
import type { GroupEvent } from "../../gen/chat/v1/message_pb.js";
import { MessageService } from "../../gen/chat/v1/message_service_pb.js";
import { authMetadata, grpcJsClient, unary } from "../support/grpc-js-client.js";
import { type StreamReader, seqs, subscribe } from "../support/stream-reader.js";
import { type Clients, PROTOCOLS, type Protocol, type TestServer, registerUser, startTestServer } from "../support/test-server.js";

// ---- helpers ----

/** codeOf reads the gRPC status code of a connect-es or grpc-js error. */
function codeOf(e: unknown): Code | undefined {
  if (e instanceof ConnectError) return e.code;
  if (typeof e === "object" && e !== null && "code" in e && typeof e.code === "number") return e.code as Code;
  return undefined;
}

/** messageOf reads the status message (without connect-es's "[code]" prefix). */
function messageOf(e: unknown): string {
  if (e instanceof ConnectError) return e.rawMessage;
  if (typeof e === "object" && e !== null && "details" in e && typeof e.details === "string") return e.details;
  return String(e);
}

/** rejects asserts that `p` fails with `code` and returns the status message. */
async function rejects(p: Promise<unknown>, code: Code, what = ""): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert.equal(codeOf(e), code, `${what}: expected ${Code[code]}, got ${String(codeOf(e) !== undefined ? Code[codeOf(e) as Code] : e)}: ${messageOf(e)}`);
    return messageOf(e);
  }
  assert.fail(`${what}: expected ${Code[code]}, but the call succeeded`);
}

const groupNotFoundMessage = (groupId: string) => `group ${groupId} not found (or you are not a member)`;

/** kinds lists the event kinds ("memberAdded", "message", ...) in order. */
function kinds(events: readonly GroupEvent[]): (string | undefined)[] {
  return events.map((e) => e.kind.case);
}

/** range returns [from, from+1, ..., to]. */
function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** Api is a user's group and message clients: connect-es over one protocol, or @grpc/grpc-js. */
interface Api {
  readonly label: string;
  readonly userId: string;
  readonly username: string;
  readonly groups: Client<typeof GroupService>;
  readonly messages: Client<typeof MessageService>;
  /** The connect-es clients of the same user (for Subscribe). */
  readonly clients: Clients;
}

const openGrpcJs: grpc.Client[] = [];

/** viaGrpcJs serves `service`'s unary methods through a @grpc/grpc-js client, typed like a connect-es client. */
function viaGrpcJs<S extends DescService>(port: number, service: S, token: string): Client<S> {
  const client = grpcJsClient(port, service);
  openGrpcJs.push(client);
  const methods: Record<string, (req: unknown) => Promise<unknown>> = {};
  for (const m of service.methods) {
    if (m.methodKind !== "unary") continue;
    methods[m.localName] = (req) => unary(client, m.localName, create(m.input, req as MessageInitShape<typeof m.input>), authMetadata(token));
  }
  return methods as unknown as Client<S>;
}

type Transport = Protocol | "grpc-js";

/** newUser registers a user and returns its Api over `transport` (grpc-js registers over gRPC, then switches). */
async function newUser(server: TestServer, transport: Transport, prefix: string): Promise<Api> {
  const clients = await registerUser(server.baseUrl, transport === "grpc-js" ? "grpc" : transport, prefix);
  const token = clients.token ?? "";
  return {
    label: `${prefix}/${transport}`,
    userId: clients.userId,
    username: clients.username,
    clients,
    groups: transport === "grpc-js" ? viaGrpcJs(server.port, GroupService, token) : clients.groups,
    messages: transport === "grpc-js" ? viaGrpcJs(server.port, MessageService, token) : clients.messages,
  };
}

let cmid = 0;
function send(api: Api, groupId: string, text: string) {
  cmid += 1;
  return api.messages.sendMessage({ groupId, text, clientMessageId: `c${cmid}` });
}

/** allPages pages through `fetch` until the token is empty, with a bound on the number of pages. */
async function allPages<T>(fetch: (token: string) => Promise<{ items: T[]; next: string }>, maxPages = 100): Promise<T[][]> {
  const pages: T[][] = [];
  let token = "";
  do {
    const page = await fetch(token);
    pages.push(page.items);
    token = page.next;
    assert.ok(pages.length <= maxPages, "paging does not end");
  } while (token !== "");
  return pages;
}

// ---- tests ----

describe("GroupService e2e", () => {
  let server: TestServer;
  const readers: StreamReader[] = [];
  const open = (c: Clients, cursors: Parameters<typeof subscribe>[1] = []) => {
    const r = subscribe(c, cursors);
    readers.push(r);
    return r;
  };

  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    for (const r of readers) r.close();
    for (const c of openGrpcJs) c.close();
    await server.stop();
  });

  /**
   * mainFlow: create, add (by username and by id, with a role), send,
   * promote, rename, add by an admin, remove by an admin, leave, send;
   * each change's seq is returned, appears on the owner's stream in dense
   * order with the right payload, and fills exactly the seq gaps between
   * messages in ListMessages. The removed member is cut off at once.
   */
  async function mainFlow(transport: Transport): Promise<void> {
    const alice = await newUser(server, transport, "alice");
    const bob = await newUser(server, transport, "bob");
    const carol = await newUser(server, transport, "carol");
    const dave = await newUser(server, transport, "dave");

    const created = (await alice.groups.createGroup({ name: "  team  " })).group;
    assert.ok(created);
    const gid = created.groupId;
    assert.equal(created.name, "team");
    assert.equal(created.headSeq, 1n);
    assert.equal(created.memberCount, 1);
    assert.equal(created.myRole, MemberRole.OWNER);
    assert.notEqual(created.epoch, "");

    // A second group with dave, used as an ordering barrier on dave's stream.
    const side = (await alice.groups.createGroup({ name: "side", memberUsernames: [dave.username] })).group;
    assert.ok(side);

    // The owner's stream replays the whole timeline from 0, then goes live.
    const sa = open(alice.clients, [{ groupId: gid, seq: 0n }]);
    await sa.waitReady();

    const addBob = await alice.groups.addMember({ groupId: gid, user: { case: "username", value: bob.username.toUpperCase() } });
    assert.equal(addBob.seq, 2n);
    assert.equal(addBob.member?.user?.userId, bob.userId);
    assert.equal(addBob.member?.user?.username, bob.username);
    assert.equal(addBob.member?.role, MemberRole.MEMBER);
    assert.ok(addBob.member?.joinedAt);

    const addCarol = await alice.groups.addMember({ groupId: gid, user: { case: "userId", value: carol.userId }, role: MemberRole.ADMIN });
    assert.equal(addCarol.seq, 3n);
    assert.equal(addCarol.member?.role, MemberRole.ADMIN);

    const hi = await send(bob, gid, "hi");
    assert.equal(hi.message?.seq, 4n);

    const promote = await alice.groups.updateMemberRole({ groupId: gid, userId: bob.userId, role: MemberRole.ADMIN });
    assert.equal(promote.seq, 5n);
    assert.equal(promote.member?.role, MemberRole.ADMIN);
    assert.equal(promote.member?.user?.userId, bob.userId);

    const renamed = await alice.groups.updateGroup({ groupId: gid, name: "team-2" });
    assert.equal(renamed.seq, 6n);
    assert.equal(renamed.group?.name, "team-2");
    assert.equal(renamed.group?.headSeq, 6n);

    const addDave = await carol.groups.addMember({ groupId: gid, user: { case: "username", value: dave.username } });
    assert.equal(addDave.seq, 7n);

    // dave's stream starts at the head (7): it must see 8 and his own removal 9, nothing after.
    const sd = open(dave.clients);
    await sd.waitReady();
    const yo = await send(dave, gid, "yo");
    assert.equal(yo.message?.seq, 8n);

    const removeDave = await carol.groups.removeMember({ groupId: gid, userId: dave.userId });
    assert.equal(removeDave.seq, 9n);

    const bobLeaves = await bob.groups.removeMember({ groupId: gid, userId: bob.userId });
    assert.equal(bobLeaves.seq, 10n);

    const bye = await send(alice, gid, "bye");
    assert.equal(bye.message?.seq, 11n);

    // Owner's stream: dense 1..11 with the right kinds and payloads.
    await sa.waitForEvents(gid, 11);
    const events = sa.eventsOf(gid);
    assert.deepEqual(seqs(events), range(1, 11));
    assert.deepEqual(kinds(events), [
      "memberAdded",
      "memberAdded",
      "memberAdded",
      "message",
      "memberRoleChanged",
      "groupRenamed",
      "memberAdded",
      "message",
      "memberRemoved",
      "memberRemoved",
      "message",
    ]);
    const [e1, e2, e3, , e5, e6, e7, , e9, e10] = events;
    assert.deepEqual(
      [e1, e2, e3, e7].map((e) => e?.kind.case === "memberAdded" && [e.kind.value.member?.userId, e.kind.value.role, e.actor?.userId]),
      [
        [alice.userId, MemberRole.OWNER, alice.userId],
        [bob.userId, MemberRole.MEMBER, alice.userId],
        [carol.userId, MemberRole.ADMIN, alice.userId],
        [dave.userId, MemberRole.MEMBER, carol.userId],
      ],
    );
    assert.ok(e5?.kind.case === "memberRoleChanged");
    assert.equal(e5.kind.value.member?.userId, bob.userId);
    assert.equal(e5.kind.value.role, MemberRole.ADMIN);
    assert.ok(e6?.kind.case === "groupRenamed");
    assert.equal(e6.kind.value.name, "team-2");
    assert.equal(e6.actor?.userId, alice.userId);
    assert.ok(e9?.kind.case === "memberRemoved" && e10?.kind.case === "memberRemoved");
    assert.deepEqual([e9.kind.value.member?.userId, e9.actor?.userId], [dave.userId, carol.userId]);
    assert.deepEqual([e10.kind.value.member?.userId, e10.actor?.userId], [bob.userId, bob.userId]);

    // ListMessages: messages at 4, 8, 11; the seqs between them are exactly the non-message events.
    const history = await alice.messages.listMessages({ groupId: gid });
    assert.deepEqual(
      history.messages.map((m) => [Number(m.seq), m.text, m.sender?.userId]),
      [
        [4, "hi", bob.userId],
        [8, "yo", dave.userId],
        [11, "bye", alice.userId],
      ],
    );
    assert.equal(history.headSeq, 11n);
    assert.equal(history.firstRetainedSeq, 1n);
    const messageSeqs = new Set(history.messages.map((m) => Number(m.seq)));
    const gaps = range(1, Number(history.headSeq)).filter((s) => !messageSeqs.has(s));
    assert.deepEqual(gaps, seqs(events.filter((e) => e.kind.case !== "message")));
    for (const m of history.messages) {
      const onStream = events.find((e) => e.seq === m.seq);
      assert.ok(onStream?.kind.case === "message");
      assert.equal(onStream.kind.value.messageId, m.messageId);
    }

    // The group now: alice (owner) and carol (admin).
    const now = (await alice.groups.getGroup({ groupId: gid })).group;
    assert.equal(now?.name, "team-2");
    assert.equal(now?.memberCount, 2);
    assert.equal(now?.headSeq, 11n);
    const members = await alice.groups.listMembers({ groupId: gid });
    assert.deepEqual(
      members.members.map((m) => [m.user?.userId, m.role]).sort(),
      [
        [alice.userId, MemberRole.OWNER],
        [carol.userId, MemberRole.ADMIN],
      ].sort(),
    );
    assert.equal(members.nextPageToken, "");
    assert.equal((await carol.groups.getGroup({ groupId: gid })).group?.myRole, MemberRole.ADMIN);

    // dave's stream: 8, then his removal 9 as the group's last event. The
    // side-group message is written after seq 10 and 11 were published, so
    // once it arrived anything of `gid` would have arrived before it.
    const barrier = await send(alice, side.groupId, "barrier");
    await sd.waitFor((r) => r.eventsOf(side.groupId).some((e) => e.seq === barrier.message?.seq), 5000, "barrier");
    assert.deepEqual(seqs(sd.eventsOf(gid)), [8, 9]);
    assert.deepEqual(kinds(sd.eventsOf(gid)), ["message", "memberRemoved"]);
    assert.equal(sd.done, false, "dave's stream goes on for his other group");

    // Removed and departed members can neither read nor send, and get the non-member answer.
    for (const former of [dave, bob]) {
      const msg = groupNotFoundMessage(gid);
      assert.equal(await rejects(former.messages.listMessages({ groupId: gid }), Code.NotFound, `${former.label} ListMessages`), msg);
      assert.equal(await rejects(send(former, gid, "still here?"), Code.NotFound, `${former.label} SendMessage`), msg);
      assert.equal(await rejects(former.groups.getGroup({ groupId: gid }), Code.NotFound, `${former.label} GetGroup`), msg);
      assert.equal(await rejects(former.groups.listMembers({ groupId: gid }), Code.NotFound, `${former.label} ListMembers`), msg);
      const theirs = (await former.groups.listGroups({})).groups.map((g) => g.groupId);
      assert.ok(!theirs.includes(gid), `${former.label} still lists the group`);
    }
    // Nothing of the refused calls reached the timeline.
    assert.equal((await alice.groups.getGroup({ groupId: gid })).group?.headSeq, 11n);
    sa.close();
    sd.close();
  }

  for (const protocol of PROTOCOLS) {
    it(`main flow over ${protocol}`, () => mainFlow(protocol));
  }
  it("main flow with a @grpc/grpc-js client", () => mainFlow("grpc-js"));

  it("a group created while the creator's stream is open joins that stream from seq 1", async () => {
    const alice = await newUser(server, "grpc", "alice");
    const bob = await newUser(server, "grpc", "bob");
    const sa = open(alice.clients);
    await sa.waitReady();
    const group = (await alice.groups.createGroup({ name: "fresh", memberUsernames: [bob.username] })).group;
    assert.ok(group);
    assert.equal(group.headSeq, 2n);
    assert.equal(group.memberCount, 2);
    await sa.waitForEvents(group.groupId, 2);
    assert.ok(
      sa.items.some((i) => i.payload.case === "groupJoined" && i.payload.value.groupId === group.groupId),
      "groupJoined announced",
    );
    assert.deepEqual(seqs(sa.eventsOf(group.groupId)), [1, 2]);
    assert.deepEqual(kinds(sa.eventsOf(group.groupId)), ["memberAdded", "memberAdded"]);
    sa.close();
  });

  it("answers a non-member NOT_FOUND with the same message for an existing and a missing group, on every group-scoped RPC", async () => {
    const owner = await newUser(server, "connect", "owner");
    const member = await newUser(server, "connect", "member");
    const outsider = await newUser(server, "connect", "outsider");
    const group = (await owner.groups.createGroup({ name: "secret", memberUsernames: [member.username] })).group;
    assert.ok(group);
    const existing = group.groupId;
    const missing = randomUUID();

    const calls: Record<string, (groupId: string) => Promise<unknown>> = {
      GetGroup: (groupId) => outsider.groups.getGroup({ groupId }),
      UpdateGroup: (groupId) => outsider.groups.updateGroup({ groupId, name: "mine now" }),
      "AddMember (self, by username)": (groupId) =>
        outsider.groups.addMember({ groupId, user: { case: "username", value: outsider.username } }),
      "AddMember (unknown username)": (groupId) => outsider.groups.addMember({ groupId, user: { case: "username", value: "nobody_here" } }),
      "AddMember (by user_id, as owner)": (groupId) =>
        outsider.groups.addMember({ groupId, user: { case: "userId", value: outsider.userId }, role: MemberRole.OWNER }),
      "RemoveMember (leave)": (groupId) => outsider.groups.removeMember({ groupId, userId: outsider.userId }),
      "RemoveMember (a member)": (groupId) => outsider.groups.removeMember({ groupId, userId: member.userId }),
      "UpdateMemberRole (self to owner)": (groupId) =>
        outsider.groups.updateMemberRole({ groupId, userId: outsider.userId, role: MemberRole.OWNER }),
      "UpdateMemberRole (the owner)": (groupId) => outsider.groups.updateMemberRole({ groupId, userId: owner.userId, role: MemberRole.MEMBER }),
      ListMembers: (groupId) => outsider.groups.listMembers({ groupId }),
      SendMessage: (groupId) => send(outsider, groupId, "let me in"),
      ListMessages: (groupId) => outsider.messages.listMessages({ groupId }),
    };
    for (const [name, call] of Object.entries(calls)) {
      const forExisting = await rejects(call(existing), Code.NotFound, `${name} on an existing group`);
      const forMissing = await rejects(call(missing), Code.NotFound, `${name} on a missing group`);
      assert.equal(forExisting, groupNotFoundMessage(existing), name);
      assert.equal(forMissing, groupNotFoundMessage(missing), name);
      assert.equal(forExisting.replace(existing, "<id>"), forMissing.replace(missing, "<id>"), name);
    }
    // None of it changed the group.
    const unchanged = (await owner.groups.getGroup({ groupId: existing })).group;
    assert.equal(unchanged?.headSeq, 2n);
    assert.equal(unchanged?.name, "secret");
    assert.equal(unchanged?.memberCount, 2);
  });

  it("enforces roles: admins manage plain members only, only owners change roles and rename", async () => {
    const alice = await newUser(server, "grpc-web", "alice");
    const adam = await newUser(server, "grpc-web", "adam");
    const abby = await newUser(server, "grpc-web", "abby");
    const mo = await newUser(server, "grpc-web", "mo");
    const nia = await newUser(server, "grpc-web", "nia");
    const group = (await alice.groups.createGroup({ name: "roles", memberUsernames: [mo.username] })).group;
    assert.ok(group);
    const groupId = group.groupId;
    await alice.groups.addMember({ groupId, user: { case: "userId", value: adam.userId }, role: MemberRole.ADMIN });
    await alice.groups.addMember({ groupId, user: { case: "userId", value: abby.userId }, role: MemberRole.ADMIN });
    const head = async () => (await alice.groups.getGroup({ groupId })).group?.headSeq ?? 0n;
    const start = await head();

    const denied: [string, () => Promise<unknown>][] = [
      ["admin adds an admin", () => adam.groups.addMember({ groupId, user: { case: "userId", value: nia.userId }, role: MemberRole.ADMIN })],
      ["admin adds an owner", () => adam.groups.addMember({ groupId, user: { case: "userId", value: nia.userId }, role: MemberRole.OWNER })],
      ["admin removes an admin", () => adam.groups.removeMember({ groupId, userId: abby.userId })],
      ["admin removes the owner", () => adam.groups.removeMember({ groupId, userId: alice.userId })],
      ["admin changes a role", () => adam.groups.updateMemberRole({ groupId, userId: mo.userId, role: MemberRole.ADMIN })],
      ["admin renames", () => adam.groups.updateGroup({ groupId, name: "nope" })],
      ["member adds", () => mo.groups.addMember({ groupId, user: { case: "userId", value: nia.userId } })],
      ["member removes an admin", () => mo.groups.removeMember({ groupId, userId: adam.userId })],
      ["member removes the owner", () => mo.groups.removeMember({ groupId, userId: alice.userId })],
      ["member promotes itself", () => mo.groups.updateMemberRole({ groupId, userId: mo.userId, role: MemberRole.OWNER })],
      ["member renames", () => mo.groups.updateGroup({ groupId, name: "nope" })],
    ];
    for (const [what, call] of denied) await rejects(call(), Code.PermissionDenied, what);
    assert.equal(await head(), start, "refused changes take no seq");

    // What admins may do.
    const added = await adam.groups.addMember({ groupId, user: { case: "username", value: nia.username } });
    assert.equal(added.seq, start + 1n);
    const removed = await adam.groups.removeMember({ groupId, userId: nia.userId });
    assert.equal(removed.seq, start + 2n);
    // The owner may add an owner and remove an admin.
    const owner2 = await alice.groups.addMember({ groupId, user: { case: "userId", value: nia.userId }, role: MemberRole.OWNER });
    assert.equal(owner2.member?.role, MemberRole.OWNER);
    await alice.groups.removeMember({ groupId, userId: abby.userId });
    assert.equal(await head(), start + 4n);
  });

  it("keeps the last owner: no leaving, no demotion, until ownership is handed over", async () => {
    const alice = await newUser(server, "connect", "alice");
    const bob = await newUser(server, "connect", "bob");
    const group = (await alice.groups.createGroup({ name: "handover", memberUsernames: [bob.username] })).group;
    assert.ok(group);
    const groupId = group.groupId;

    await rejects(alice.groups.removeMember({ groupId, userId: alice.userId }), Code.FailedPrecondition, "last owner leaves");
    await rejects(
      alice.groups.updateMemberRole({ groupId, userId: alice.userId, role: MemberRole.ADMIN }),
      Code.FailedPrecondition,
      "last owner demotes itself to admin",
    );
    await rejects(
      alice.groups.updateMemberRole({ groupId, userId: alice.userId, role: MemberRole.MEMBER }),
      Code.FailedPrecondition,
      "last owner demotes itself to member",
    );
    assert.equal((await alice.groups.getGroup({ groupId })).group?.headSeq, 2n);

    const handed = await alice.groups.updateMemberRole({ groupId, userId: bob.userId, role: MemberRole.OWNER });
    assert.equal(handed.seq, 3n);
    const left = await alice.groups.removeMember({ groupId, userId: alice.userId });
    assert.equal(left.seq, 4n);
    await rejects(alice.groups.getGroup({ groupId }), Code.NotFound, "former owner");
    await rejects(bob.groups.removeMember({ groupId, userId: bob.userId }), Code.FailedPrecondition, "new last owner leaves");
    const g = (await bob.groups.getGroup({ groupId })).group;
    assert.equal(g?.memberCount, 1);
    assert.equal(g?.myRole, MemberRole.OWNER);
    assert.equal(g?.headSeq, 4n);
  });

  it("validates: page sizes, roles, duplicate and unknown members", async () => {
    const alice = await newUser(server, "grpc", "alice");
    const bob = await newUser(server, "grpc", "bob");
    const group = (await alice.groups.createGroup({ name: "checks", memberUsernames: [bob.username] })).group;
    assert.ok(group);
    const groupId = group.groupId;

    await rejects(alice.groups.listGroups({ pageSize: 501 }), Code.InvalidArgument, "ListGroups page_size 501");
    await rejects(alice.groups.listMembers({ groupId, pageSize: 1001 }), Code.InvalidArgument, "ListMembers page_size 1001");
    // The maxima themselves are fine.
    assert.ok((await alice.groups.listGroups({ pageSize: 500 })).groups.length >= 1);
    assert.equal((await alice.groups.listMembers({ groupId, pageSize: 1000 })).members.length, 2);
    await rejects(alice.groups.listGroups({ pageToken: "not a token" }), Code.InvalidArgument, "bad page token");

    await rejects(
      alice.groups.updateMemberRole({ groupId, userId: bob.userId, role: MemberRole.UNSPECIFIED }),
      Code.InvalidArgument,
      "UpdateMemberRole UNSPECIFIED",
    );
    await rejects(
      alice.groups.updateMemberRole({ groupId, userId: bob.userId, role: 99 as MemberRole }),
      Code.InvalidArgument,
      "UpdateMemberRole 99",
    );
    await rejects(
      alice.groups.addMember({ groupId, user: { case: "username", value: bob.username } }),
      Code.AlreadyExists,
      "add an existing member by username",
    );
    await rejects(
      alice.groups.addMember({ groupId, user: { case: "userId", value: alice.userId }, role: MemberRole.ADMIN }),
      Code.AlreadyExists,
      "add an existing member by id",
    );
    const unknown = await rejects(
      alice.groups.addMember({ groupId, user: { case: "username", value: "no_such_user_x" } }),
      Code.NotFound,
      "add an unknown username",
    );
    assert.notEqual(unknown, groupNotFoundMessage(groupId), "a member learns the user is unknown, not that the group is");
    await rejects(alice.groups.addMember({ groupId, user: { case: "userId", value: randomUUID() } }), Code.NotFound, "add an unknown id");
    await rejects(alice.groups.addMember({ groupId }), Code.InvalidArgument, "add nobody");
    await rejects(alice.groups.updateGroup({ groupId, name: "   " }), Code.InvalidArgument, "blank name");
    await rejects(alice.groups.createGroup({ name: "x".repeat(101) }), Code.InvalidArgument, "long name");
    // UNSPECIFIED in AddMember means MEMBER.
    const carol = await newUser(server, "grpc", "carol");
    const added = await alice.groups.addMember({ groupId, user: { case: "userId", value: carol.userId }, role: MemberRole.UNSPECIFIED });
    assert.equal(added.member?.role, MemberRole.MEMBER);
    assert.equal(added.seq, 3n, "only the successful add took a seq");
  });

  it("pages ListGroups and ListMembers: everything exactly once, in id order", async () => {
    const alice = await newUser(server, "connect", "alice");
    const stranger = await newUser(server, "connect", "strngr");
    await stranger.groups.createGroup({ name: "not alice's" });
    const users = await Promise.all(range(1, 7).map((i) => newUser(server, "connect", `m${i}_`)));

    const mine: string[] = [];
    for (let i = 0; i < 7; i++) {
      const g = (await alice.groups.createGroup({ name: `g${i}` })).group;
      assert.ok(g);
      mine.push(g.groupId);
    }
    for (const size of [1, 3, 7, 10]) {
      const pages = await allPages(async (pageToken) => {
        const res = await alice.groups.listGroups({ pageSize: size, pageToken });
        assert.ok(res.groups.length <= size);
        return { items: res.groups.map((g) => g.groupId), next: res.nextPageToken };
      });
      const seen = pages.flat();
      assert.deepEqual(seen, [...mine].sort(), `page_size ${size}`);
      assert.ok(pages.length >= Math.ceil(7 / size), `page_size ${size}: ${pages.length} pages`);
    }

    const groupId = mine[0] ?? "";
    for (const u of users) await alice.groups.addMember({ groupId, user: { case: "userId", value: u.userId } });
    const everyone = [alice, ...users].map((u) => u.userId).sort();
    for (const size of [1, 3, 8, 100]) {
      const pages = await allPages(async (pageToken) => {
        const res = await users[2]!.groups.listMembers({ groupId, pageSize: size, pageToken });
        assert.ok(res.members.length <= size);
        return { items: res.members.map((m) => m.user?.userId ?? ""), next: res.nextPageToken };
      });
      assert.deepEqual(pages.flat(), everyone, `page_size ${size}`);
    }
    assert.equal((await alice.groups.getGroup({ groupId })).group?.memberCount, 8);
  });

  it("adds 20 users concurrently: all succeed with 20 distinct dense seqs", async () => {
    const owner = await newUser(server, "grpc", "owner");
    const users = await Promise.all(range(1, 20).map((i) => newUser(server, "grpc", `cc${i}_`)));
    const group = (await owner.groups.createGroup({ name: "crowd" })).group;
    assert.ok(group);
    const groupId = group.groupId;
    const so = open(owner.clients, [{ groupId, seq: 0n }]);
    await so.waitReady();

    const results = await Promise.all(
      users.map((u, i) =>
        owner.groups.addMember({ groupId, user: i % 2 ? { case: "userId", value: u.userId } : { case: "username", value: u.username } }),
      ),
    );
    const got = results.map((r) => Number(r.seq)).sort((a, b) => a - b);
    assert.deepEqual(got, range(2, 21));
    const g = (await owner.groups.getGroup({ groupId })).group;
    assert.equal(g?.memberCount, 21);
    assert.equal(g?.headSeq, 21n);
    assert.equal((await owner.groups.listMembers({ groupId })).members.length, 21);

    await so.waitForEvents(groupId, 21);
    const events = so.eventsOf(groupId);
    assert.deepEqual(seqs(events), range(1, 21));
    // Each response's seq is the event that added that user.
    for (const [i, r] of results.entries()) {
      const e = events.find((x) => x.seq === r.seq);
      assert.ok(e?.kind.case === "memberAdded");
      assert.equal(e.kind.value.member?.userId, users[i]?.userId);
    }
    so.close();
  });
});

describe("GroupService e2e: MAX_GROUP_MEMBERS", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ MAX_GROUP_MEMBERS: "3" });
  });
  after(async () => {
    await server.stop();
  });

  it("refuses adding to a full group with FAILED_PRECONDITION and admits again after a removal", async () => {
    const [alice, bob, carol, dave] = await Promise.all(["alice", "bob", "carol", "dave"].map((p) => newUser(server, "connect", p)));
    assert.ok(alice && bob && carol && dave);
    await rejects(
      alice.groups.createGroup({ name: "too big", memberUsernames: [bob.username, carol.username, dave.username] }),
      Code.InvalidArgument,
      "create with more initial members than the limit",
    );
    assert.deepEqual((await alice.groups.listGroups({})).groups, [], "nothing was created");

    const group = (await alice.groups.createGroup({ name: "small", memberUsernames: [bob.username, carol.username] })).group;
    assert.ok(group);
    const groupId = group.groupId;
    assert.equal(group.memberCount, 3);
    const full = await rejects(
      alice.groups.addMember({ groupId, user: { case: "userId", value: dave.userId } }),
      Code.FailedPrecondition,
      "add to a full group",
    );
    assert.match(full, /full/);
    const g = (await alice.groups.getGroup({ groupId })).group;
    assert.equal(g?.headSeq, 3n, "refused add takes no seq");
    assert.equal(g?.memberCount, 3);

    await alice.groups.removeMember({ groupId, userId: carol.userId });
    const added = await alice.groups.addMember({ groupId, user: { case: "username", value: dave.username } });
    assert.equal(added.seq, 5n);
    assert.equal((await alice.groups.getGroup({ groupId })).group?.memberCount, 3);
  });
});
