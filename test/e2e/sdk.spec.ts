/**
 * @chat/client against real servers, in Node with the `ws` package's WebSocket (the live connection is
 * StreamService/Connect over WebSocket): live delivery checked seq by seq, resume across a server restart, sends
 * retried across a dropped socket and after RESOURCE_EXHAUSTED, token refresh and a revoked session, CursorReset,
 * and the file stores across two client instances.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { WebSocket } from "ws";
import { type ChatClientOptions, type ChatEvent, ChatClient, Code, ConnectError, type CursorResetEvent, MemoryCursorStore, MemoryTokenStore, type StoredSession } from "@chat/client";
import { FileCursorStore, FileTokenStore } from "@chat/client/node";
import { AuthService } from "../../gen/chat/v1/auth_service_pb.js";
import { freePort, until } from "../support/helpers.js";
import { type TestServer, startTestServer, uniqueName } from "../support/test-server.js";

const PASSWORD = "correct horse battery";
const FAST = { initialMs: 50, maxMs: 500, stableMs: 2_000 };

/** Recorder is a client plus every event it handed to the app, in order. */
interface Recorder {
  client: ChatClient;
  events: ChatEvent[];
  resets: CursorResetEvent[];
  states: string[];
  signedOut: string[];
  errors: Error[];
}

function record(client: ChatClient): Recorder {
  const r: Recorder = { client, events: [], resets: [], states: [], signedOut: [], errors: [] };
  client.on("event", (e) => void r.events.push(e));
  client.on("cursorReset", (e) => void r.resets.push(e));
  client.on("state", (s) => void r.states.push(s.state));
  client.on("signedOut", (s) => void r.signedOut.push(s.reason));
  client.on("error", (e) => void r.errors.push(e));
  return r;
}

function makeClient(server: TestServer, opts: Partial<ChatClientOptions> = {}): ChatClient {
  return new ChatClient({ baseUrl: server.baseUrl, WebSocket, backoff: FAST, ...opts });
}

async function registered(server: TestServer, prefix: string, opts: Partial<ChatClientOptions> = {}): Promise<Recorder> {
  const r = record(makeClient(server, opts));
  await r.client.register(uniqueName(prefix), PASSWORD);
  return r;
}

/** messagesOf lists [seq, text] of the message events of a group, in the order the app got them. */
function messagesOf(r: Recorder, groupId: string): [number, string][] {
  return r.events.filter((e) => e.groupId === groupId && e.type === "message").map((e) => [Number(e.seq), e.type === "message" ? e.message.text : ""]);
}

