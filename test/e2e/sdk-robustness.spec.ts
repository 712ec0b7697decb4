/**
 * @chat/client where things go wrong, against real servers: two browser tabs sharing one session across token
 * refreshes, a WebSocket handshake refused the way a browser reports it (no status), a cursor file that cannot be
 * written, close() in the middle of a handler (its ack still reaches the server), and a send over the WebSocket
 * whose answer never comes (DEADLINE_EXCEEDED, retried with the same client_message_id: stored once).
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { WebSocket, WebSocketServer } from "ws";
import {
  type ChatClientOptions,
  ChatClient,
  type LockManagerLike,
  LocalStorageTokenStore,
  MemoryTokenStore,
  type StorageLike,
} from "@chat/client";
import { FileCursorStore } from "@chat/client/node";
import { AuthService } from "../../gen/chat/v1/auth_service_pb.js";
import { ConnectResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { type TestServer, startTestServer, uniqueName } from "../support/test-server.js";
import { until } from "../support/helpers.js";

const PASSWORD = "correct horse battery";
const FAST = { initialMs: 50, maxMs: 300, stableMs: 2_000 };

/** Watched is a client plus what it told the app. */
interface Watched {
  client: ChatClient;
  states: string[];
  signedOut: string[];
  errors: Error[];
}

function watch(client: ChatClient): Watched {
  const w: Watched = { client, states: [], signedOut: [], errors: [] };
  client.on("state", (s) => void w.states.push(s.state));
  client.on("signedOut", (s) => void w.signedOut.push(s.reason));
  client.on("error", (e) => void w.errors.push(e));
  return w;
}

function makeClient(baseUrl: string, opts: Partial<ChatClientOptions> = {}): Watched {
  return watch(new ChatClient({ baseUrl, WebSocket, backoff: FAST, ...opts }));
}

/** memoryStorage is a localStorage of one origin, shared by the "tabs" given it. */
function memoryStorage(): StorageLike {
  const m = new Map<string, string>();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => void m.set(k, v), removeItem: (k) => void m.delete(k) };
}

/**
 * TabLocks is the Web Locks API (`navigator.locks`) of one origin, for Node 20, which has none: an exclusive lock
 * per name, granted in request order, held until the callback's promise settles.
 */
class TabLocks implements LockManagerLike {
  private readonly tails = new Map<string, Promise<unknown>>();
  request<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.tails.get(name) ?? Promise.resolve()).then(fn);
    this.tails.set(name, run.catch(() => undefined));
    return run;
  }
}

/**
 * BrowserLikeWebSocket is the `ws` WebSocket reporting a refused handshake as a browser does: the error event
 * carries nothing, the close is 1006 (WHATWG hides the HTTP status, a 401 too).
 */
class BrowserLikeWebSocket extends WebSocket {
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols);
    this.on("error", () => undefined);
    const inherited = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onerror");
    Object.defineProperty(this, "onerror", {
      configurable: true,
      get: () => null,
      set: (fn: ((ev: unknown) => void) | null) => inherited?.set?.call(this, fn ? () => fn({ type: "error" }) : null),
    });
  }
}

describe("@chat/client: two tabs share one session across token refreshes", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ ACCESS_TOKEN_TTL: "2s" });
  });
  after(async () => {
    await server.stop();
  });

  it("without Web Locks, a tab refreshing after another adopts the pair the other saved", async () => {
    const storage = memoryStorage();
    const mk = () => makeClient(server.baseUrl, { tokenStore: new LocalStorageTokenStore({ storage, locks: undefined }) });
    const [a, b] = [mk(), mk()];
    await a.client.register(uniqueName("tab"), PASSWORD);
    assert.equal(await b.client.restore(), true);
    const store = new LocalStorageTokenStore({ storage });
    const seen = new Set<string>();
    for (let round = 0; round < 3; round++) {
      const s = store.load();
      assert.ok(s);
      seen.add(s.refreshToken);
      await until(() => Date.now() > s.accessTokenExpiresAt, "the access token to expire");
      assert.equal((await a.client.listGroups()).length, 0); // a rotates the pair
      assert.equal((await b.client.listGroups()).length, 0); // b adopts it instead of presenting the used token
    }
    assert.equal(seen.size, 3, "the pair rotated each round");
    assert.deepEqual([a.signedOut, b.signedOut], [[], []]);
  });

  it("with Web Locks, concurrent refreshes of two live tabs present each refresh token once", async () => {
    const storage = memoryStorage();
    const locks = new TabLocks();
    const mk = () => makeClient(server.baseUrl, { tokenStore: new LocalStorageTokenStore({ storage, locks }) });
    const [a, b] = [mk(), mk()];
    await a.client.register(uniqueName("tab"), PASSWORD);
    assert.equal(await b.client.restore(), true);
    await Promise.all([a.client.start(), b.client.start()]);
    try {
      await Promise.all([a.client.whenLive(), b.client.whenLive()]);
      const store = new LocalStorageTokenStore({ storage });
      for (let round = 0; round < 3; round++) {
        const s = store.load();
        assert.ok(s);
        await until(() => Date.now() > s.accessTokenExpiresAt, "the access token to expire");
        const [la, lb] = await Promise.all([a.client.listGroups(), b.client.listGroups()]);
        assert.deepEqual([la.length, lb.length], [0, 0]);
      }
      // The server ends each live stream when its token expires; both tabs refreshed and came back each time.
      await until(() => a.states.filter((s) => s === "live").length >= 2 && b.states.filter((s) => s === "live").length >= 2, "both tabs to come back live");
      assert.deepEqual([a.signedOut, b.signedOut], [[], []]);
      assert.equal(a.client.user?.userId, b.client.user?.userId);
    } finally {
      await Promise.all([a.client.close(), b.client.close()]);
    }
  });
});

