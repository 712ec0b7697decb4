/**
 * TLS from Chromium (issue 15.6): the server on TLS_CERT_FILE/TLS_KEY_FILE
 * with a test CA's certificate, and a page served over https from another
 * origin (its own port, the same certificate). Chromium trusts exactly that
 * certificate's public key (`--ignore-certificate-errors-spki-list`), no CA
 * and no other certificate. Over TLS, ALPN gives the browser HTTP/2: Chromium
 * records "h2" for every connect-web request (DevTools protocol), a document of
 * the server's own origin reads `nextHopProtocol` "h2" in Resource Timing
 * (cross-origin entries hide it: the server sends no Timing-Allow-Origin), and
 * more server streams than HTTP/1.1's six connections per origin stay open
 * together with a unary call. `wss://` Subscribe (HTTP/1.1) works alongside.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import type { Browser } from "playwright-core";
import { launchBrowser, saveScreenshot } from "../support/browser.js";
import { CHAT_PAGE, ChatPage, type NetworkRequest, type PageSite, servePage, spkiFingerprint } from "../support/browser-pages.js";
import { type Clients, type TestServer, registerUser, startTestServer, uniqueName } from "../support/test-server.js";
import { type TestCertificates, makeTestCertificates } from "../support/tls-fixture.js";
import type { PageEvent, PageStreamKind } from "./pages/chat-page-api.js";

/** LogRecord is one JSON line of the server's debug log ("tls connection" lines carry the negotiated ALPN). */
type LogRecord = { msg?: string; alpn?: string };

/** requestsTo is the page's requests to `origin` (preflights included), as Chromium recorded them. */
function requestsTo(chat: ChatPage, origin: string): NetworkRequest[] {
  return chat.network.filter((r) => r.url.startsWith(`${origin}/`));
}