describe("@chat/client over WebSocket Connect", () => {
  let server: TestServer;
  const open: ChatClient[] = [];
  const live = async (...rs: Recorder[]) => {
    for (const r of rs) {
      open.push(r.client);
      await r.client.start();
    }
    await Promise.all(rs.map((r) => r.client.whenLive()));
  };

  before(async () => {
    server = await startTestServer({ PORT: String(await freePort()) });
  });
  after(async () => {
    await Promise.all(open.map((c) => c.close()));
    await server.stop();
  });

  it("two clients exchange messages live; each sees every message once, at the seq it was stored at", async () => {
    const [alice, bob] = await Promise.all([registered(server, "sa"), registered(server, "sb")]);
    const group = await alice.client.createGroup("pair", { members: [bob.client.user?.username ?? ""] });
    await live(alice, bob);
    const sent = new Map<number, string>();
    for (let i = 0; i < 6; i++) {
      const [from, text] = i % 2 === 0 ? [alice, `from alice ${i}`] : [bob, `from bob ${i}`];
      const res = await from.client.send(group.groupId, text);
      assert.equal(res.via, "websocket");
      assert.equal(res.message.sender.userId, from.client.user?.userId);
      sent.set(Number(res.seq), text);
    }
    const expected = [...sent].sort((a, b) => a[0] - b[0]);
    assert.deepEqual(
      expected.map(([seq]) => seq),
      [3, 4, 5, 6, 7, 8],
    );
    await until(() => messagesOf(alice, group.groupId).length >= 6 && messagesOf(bob, group.groupId).length >= 6, "both clients to see 6 messages");
    assert.deepEqual(messagesOf(alice, group.groupId), expected);
    assert.deepEqual(messagesOf(bob, group.groupId), expected);
    assert.equal(alice.client.cursor(group.groupId), 8n);
    // Each client acknowledges what its app processed (Connect acks, at most one a second per group).
    await until(async () => (await bob.client.listGroups())[0]?.ackedSeq === 8n, "bob's ack of #8");
    // A history page agrees with what was delivered.
    const page = await bob.client.history(group.groupId, { pageSize: 4 }).older();
    assert.deepEqual(
      page.map((m) => [Number(m.seq), m.text]),
      expected.slice(2),
    );
  });

  it("surfaces GroupJoined and ReadMarker, and pages history from the newest to the oldest message", async () => {
    const [alice, bob] = await Promise.all([registered(server, "ja"), registered(server, "jb")]);
    const joined: string[] = [];
    const markers: [string, bigint][] = [];
    bob.client.on("groupJoined", (j) => void joined.push(j.groupId));
    bob.client.on("readMarker", (m) => void markers.push([m.groupId, m.seq]));
    await live(bob);
    const group = await alice.client.createGroup("joined later");
    const texts = ["one", "two", "three", "four", "five"];
    for (const t of texts) await alice.client.send(group.groupId, t); // #2..#6
    const added = await alice.client.addMember(group.groupId, bob.client.user?.username ?? "");
    assert.equal(added.seq, 7n);
    await until(() => bob.client.cursor(group.groupId) === 7n, "bob to see his addition");
    assert.deepEqual(joined, [group.groupId]);
    assert.deepEqual(
      bob.events.filter((e) => e.groupId === group.groupId).map((e) => [Number(e.seq), e.type, e.type === "memberAdded" ? e.member.userId : ""]),
      [[7, "memberAdded", bob.client.user?.userId]],
    );
    assert.equal(await bob.client.markRead(group.groupId, 7n), 7n);
    await until(() => markers.length > 0, "the read marker");
    assert.deepEqual(markers, [[group.groupId, 7n]]);

    const pages: [number, string][][] = [];
    for await (const page of bob.client.history(group.groupId, { pageSize: 2 })) pages.push(page.map((m) => [Number(m.seq), m.text]));
    assert.deepEqual(pages, [
      [
        [5, "four"],
        [6, "five"],
      ],
      [
        [3, "two"],
        [4, "three"],
      ],
      [[2, "one"]],
    ]);
  });

  it("resumes after a server restart in the middle of traffic: no message lost, none repeated", async () => {
    const [sender, reader] = await Promise.all([registered(server, "rs", { sendAttempts: 30 }), registered(server, "rr")]);
    const group = await sender.client.createGroup("restart", { members: [reader.client.user?.username ?? ""] });
    await live(sender, reader);
    const sent = new Map<number, string>();
    let restarted = false;
    const traffic = (async () => {
      for (let i = 0; i < 30; i++) {
        const text = `message ${i}`;
        const res = await sender.client.send(group.groupId, text);
        sent.set(Number(res.seq), text);
        // The restart begins once a few messages went through.
        if (i === 5) void server.restart().then(() => (restarted = true));
      }
    })();
    await traffic;
    await until(() => restarted, "the restart to finish");
    const last = Math.max(...sent.keys());
    await until(() => reader.client.cursor(group.groupId) === BigInt(last), `the reader to reach #${last}`);
    const expected = [...sent].sort((a, b) => a[0] - b[0]);
    assert.deepEqual(
      expected.map(([seq]) => seq),
      Array.from({ length: 30 }, (_, i) => i + 3),
      "every send stored once, densely",
    );
    assert.deepEqual(messagesOf(reader, group.groupId), expected);
    assert.ok(reader.states.includes("reconnecting"), `the reader reconnected (states: ${reader.states.join(", ")})`);
    assert.equal(reader.states.at(-1), "live");
  });

  it("retries a send whose socket dropped with the same client_message_id: stored once", async () => {
    const [alice, bob] = await Promise.all([registered(server, "da"), registered(server, "db")]);
    const group = await alice.client.createGroup("drop", { members: [bob.client.user?.username ?? ""] });
    await live(alice, bob);
    const pending = alice.client.send(group.groupId, "through a dropped socket", { clientMessageId: "drop-1" });
    alice.client.reconnect(); // the send is written; the socket closes before its answer can arrive
    const res = await pending;
    assert.ok(res.attempts >= 2, `the send was retried (attempts: ${res.attempts})`);
    assert.equal(res.clientMessageId, "drop-1");
    const again = await alice.client.send(group.groupId, "through a dropped socket", { clientMessageId: "drop-1" });
    assert.equal(again.duplicate, true);
    assert.equal(again.seq, res.seq);
    const after = await alice.client.send(group.groupId, "next");
    assert.equal(after.seq, res.seq + 1n);
    await until(() => bob.client.cursor(group.groupId) === after.seq, "bob to see the next message");
    assert.deepEqual(messagesOf(bob, group.groupId), [
      [Number(res.seq), "through a dropped socket"],
      [Number(after.seq), "next"],
    ]);
    const history = await bob.client.history(group.groupId).older();
    assert.deepEqual(
      history.map((m) => m.clientMessageId),
      ["drop-1", after.clientMessageId],
    );
  });

  it("surfaces a CursorReset, moves the cursor as the server says, then delivers from the first available seq", async () => {
    const cursors = new MemoryCursorStore();
    const alice = await registered(server, "cr", { cursorStore: cursors });
    const group = await alice.client.createGroup("epoch");
    const first = await alice.client.send(group.groupId, "before the reset"); // #2
    cursors.set(alice.client.user?.userId ?? "", group.groupId, { seq: 2n, epoch: "some-other-epoch" });
    const cursorSeen: (bigint | undefined)[] = [];
    alice.client.on("cursorReset", () => void cursorSeen.push(alice.client.cursor(group.groupId)));
    await live(alice);
    await until(() => alice.resets.length === 1 && alice.events.length >= 2, "the reset and the replayed events");
    const [reset] = alice.resets;
    assert.equal(reset?.groupId, group.groupId);
    assert.equal(reset?.requestedSeq, 2n);
    assert.equal(reset?.epoch, group.epoch);
    assert.deepEqual(cursorSeen, [2n], "the cursor moves only after the handler returned");
    assert.equal(reset?.firstAvailableSeq, 1n);
    assert.deepEqual(
      alice.events.map((e) => [Number(e.seq), e.type]),
      [
        [1, "memberAdded"],
        [2, "message"],
      ],
    );
    assert.equal(alice.events[1]?.type === "message" && alice.events[1].message.messageId, first.messageId);
    const stored = cursors.load(alice.client.user?.userId ?? "").get(group.groupId);
    assert.deepEqual(stored, { seq: 2n, epoch: group.epoch });
  });

  it("persists the session and the cursors in files: a second client instance resumes where the first stopped", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sdk-files-"));
    try {
      const files = () => ({ tokenStore: new FileTokenStore(join(dir, "session.json")), cursorStore: new FileCursorStore(join(dir, "cursors.json")) });
      const bob = await registered(server, "fb");
      const first = record(makeClient(server, files()));
      const username = uniqueName("fa");
      await first.client.register(username, PASSWORD);
      const group = await bob.client.createGroup("files", { members: [username] });
      await live(first);
      const seen = await bob.client.send(group.groupId, "seen by the first instance");
      await until(() => first.client.cursor(group.groupId) === seen.seq, "the first instance to see it");
      await first.client.close();
      assert.equal((await stat(join(dir, "session.json"))).mode & 0o777, 0o600);

      const missed = [await bob.client.send(group.groupId, "missed 1"), await bob.client.send(group.groupId, "missed 2")];
      const second = record(makeClient(server, files()));
      assert.equal(await second.client.restore(), true);
      assert.equal(second.client.user?.username, username);
      await live(second);
      const last = missed[1]?.seq ?? 0n;
      await until(() => second.client.cursor(group.groupId) === last, "the second instance to catch up");
      assert.deepEqual(messagesOf(first, group.groupId), [[Number(seen.seq), "seen by the first instance"]]);
      assert.deepEqual(
        messagesOf(second, group.groupId),
        missed.map((m) => [Number(m.seq), m.message.text]),
      );
      await second.client.logout();
      const third = makeClient(server, files());
      assert.equal(await third.restore(), false, "logout forgets the stored session");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("@chat/client sessions with a short access-token lifetime", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ ACCESS_TOKEN_TTL: "2s" });
  });
  after(async () => {
    await server.stop();
  });

  /** CountingTokenStore is a memory store that counts the sessions saved. */
  class CountingTokenStore extends MemoryTokenStore {
    saves = 0;
    override save(s: StoredSession | undefined): void {
      this.saves++;
      super.save(s);
    }
  }

  it("refreshes before expiry, once for concurrent calls, and keeps the live connection going across expiries", async () => {
    const tokens = new CountingTokenStore();
    const [alice, bob] = await Promise.all([registered(server, "ta", { tokenStore: tokens }), registered(server, "tb")]);
    const group = await alice.client.createGroup("refresh", { members: [bob.client.user?.username ?? ""] });
    const before = tokens.load();
    assert.ok(before);
    const savesBefore = tokens.saves;
    await until(() => Date.now() > before.accessTokenExpiresAt, "the access token to expire");
    const lists = await Promise.all(Array.from({ length: 5 }, () => alice.client.listGroups()));
    assert.ok(lists.every((l) => l.length === 1));
    assert.equal(tokens.saves - savesBefore, 1, "one refresh for the five calls");
    const afterRefresh = tokens.load();
    assert.ok(afterRefresh && afterRefresh.refreshToken !== before.refreshToken && afterRefresh.accessTokenExpiresAt > Date.now());

    await Promise.all([alice.client.start(), bob.client.start()]);
    try {
      await Promise.all([alice.client.whenLive(), bob.client.whenLive()]);
      // The server ends the live stream when its token expires (4016); the client refreshes and resumes.
      await until(() => alice.states.filter((s) => s === "live").length >= 2, "alice's connection to come back after the expiry");
      assert.ok(tokens.saves - savesBefore >= 2, "refreshed again for the live connection");
      const res = await bob.client.send(group.groupId, "after the expiry");
      await until(() => alice.client.cursor(group.groupId) === res.seq, "alice to see bob's message");
      assert.deepEqual(messagesOf(alice, group.groupId), [[Number(res.seq), "after the expiry"]]);
      assert.deepEqual(alice.signedOut, []);
    } finally {
      await Promise.all([alice.client.close(), bob.client.close()]);
    }
  });

  it("says signedOut when the refresh token was used elsewhere (the server revokes the session)", async () => {
    const tokens = new MemoryTokenStore();
    const alice = await registered(server, "ro", { tokenStore: tokens });
    const stolen = tokens.load();
    assert.ok(stolen);
    // Someone else rotates alice's refresh token first and goes on using the session: her own refresh then presents
    // a used token whose successor was used (no lost answer to repeat), and the server revokes the session.
    const other = createClient(AuthService, createConnectTransport({ baseUrl: server.baseUrl }));
    const thief = (await other.refreshToken({ refreshToken: stolen.refreshToken })).tokens;
    await other.refreshToken({ refreshToken: thief?.refreshToken ?? "" });
    await until(() => Date.now() > stolen.accessTokenExpiresAt, "the access token to expire");
    await assert.rejects(alice.client.listGroups(), (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);
    assert.equal(alice.signedOut.length, 1);
    assert.equal(alice.client.user, undefined);
    assert.equal(tokens.load(), undefined, "the store forgot the session");
    await assert.rejects(alice.client.start(), (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);
  });
});

describe("@chat/client under a send rate limit", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ SENDS_PER_SECOND: "2", SEND_BURST: "1" });
  });
  after(async () => {
    await server.stop();
  });

  for (const path of ["websocket", "unary"] as const) {
    it(`waits the server's retry-after on RESOURCE_EXHAUSTED and stores each message once (${path})`, async () => {
      const alice = await registered(server, path === "websocket" ? "lw" : "lu");
      const group = await alice.client.createGroup(`limited ${path}`);
      if (path === "websocket") {
        await alice.client.start();
        await alice.client.whenLive();
      }
      try {
        const results = await Promise.all([0, 1, 2].map((i) => alice.client.send(group.groupId, `burst ${i}`)));
        assert.ok(
          results.every((r) => r.via === path),
          `sent ${results.map((r) => r.via).join(", ")}`,
        );
        assert.ok(
          results.some((r) => r.attempts > 1),
          "the limit was hit and the send retried",
        );
        assert.deepEqual(results.map((r) => Number(r.seq)).sort(), [2, 3, 4]);
        const history = await alice.client.history(group.groupId).older();
        assert.deepEqual(
          history.map((m) => m.text).sort(),
          ["burst 0", "burst 1", "burst 2"],
        );
      } finally {
        await alice.client.close();
      }
    });
  }
});