describe("@chat/client: a WebSocket handshake refused without a visible status (browsers)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  /** refusedClient is a signed-in client whose access token the server refuses though it looks valid here (a rotated signing key, clock skew). */
  async function refusedClient(): Promise<{ w: Watched; store: MemoryTokenStore; refreshToken: string }> {
    const store = new MemoryTokenStore();
    const w = makeClient(server.baseUrl, { tokenStore: store, WebSocket: BrowserLikeWebSocket as unknown as typeof WebSocket });
    await w.client.register(uniqueName("hs"), PASSWORD);
    const good = store.load();
    assert.ok(good);
    // A JWT-shaped token (exp in 2286) that no server key signed.
    store.save({ ...good, accessToken: "x.eyJleHAiOjk5OTk5OTk5OTl9.y", accessTokenExpiresAt: Date.now() + 3_600_000 });
    assert.equal(await w.client.restore(), true);
    return { w, store, refreshToken: good.refreshToken };
  }

  it("checks the token with one unary call, refreshes it and goes live", async () => {
    const { w, store, refreshToken } = await refusedClient();
    await w.client.start();
    try {
      await until(() => w.client.state === "live", "the client to go live with a refreshed token");
      const now = store.load();
      assert.ok(now && now.refreshToken !== refreshToken && now.accessToken !== "x.eyJleHAiOjk5OTk5OTk5OTl9.y", "the pair was refreshed");
      assert.deepEqual(w.signedOut, []);
    } finally {
      await w.client.close();
    }
  });

  it("signs out when the refresh token is refused too", async () => {
    const { w, store, refreshToken } = await refusedClient();
    // Someone else used the refresh token and then its successor: the client's refresh presents a used token with no
    // lost answer to repeat, and the server revokes the session.
    const other = createClient(AuthService, createConnectTransport({ baseUrl: server.baseUrl }));
    const thief = (await other.refreshToken({ refreshToken })).tokens;
    await other.refreshToken({ refreshToken: thief?.refreshToken ?? "" });
    await w.client.start();
    try {
      await until(() => w.client.state === "closed" && w.signedOut.length === 1, "the client to sign out and close");
      assert.equal(store.load(), undefined);
      assert.equal(w.client.user, undefined);
    } finally {
      await w.client.close();
    }
  });
});

