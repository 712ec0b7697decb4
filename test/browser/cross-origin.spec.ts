/**
 * Stock clients from a page on another origin, in real Chromium (issue 15.4):
 * the page (test/browser/pages/chat-page.ts, bundled by esbuild now) is served
 * from its own port, so every call to the server is cross-origin and, carrying
 * `authorization`, preflighted by the browser. It uses @connectrpc/connect-web
 * over gRPC-Web and Connect, and the native WebSocket, and receives what a
 * Node client sends, each message at the seq SendMessage returned.
 *
 * The server answers CORS for any origin (services/server/app.ts: bearer
 * tokens, never cookies, so there is no origin to configure); what the
 * browser itself refuses is a request whose headers the preflight does not
 * allow, which the last test proves.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Browser } from "playwright-core";
import { launchBrowser, saveScreenshot } from "../support/browser.js";
import { CHAT_PAGE, ChatPage, type PageSite, servePage } from "../support/browser-pages.js";
import { type Clients, type TestServer, registerUser, startTestServer, uniqueName } from "../support/test-server.js";
import type { PageEvent } from "./pages/chat-page-api.js";

describe("stock browser clients on another origin (Chromium)", () => {
  let server: TestServer | undefined;
  let site: PageSite | undefined;
  let browser: Browser | undefined;
  let chat: ChatPage;
  let bob: Clients;
  let groupId: string;
  const username = uniqueName("page");
  const password = "correct horse battery";

  before(async () => {
    server = await startTestServer();
    site = await servePage({ entry: CHAT_PAGE, title: "chat.v1 from another origin" });
    browser = await launchBrowser();
    chat = await ChatPage.open(browser, site.url);
    bob = await registerUser(server.baseUrl, "grpc", "nodebob");
  });
  after(async () => {
    // Each step runs even when an earlier one failed, so nothing outlives the file.
    await browser?.close().catch(() => {});
    await site?.close().catch(() => {});
    await server?.stop();
  });

  it("the page is on another origin than the server", () => {
    assert.ok(site && server);
    assert.notEqual(new URL(site.origin).origin, new URL(server.baseUrl).origin);
  });

  it("registers over Connect, logs in over gRPC-Web, lists groups and sends over both (preflighted calls)", async () => {
    assert.ok(server);
    const registered = await chat.call("signIn", server.baseUrl, "connect", "register", username, password);
    assert.match(registered.userId, /\S/);
    const loggedIn = await chat.call("signIn", server.baseUrl, "grpc-web", "login", username, password);
    assert.equal(loggedIn.userId, registered.userId, "login finds the user the page registered");

    const { group } = await bob.groups.createGroup({ name: "cross-origin", memberUsernames: [username] });
    assert.ok(group);
    groupId = group.groupId;
    for (const protocol of ["grpc-web", "connect"] as const) {
      const groups = await chat.call("listGroups", protocol);
      assert.deepEqual(groups, [{ groupId, name: "cross-origin" }], `ListGroups over ${protocol}`);
    }

    const sent = [
      await chat.call("sendMessage", "grpc-web", groupId, "from the page over gRPC-Web", "page-gw-1"),
      await chat.call("sendMessage", "connect", groupId, "from the page over Connect", "page-connect-1"),
    ];
    const page = await bob.messages.listMessages({ groupId, limit: 10 });
    const stored = (seq: number) => page.messages.find((m) => Number(m.seq) === seq);
    assert.equal(stored(sent[0]!.seq)?.text, "from the page over gRPC-Web");
    assert.equal(stored(sent[0]!.seq)?.messageId, sent[0]!.messageId);
    assert.equal(stored(sent[1]!.seq)?.text, "from the page over Connect");
    assert.equal(sent[1]!.seq, sent[0]!.seq + 1);

    // Chromium preflighted the calls that carry the token, and the server's answer let them through.
    const listGroups = `${server.baseUrl}/chat.v1.GroupService/ListGroups`;
    const preflight = chat.network.find((r) => r.method === "OPTIONS" && r.url === listGroups);
    assert.ok(preflight, `a preflight of ListGroups: ${JSON.stringify(chat.network.map((r) => [r.method, r.url]))}`);
    assert.equal(preflight.type, "Preflight");
    assert.equal(preflight.status, 204);
    assert.equal(preflight.requestHeaders.Origin, site?.origin);
    assert.match(preflight.requestHeaders["Access-Control-Request-Headers"] ?? "", /(^|,)authorization(,|$)/);
    assert.ok(chat.network.some((r) => r.method === "POST" && r.url === listGroups && r.status === 200), "then the call itself");
    await saveScreenshot(chat.page, "cross-origin-unary");
  });

  it("Subscribe over gRPC-Web, Connect and the native WebSocket receives each message at its seq", async () => {
    assert.ok(groupId, "needs the previous test's group");
    const names = ["grpc-web", "connect", "websocket"] as const;
    for (const name of names) await chat.call("openStream", name, name);
    await chat.waitForStreams(names, 0, "all three streams ready");
    const ready = await chat.streams(names);
    for (const name of names) {
      assert.equal(ready[name]?.error, "", `${name} is open`);
      assert.ok(ready[name]?.readyGroups.some((g) => g.groupId === groupId), `${name}'s StreamReady lists the group`);
    }

    // Node and the page take turns: each stream must see every message once, in seq order, each at its own seq.
    const expected: PageEvent[] = [];
    const record = (seq: bigint | number, messageId: string, text: string) =>
      expected.push({ groupId, seq: Number(seq), kind: "message", text, messageId });
    for (let i = 1; i <= 3; i++) {
      const text = `from node ${i}`;
      const { message } = await bob.messages.sendMessage({ groupId, text, clientMessageId: `node-${i}` });
      assert.ok(message);
      record(message.seq, message.messageId, text);
      const own = `from the page ${i}`;
      const mine = await chat.call("sendMessage", i % 2 ? "connect" : "grpc-web", groupId, own, `page-stream-${i}`);
      record(mine.seq, mine.messageId, own);
    }
    const last = expected.at(-1)!.seq;
    await chat.waitForStreams(names, last, `every stream at seq ${last}`);
    const got = await chat.streams(names);
    for (const name of names) {
      assert.equal(got[name]?.ended, false, `${name} still open: ${got[name]?.error}`);
      assert.deepEqual(got[name]?.events, expected, `${name} got exactly the sent messages, each at its seq`);
    }
    await saveScreenshot(chat.page, "cross-origin-streams");
    await chat.call("closeStreams");
  });

  it("errors cross the origin with their status: a forged token is UNAUTHENTICATED, and the WebSocket is refused", async () => {
    assert.ok(groupId && server, "needs the previous tests' sign-in");
    // A well-formed JWT the server did not sign.
    const forged = ["eyJhbGciOiJFZERTQSJ9", "eyJzdWIiOiJub2JvZHkifQ", "c2lnbmF0dXJl"].join(".");
    await chat.call("setToken", forged);
    try {
      // The page sees the status (gRPC-Web: in headers the CORS answer exposes; Connect: in the body), not a network error.
      await assert.rejects(chat.call("listGroups", "grpc-web"), /\[unauthenticated\]/);
      await assert.rejects(chat.call("listGroups", "connect"), /\[unauthenticated\]/);
      // docs/websocket.md: a refused handshake (401) is, in a browser, a close 1006 without `open`.
      await chat.call("openStream", "forged-ws", "websocket");
      await chat.waitForStreams(["forged-ws"], 0, "the refused WebSocket");
      const { "forged-ws": ws } = await chat.streams(["forged-ws"]);
      assert.deepEqual([ws?.ready, ws?.opened, ws?.ended, ws?.closeCode], [false, false, true, 1006]);
      await saveScreenshot(chat.page, "cross-origin-errors");
    } finally {
      await chat.call("signIn", server.baseUrl, "connect", "login", username, password);
    }
  });

  it("the browser refuses a request whose headers the preflight does not allow, and sends the same one without it", async () => {
    assert.ok(groupId, "needs the previous tests' sign-in");
    const path = "/chat.v1.GroupService/ListGroups";
    const connectJson = { "content-type": "application/json", "connect-protocol-version": "1" };
    const allowed = await chat.call("rawFetch", path, connectJson, "{}");
    assert.deepEqual(allowed, { status: 200, error: "" });
    const refused = await chat.call("rawFetch", path, { ...connectJson, "x-not-allowed": "1" }, "{}");
    assert.equal(refused.status, 0);
    assert.match(refused.error, /TypeError: Failed to fetch/, "the browser itself fails the fetch after the preflight");
    assert.ok(
      chat.log.some((l) => /x-not-allowed/i.test(l) && /CORS|Access-Control/i.test(l)),
      `Chromium names the CORS refusal in the console: ${chat.log.join("\n")}`,
    );
  });
});