/**
 * FreezingProxy forwards TCP to the server; freeze() makes the connections open now go silent (bytes are dropped,
 * the sockets stay open), as a dead NAT mapping or a stalled peer would. Later connections pass.
 */
class FreezingProxy {
  private readonly server: net.Server;
  private readonly conns = new Set<{ frozen: boolean; sockets: net.Socket[] }>();
  port = 0;

  constructor(target: () => number) {
    this.server = net.createServer((down) => {
      const up = net.connect(target(), "127.0.0.1");
      const conn = { frozen: false, sockets: [down, up] };
      this.conns.add(conn);
      down.on("data", (b) => void (conn.frozen || up.write(b)));
      up.on("data", (b) => void (conn.frozen || down.write(b)));
      const end = () => {
        down.destroy();
        up.destroy();
        this.conns.delete(conn);
      };
      down.on("close", end).on("error", end);
      up.on("close", end).on("error", end);
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const a = this.server.address();
    this.port = typeof a === "object" && a ? a.port : 0;
  }

  freeze(): void {
    for (const c of this.conns) c.frozen = true;
  }

  async close(): Promise<void> {
    for (const c of this.conns) for (const s of c.sockets) s.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

describe("@chat/client heartbeat watchdog", () => {
  let server: TestServer;
  let proxy: FreezingProxy;
  before(async () => {
    server = await startTestServer({ HEARTBEAT_INTERVAL: "1s" });
    proxy = new FreezingProxy(() => server.port);
    await proxy.listen();
  });
  after(async () => {
    await proxy.close();
    await server.stop();
  });

  it("replaces a connection that went silent for 2 x heartbeat_interval_seconds and resumes without loss", async () => {
    const sender = await registered(server, "hs");
    const reader = record(new ChatClient({ baseUrl: `http://127.0.0.1:${proxy.port}`, WebSocket, backoff: FAST }));
    await reader.client.register(uniqueName("hr"), PASSWORD);
    const group = await sender.client.createGroup("silent", { members: [reader.client.user?.username ?? ""] });
    const reasons: string[] = [];
    reader.client.on("state", (s) => void (s.state === "reconnecting" && reasons.push(s.error?.message ?? "")));
    await reader.client.start();
    try {
      await reader.client.whenLive();
      const before = await sender.client.send(group.groupId, "before the silence");
      await until(() => reader.client.cursor(group.groupId) === before.seq, "the reader to see the first message");
      proxy.freeze();
      const during = await sender.client.send(group.groupId, "during the silence");
      await until(() => reader.client.cursor(group.groupId) === during.seq, "the reader to resume on a new connection");
      assert.ok(
        reasons.some((r) => /no heartbeat/.test(r)),
        `reconnected because of the watchdog (reasons: ${reasons.join("; ")})`,
      );
      assert.deepEqual(messagesOf(reader, group.groupId), [
        [Number(before.seq), "before the silence"],
        [Number(during.seq), "during the silence"],
      ]);
    } finally {
      await reader.client.close();
    }
  });
});