describe("@chat/client: failures around the cursor store, close() and sends", () => {
  let server: TestServer;
  let dir: string;
  before(async () => {
    server = await startTestServer();
    dir = await mkdtemp(join(tmpdir(), "sdk-robust-"));
  });
  after(async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("a cursor file that cannot be written is an error event; the client keeps going and a later write catches up", async () => {
    // A store nobody awaits: its failed write must not crash the process, and flush reports it.
    const blocker = join(dir, "a-file");
    await writeFile(blocker, "a regular file where a directory should be");
    const orphan = new FileCursorStore(join(blocker, "cursors.json"));
    void orphan.set("u", "g", { seq: 5n, epoch: "e" });
    await assert.rejects(orphan.flush(), /EEXIST|ENOTDIR|not a directory/i);

    const home = join(dir, "home");
    const path = join(home, "cursors.json");
    const alice = makeClient(server.baseUrl, { cursorStore: new FileCursorStore(path) });
    const bob = makeClient(server.baseUrl);
    await Promise.all([alice.client.register(uniqueName("fa"), PASSWORD), bob.client.register(uniqueName("fb"), PASSWORD)]);
    const group = await bob.client.createGroup("cursor file", { members: [alice.client.user?.username ?? ""] });
    const texts: [bigint, string][] = [];
    alice.client.on("event", (e) => void (e.type === "message" && texts.push([e.seq, e.message.text])));
    await alice.client.start();
    try {
      await alice.client.whenLive();
      // The directory of the cursor file turns into a regular file: every write fails.
      await rm(home, { recursive: true });
      await writeFile(home, "not a directory");
      const first = await bob.client.send(group.groupId, "while the file is broken");
      await until(() => alice.client.cursor(group.groupId) === first.seq, "alice to get the message");
      await until(() => alice.errors.length > 0, "an error event for the failed write");
      assert.match(alice.errors[0]?.message ?? "", /EEXIST|ENOTDIR|not a directory/i);
      // The path becomes writable again: the next write carries the change that failed.
      await rm(home);
      await mkdir(home);
      const second = await bob.client.send(group.groupId, "after the repair");
      await until(() => alice.client.cursor(group.groupId) === second.seq, "alice to get the second message");
      assert.deepEqual(texts, [
        [first.seq, "while the file is broken"],
        [second.seq, "after the repair"],
      ]);
    } finally {
      await alice.client.close();
    }
    const file = JSON.parse(await readFile(path, "utf8")) as { cursors: Record<string, Record<string, { seq: string }>> };
    assert.equal(file.cursors[alice.client.user?.userId ?? ""]?.[group.groupId]?.seq, texts[1]?.[0].toString());
  });

  it("close() during a handler lets the handler finish and sends its ack: the server's acked_seq equals the cursor", async () => {
    const alice = makeClient(server.baseUrl);
    const bob = makeClient(server.baseUrl);
    await Promise.all([alice.client.register(uniqueName("ca"), PASSWORD), bob.client.register(uniqueName("cb"), PASSWORD)]);
    const group = await bob.client.createGroup("ack on close", { members: [alice.client.user?.username ?? ""] });
    let entered!: () => void;
    const inHandler = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const handled: bigint[] = [];
    alice.client.on("event", async (e) => {
      if (e.type !== "message") return;
      entered();
      await released;
      handled.push(e.seq);
    });
    await alice.client.start();
    await alice.client.whenLive();
    const sent = await bob.client.send(group.groupId, "handled while closing");
    await inHandler;
    const closing = alice.client.close();
    release();
    await closing;
    assert.deepEqual(handled, [sent.seq]);
    assert.equal(alice.client.cursor(group.groupId), sent.seq);
    const ackedSeq = async () => (await alice.client.listGroups()).find((g) => g.groupId === group.groupId)?.ackedSeq;
    await until(async () => (await ackedSeq()) === sent.seq, "the server to record the ack sent at close", 10_000);
  });

  it("a send over the WebSocket whose answer is lost fails DEADLINE_EXCEEDED and is retried: stored once", async () => {
    const proxy = await startDroppingProxy(server.baseUrl);
    try {
      const alice = makeClient(proxy.baseUrl, { callTimeoutMs: 2_000 });
      await alice.client.register(uniqueName("dl"), PASSWORD);
      const group = await alice.client.createGroup("lost answer");
      await alice.client.start();
      try {
        await alice.client.whenLive();
        proxy.dropNextSendResult = true;
        const res = await alice.client.send(group.groupId, "answer lost once", { clientMessageId: "lost-1" });
        assert.equal(proxy.dropped, 1, "the first answer was dropped");
        assert.equal(res.attempts, 2);
        assert.equal(res.duplicate, true, "the retry found the message the first attempt stored");
        assert.equal(res.via, "websocket");
        const history = await alice.client.history(group.groupId).older();
        assert.deepEqual(
          history.filter((m) => m.clientMessageId === "lost-1").map((m) => m.seq),
          [res.seq],
        );
      } finally {
        await alice.client.close();
      }
    } finally {
      await proxy.stop();
    }
  });
});

/**
 * startDroppingProxy forwards HTTP and WebSockets to `target`; with `dropNextSendResult` set it swallows the next
 * ConnectResponse carrying a send's answer (the server stored the message; the client never hears of it).
 */
async function startDroppingProxy(target: string): Promise<{ baseUrl: string; dropNextSendResult: boolean; dropped: number; stop(): Promise<void> }> {
  const up = new URL(target);
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => (protocols.has("chat.v1.proto") ? "chat.v1.proto" : false) });
  const httpServer = http.createServer((req, res) => {
    const out = http.request({ host: up.hostname, port: up.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    out.on("error", () => res.destroy());
    req.pipe(out);
  });
  const proxy = {
    baseUrl: "",
    dropNextSendResult: false,
    dropped: 0,
    stop: async () => {
      for (const c of wss.clients) c.terminate();
      httpServer.closeAllConnections();
      await new Promise<void>((r) => httpServer.close(() => r()));
    },
  };
  httpServer.on("upgrade", (req, socket, head) => {
    const protocols = String(req.headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim()).filter(Boolean);
    const upstream = new WebSocket(`ws://${up.host}${req.url}`, protocols);
    upstream.on("error", () => socket.destroy());
    upstream.on("open", () => {
      wss.handleUpgrade(req, socket, head, (client) => {
        const closeCode = (code: number) => (code === 1000 || (code >= 3000 && code < 5000) ? code : 1000);
        upstream.on("message", (data: Buffer) => {
          if (proxy.dropNextSendResult && fromBinary(ConnectResponseSchema, data).payload.case === "sendResult") {
            proxy.dropNextSendResult = false;
            proxy.dropped++;
            return;
          }
          client.send(data);
        });
        client.on("message", (data: Buffer) => upstream.send(data));
        upstream.on("close", (code, reason) => client.close(closeCode(code), reason));
        client.on("close", (code, reason) => upstream.close(closeCode(code), reason));
        client.on("error", () => upstream.terminate());
      });
    });
  });
  await new Promise<void>((r) => httpServer.listen(0, "127.0.0.1", () => r()));
  proxy.baseUrl = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`;
  return proxy;
}