describe("TLS from Chromium", () => {
  let certs: TestCertificates | undefined;
  let server: TestServer | undefined;
  let site: PageSite | undefined;
  let browser: Browser | undefined;
  let chat: ChatPage;
  let bob: Clients;
  let baseUrl: string;
  let groupId: string;
  let spki: string;
  const records: LogRecord[] = [];
  const username = uniqueName("tlspage");
  const password = "correct horse battery";

  before(async () => {
    certs = await makeTestCertificates();
    const logger = pino({ level: "debug" }, { write: (line: string) => void records.push(JSON.parse(line) as LogRecord) });
    server = await startTestServer({ TLS_CERT_FILE: certs.certFile, TLS_KEY_FILE: certs.keyFile }, { logger });
    baseUrl = `https://127.0.0.1:${server.port}`;
    const [cert, key] = await Promise.all([readFile(certs.certFile, "utf8"), readFile(certs.keyFile, "utf8")]);
    site = await servePage({ entry: CHAT_PAGE, title: "chat.v1 over TLS from another https origin", tls: { cert, key } });
    spki = spkiFingerprint(cert);
    browser = await launchBrowser([`--ignore-certificate-errors-spki-list=${spki}`]);
    chat = await ChatPage.open(browser, site.url);
    bob = await registerUser(baseUrl, "grpc", "tlsbob", { ca: certs.ca });
    await chat.call("signIn", baseUrl, "grpc-web", "register", username, password);
    const { group } = await bob.groups.createGroup({ name: "over tls", memberUsernames: [username] });
    assert.ok(group);
    groupId = group.groupId;
  });
  after(async () => {
    // Each step runs even when an earlier one failed, so nothing outlives the file.
    await browser?.close().catch(() => {});
    await site?.close().catch(() => {});
    await server?.stop().catch(() => {});
    await certs?.remove();
  });

  it("with another key's SPKI hash (the CA's) instead of the certificate's, Chromium refuses the page", async () => {
    assert.ok(site);
    const plain = await launchBrowser([`--ignore-certificate-errors-spki-list=${spkiFingerprint(certs?.ca ?? "")}`]);
    try {
      const page = await plain.newPage();
      await assert.rejects(page.goto(site.url), /ERR_CERT_AUTHORITY_INVALID/);
    } finally {
      await plain.close();
    }
  });

  it("connect-web over gRPC-Web and Connect works over https, on HTTP/2 (ALPN h2)", async () => {
    const loggedIn = await chat.call("signIn", baseUrl, "connect", "login", username, password);
    assert.match(loggedIn.userId, /\S/);
    for (const protocol of ["grpc-web", "connect"] as const) {
      assert.deepEqual(await chat.call("listGroups", protocol), [{ groupId, name: "over tls" }], `ListGroups over ${protocol}`);
    }
    const a = await chat.call("sendMessage", "grpc-web", groupId, "tls gRPC-Web", "tls-gw-1");
    const b = await chat.call("sendMessage", "connect", groupId, "tls Connect", "tls-connect-1");
    assert.equal(b.seq, a.seq + 1);
    const stored = await bob.messages.listMessages({ groupId, limit: 10 });
    assert.deepEqual(
      stored.messages.filter((m) => m.seq >= BigInt(a.seq)).map((m) => [Number(m.seq), m.text]).sort(),
      [[a.seq, "tls gRPC-Web"], [b.seq, "tls Connect"]],
    );

    // Chromium's own record of each request to the server (preflights included): all over HTTP/2.
    const calls = requestsTo(chat, baseUrl);
    const rpcs = new Set(calls.map((r) => new URL(r.url).pathname));
    for (const rpc of ["/chat.v1.AuthService/Login", "/chat.v1.GroupService/ListGroups", "/chat.v1.MessageService/SendMessage"]) {
      assert.ok(rpcs.has(rpc), `a request to ${rpc}: ${JSON.stringify(calls)}`);
    }
    assert.ok(calls.some((r) => r.type === "Preflight"), "the token's calls were preflighted");
    assert.deepEqual([...new Set(calls.map((r) => r.protocol))], ["h2"], JSON.stringify(calls));
    assert.ok(
      records.some((r) => r.msg === "tls connection" && r.alpn === "h2"),
      "the server negotiated h2 with the browser",
    );
    await saveScreenshot(chat.page, "tls-browser-unary");
  });

  it("a page of the server's own origin sees nextHopProtocol h2 in Resource Timing for its connect-web calls", async () => {
    assert.ok(browser && site);
    // Cross-origin entries hide nextHopProtocol (no Timing-Allow-Origin), so run the same script in a document of the
    // server's origin (its /readyz) and read the entries there.
    const own = await ChatPage.open(browser, `${baseUrl}/readyz`, { inject: site.script });
    try {
      await own.call("signIn", baseUrl, "connect", "login", username, password);
      for (const protocol of ["grpc-web", "connect"] as const) {
        assert.deepEqual(await own.call("listGroups", protocol), [{ groupId, name: "over tls" }], `ListGroups over ${protocol}`);
      }
      const entries = await own.page.evaluate((origin) => {
        const all = performance.getEntriesByType("resource") as unknown as { name: string; nextHopProtocol: string }[];
        return all.filter((e) => e.name.startsWith(`${origin}/chat.v1.`)).map((e) => ({ name: e.name, protocol: e.nextHopProtocol }));
      }, baseUrl);
      assert.deepEqual(
        entries.map((e) => new URL(e.name).pathname).sort(),
        ["/chat.v1.AuthService/Login", "/chat.v1.GroupService/ListGroups", "/chat.v1.GroupService/ListGroups"],
      );
      assert.deepEqual([...new Set(entries.map((e) => e.protocol))], ["h2"], JSON.stringify(entries));
      await saveScreenshot(own.page, "tls-browser-same-origin");
    } finally {
      await own.page.close();
    }
  });

  it("more than six server streams and a unary call run at once over one origin (no HTTP/1.1 connection limit)", async () => {
    const names = Array.from({ length: 8 }, (_, i) => `stream-${i + 1}`);
    for (const [i, name] of names.entries()) {
      const kind: PageStreamKind = i % 2 ? "connect" : "grpc-web";
      await chat.call("openStream", name, kind);
    }
    // Over HTTP/1.1 the seventh stream would queue behind six open ones and never become ready.
    await chat.waitForStreams(names, 0, "eight concurrent streams ready");
    const ready = await chat.streams(names);
    for (const name of names) assert.equal(ready[name]?.error, "", `${name} is open`);

    // With all eight open: a unary call from the page and a send from Node reach every stream at their seqs.
    const expected: PageEvent[] = [];
    const mine = await chat.call("sendMessage", "grpc-web", groupId, "unary next to 8 streams", "tls-many-1");
    expected.push({ groupId, seq: mine.seq, kind: "message", text: "unary next to 8 streams", messageId: mine.messageId });
    const { message } = await bob.messages.sendMessage({ groupId, text: "from node over tls", clientMessageId: "tls-node-1" });
    assert.ok(message);
    expected.push({ groupId, seq: Number(message.seq), kind: "message", text: "from node over tls", messageId: message.messageId });
    await chat.waitForStreams(names, Number(message.seq), "every stream has both messages");
    const got = await chat.streams(names);
    for (const name of names) {
      assert.equal(got[name]?.ended, false, `${name} still open: ${got[name]?.error}`);
      assert.deepEqual(got[name]?.events, expected, `${name} got both messages, each at its seq`);
    }
    const streams = requestsTo(chat, baseUrl).filter((r) => r.url.endsWith("/chat.v1.StreamService/Subscribe") && r.method === "POST");
    assert.equal(streams.length, names.length, JSON.stringify(streams));
    assert.deepEqual([...new Set(streams.map((r) => r.protocol))], ["h2"], "every stream over HTTP/2");
    await saveScreenshot(chat.page, "tls-browser-many-streams");
    await chat.call("closeStreams");
  });

  it("wss:// Subscribe receives what Node sends, at its seq", async () => {
    await chat.call("openStream", "wss", "websocket");
    await chat.waitForStreams(["wss"], 0, "the wss:// stream ready");
    const { message } = await bob.messages.sendMessage({ groupId, text: "to the wss stream", clientMessageId: "tls-wss-1" });
    assert.ok(message);
    await chat.waitForStreams(["wss"], Number(message.seq), "the message on wss://");
    const { wss } = await chat.streams(["wss"]);
    assert.equal(wss?.opened, true);
    assert.equal(wss?.ended, false, `wss still open: ${wss?.error}`);
    assert.deepEqual(wss?.events, [
      { groupId, seq: Number(message.seq), kind: "message", text: "to the wss stream", messageId: message.messageId },
    ]);
    await saveScreenshot(chat.page, "tls-browser-wss");
    await chat.call("closeStreams");
  });
});
