/**
 * The web app (web/, served at / by the server) in real Chromium: users
 * register through the page, exchange messages live, survive a server
 * restart without losing or repeating a message, page back through history
 * and see unread counts. What each page shows is compared with the server's
 * own history: the same seqs, the same events at each seq, once each.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { spkiFingerprint } from "../support/browser-pages.js";
import { launchBrowser, pageLog, saveScreenshot } from "../support/browser.js";
import { freePort } from "../support/helpers.js";
import { type Clients, type TestServer, clientsFor, startTestServer } from "../support/test-server.js";
import { makeTestCertificates } from "../support/tls-fixture.js";

const PASSWORD = "correct horse battery";
/** WAIT_MS bounds every wait for the page to show something (generous: a loaded 2-core machine; not a performance bound). */
const WAIT_MS = 30_000;

/** Shown is one item of a page's message list: its seq, sender and text. */
interface Shown {
  seq: number;
  sender: string;
  text: string;
}

/** UserPage is one signed-in user in a browser context of its own (its own localStorage). */
interface UserPage {
  username: string;
  context: BrowserContext;
  page: Page;
  log: string[];
}

let run = 0;
/** name makes a username unique to this process and run (3 to 32 characters). */
function name(prefix: string): string {
  run += 1;
  return `${prefix}${process.pid % 100000}r${run}`;
}

/** until polls `check` until it returns true; on timeout it fails with `what` and the page logs. */
async function until(check: () => Promise<boolean>, what: string, logs: string[][] = []): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}\n${logs.flat().slice(-40).join("\n")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** shown reads the open group's message list as the page renders it (data-seq, sender, text). */
async function shown(page: Page): Promise<Shown[]> {
  const items = page.getByRole("list", { name: "Messages" }).getByRole("listitem");
  const rows: string[][] = await items.evaluateAll((els) =>
    els.map((e) => [e.getAttribute("data-seq") ?? "", e.querySelector(".sender")?.textContent ?? "", e.querySelector(".text")?.textContent ?? ""]),
  );
  return rows.map(([seq, sender, text]) => ({ seq: Number(seq), sender: sender ?? "", text: text ?? "" }));
}

/** history is the server's own record of a group's messages (oldest first), as the page should show them. */
async function history(c: Clients, groupId: string): Promise<Shown[]> {
  const res = await c.messages.listMessages({ groupId, limit: 200 });
  assert.equal(res.hasMore, false, "the test's groups fit one ListMessages page");
  return res.messages.map((m) => ({ seq: Number(m.seq), sender: m.sender?.username ?? "", text: m.text }));
}

const apiClients = new Map<string, Clients>();

/**
 * apiLogin logs a user in over gRPC from the test, to check the server's view (history, read markers); once per
 * user (logins are rate-limited per username), the token outlives the restart (the signing key is in the data dir).
 */
async function apiLogin(baseUrl: string, username: string): Promise<Clients> {
  const known = apiClients.get(username);
  if (known) return known;
  const c = clientsFor(baseUrl, "grpc");
  const res = await c.auth.login({ username, password: PASSWORD });
  c.token = res.tokens?.accessToken;
  c.userId = res.user?.userId ?? "";
  c.username = username;
  apiClients.set(username, c);
  return c;
}

describe("web app in Chromium", () => {
  let server: TestServer;
  let browser: Browser;
  const pages: UserPage[] = [];
  let alice: UserPage;
  let bob: UserPage;
  let team = ""; // the group id of "team"

  /** openPage opens the app in a fresh context (its own localStorage), signed out. */
  async function openPage(prefix: string): Promise<UserPage> {
    const context = await browser.newContext();
    const page = await context.newPage();
    const user: UserPage = { username: name(prefix), context, page, log: pageLog(page) };
    pages.push(user);
    await page.goto(server.baseUrl);
    return user;
  }

  /** signIn fills the form and presses `button` ("Register" or "Log in"). */
  async function signIn(u: UserPage, button: "Register" | "Log in", username = u.username, password = PASSWORD): Promise<void> {
    await u.page.getByLabel("Username").fill(username);
    await u.page.getByLabel("Password").fill(password);
    await u.page.getByRole("button", { name: button }).click();
  }

  /** openUser opens the app and registers a fresh user through the form. */
  async function openUser(prefix: string): Promise<UserPage> {
    const u = await openPage(prefix);
    await signIn(u, "Register");
    await u.page.getByText(`Signed in as ${u.username}`).waitFor({ timeout: WAIT_MS });
    return u;
  }

  /** send types a message into the open group, submits it and waits until the page shows it (sends stay in order). */
  async function send(u: UserPage, text: string): Promise<void> {
    await u.page.getByRole("textbox", { name: "Message" }).fill(text);
    await u.page.getByRole("button", { name: "Send" }).click();
    const messages = u.page.getByRole("list", { name: "Messages" });
    await messages.getByText(text, { exact: true }).waitFor({ timeout: WAIT_MS });
  }

  /** showsExactly waits until `u`'s open group lists exactly the server's history of `groupId`, then asserts it. */
  async function showsExactly(u: UserPage, groupId: string, what: string): Promise<Shown[]> {
    const c = await apiLogin(server.baseUrl, alice.username);
    const want = await history(c, groupId);
    await until(async () => JSON.stringify(await shown(u.page)) === JSON.stringify(want), `${u.username} to show ${what}`, [u.log]);
    const got = await shown(u.page);
    assert.deepEqual(got, want, `${u.username}: ${what}`);
    return got;
  }

  before(async () => {
    // A fixed port: the pages reconnect to the same origin after the restart.
    // A short heartbeat: a page whose network went away notices within two of them.
    server = await startTestServer({ PORT: String(await freePort()), HEARTBEAT_INTERVAL: "1s" });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it("two users register in the page and exchange messages live; unread counts show before a group is opened", async () => {
    alice = await openUser("alice");
    bob = await openUser("bob");
    await alice.page.getByLabel("New group").fill("team");
    await alice.page.getByRole("button", { name: "Create group" }).click();
    await alice.page.getByRole("heading", { name: "team" }).waitFor({ timeout: WAIT_MS });
    await alice.page.getByLabel("Add member").fill(bob.username);
    await alice.page.getByRole("button", { name: "Add", exact: true }).click();
    await alice.page.getByText(`${bob.username} was added to team`).waitFor({ timeout: WAIT_MS });
    await send(alice, "hello bob");
    await send(alice, "are you there?");
    const c = await apiLogin(server.baseUrl, alice.username);
    team = (await c.groups.listGroups({})).groups.find((g) => g.name === "team")?.groupId ?? "";
    assert.ok(team, "alice's group list has team");

    // Bob was added while his page was open: the group appears with its unread count.
    const bobsTeam = bob.page.getByRole("button", { name: "team, 2 unread" });
    await bobsTeam.waitFor({ timeout: WAIT_MS });
    await saveScreenshot(bob.page, "web-app-1-unread");
    await bobsTeam.click();
    await showsExactly(bob, team, "the two messages");
    await bob.page.getByRole("button", { name: "team", exact: true }).waitFor({ timeout: WAIT_MS }); // the badge is gone

    for (let i = 1; i <= 3; i++) {
      await send(bob, `bob says ${i}`);
      await send(alice, `alice says ${i}`);
    }
    const a = await showsExactly(alice, team, "every message live");
    const b = await showsExactly(bob, team, "every message live");
    const said = (who: UserPage, text: string) => ({ sender: who.username, text });
    assert.deepEqual(
      b.map(({ sender, text }) => ({ sender, text })),
      [
        said(alice, "hello bob"),
        said(alice, "are you there?"),
        ...[1, 2, 3].flatMap((i) => [said(bob, `bob says ${i}`), said(alice, `alice says ${i}`)]),
      ],
    );
    assert.deepEqual(a, b);
    // What bob's page showed is marked read on the server.
    const bobApi = await apiLogin(server.baseUrl, bob.username);
    const head = Math.max(...b.map((s) => s.seq));
    await until(async () => {
      const g = (await bobApi.groups.listGroups({})).groups.find((x) => x.groupId === team);
      return g !== undefined && Number(g.lastReadSeq) === head && g.unreadCount === 0;
    }, "bob's read marker at the newest shown seq");
    await saveScreenshot(alice.page, "web-app-2-live-alice");
    await saveScreenshot(bob.page, "web-app-2-live-bob");
  });

  it("a user who is not a member sees nothing of the group; a wrong password is refused in the form", async () => {
    const carol = await openPage("carol");
    await signIn(carol, "Log in", alice.username, "not alice's password");
    await carol.page.getByRole("alert").filter({ hasText: "wrong username or password" }).waitFor({ timeout: WAIT_MS });
    assert.equal(await carol.page.getByText(/Signed in as/).count(), 0);
    await signIn(carol, "Register");
    await carol.page.getByText(`Signed in as ${carol.username}`).waitFor({ timeout: WAIT_MS });
    await carol.page.getByLabel("New group").fill("corner");
    await carol.page.getByRole("button", { name: "Create group" }).click();
    await carol.page.getByRole("heading", { name: "corner" }).waitFor({ timeout: WAIT_MS });
    await carol.page.reload(); // the session is restored from localStorage; the list is fetched again
    await carol.page.getByText(`Signed in as ${carol.username}`).waitFor({ timeout: WAIT_MS });
    await carol.page.getByRole("button", { name: "corner" }).waitFor({ timeout: WAIT_MS }); // the list has loaded
    await until(async () => (await carol.page.getByRole("status").textContent()) === "live", "carol's connection to be live", [carol.log]);
    assert.deepEqual(await carol.page.getByRole("list", { name: "Groups" }).getByRole("listitem").allTextContents(), ["corner"]);
    assert.equal(await carol.page.getByRole("button", { name: /team/ }).count(), 0);
    assert.equal(await carol.page.getByText("hello bob").count(), 0);
    await saveScreenshot(carol.page, "web-app-3-outsider");
    await carol.context.close();
  });

  it("both pages show reconnecting… while the server is down, then resume with every message once, in seq order", async () => {
    await server.app.stop();
    for (const u of [alice, bob]) {
      await u.page.getByText("reconnecting…").waitFor({ timeout: WAIT_MS });
    }
    await saveScreenshot(alice.page, "web-app-4-reconnecting");
    await server.restart(); // same data directory, same port
    // Sent while the pages are (most likely) still waiting to reconnect: they must catch up on resume.
    const api = await apiLogin(server.baseUrl, alice.username);
    for (let i = 1; i <= 3; i++) await api.messages.sendMessage({ groupId: team, text: `while away ${i}`, clientMessageId: `away-${run}-${i}` });
    for (const u of [alice, bob]) {
      await u.page.getByText("live", { exact: true }).waitFor({ timeout: WAIT_MS });
    }
    for (let i = 1; i <= 2; i++) {
      await send(alice, `alice after ${i}`);
      await send(bob, `bob after ${i}`);
    }
    const a = await showsExactly(alice, team, "every message once after the restart");
    const b = await showsExactly(bob, team, "every message once after the restart");
    assert.deepEqual(a, b);
    const seqs = a.map((s) => s.seq);
    assert.deepEqual(seqs, [...new Set(seqs)].sort((x, y) => x - y), "each seq once, ascending");
    for (const t of ["while away 1", "while away 2", "while away 3", "alice after 2", "bob after 2"]) {
      assert.equal(a.filter((s) => s.text === t).length, 1, t);
    }
    await saveScreenshot(alice.page, "web-app-5-resumed-alice");
    await saveScreenshot(bob.page, "web-app-5-resumed-bob");
  });

  it("a page whose network drops shows reconnecting…, then catches up with what it missed, once each", async () => {
    await bob.context.setOffline(true);
    await bob.page.getByText("reconnecting…").waitFor({ timeout: WAIT_MS });
    await send(alice, "while bob is offline 1");
    await send(alice, "while bob is offline 2");
    await saveScreenshot(bob.page, "web-app-6-offline");
    await bob.context.setOffline(false);
    await bob.page.getByText("live", { exact: true }).waitFor({ timeout: WAIT_MS });
    await send(bob, "bob is back");
    const a = await showsExactly(alice, team, "every message once after bob's network came back");
    const b = await showsExactly(bob, team, "every message once after his network came back");
    assert.deepEqual(a, b);
    for (const t of ["while bob is offline 1", "while bob is offline 2", "bob is back"]) assert.equal(b.filter((s) => s.text === t).length, 1, t);
  });

  it("a group with more than a page of history shows older pages on demand, and counts unread live", async () => {
    const api = await apiLogin(server.baseUrl, alice.username);
    const created = await api.groups.createGroup({ name: "archive" });
    const archive = created.group?.groupId ?? "";
    const bobApi = await apiLogin(server.baseUrl, bob.username);
    await api.groups.addMember({ groupId: archive, user: { case: "userId", value: bobApi.userId } });
    for (let i = 1; i <= 70; i++) await api.messages.sendMessage({ groupId: archive, text: `old ${i}`, clientMessageId: `old-${run}-${i}` });

    // Bob's page (on "team") learns of the group live, with what he has not read; then counts a new one live.
    await bob.page.getByRole("button", { name: "archive, 70 unread" }).waitFor({ timeout: WAIT_MS });
    await api.messages.sendMessage({ groupId: archive, text: "old 71", clientMessageId: `old-${run}-71` });
    const unread = bob.page.getByRole("button", { name: "archive, 71 unread" });
    await unread.waitFor({ timeout: WAIT_MS });
    await saveScreenshot(bob.page, "web-app-7-unread-live");

    await unread.click();
    await bob.page.getByText("old 71").waitFor({ timeout: WAIT_MS });
    const want = await history(api, archive);
    assert.equal(want.length, 71);
    const isNewest = (list: Shown[]) => JSON.stringify(list) === JSON.stringify(want.slice(want.length - list.length));
    const first = await shown(bob.page);
    assert.ok(first.length > 0 && first.length < want.length, `one page, not all: ${first.length}`);
    assert.ok(isNewest(first), "the newest page, in seq order");
    assert.equal(await bob.page.getByText("old 1", { exact: true }).count(), 0);
    await saveScreenshot(bob.page, "web-app-8-history-first-page");

    // Scrolling up to the top of the list loads an older page above it.
    await bob.page.getByRole("list", { name: "Messages" }).hover();
    await bob.page.mouse.wheel(0, -20_000);
    await until(async () => (await shown(bob.page)).length > first.length, "an older page after scrolling up", [bob.log]);
    const second = await shown(bob.page);
    assert.ok(isNewest(second), `newer pages only, contiguous, in seq order: ${second.map((x) => x.seq).join(",")}`);
    // The button loads the rest (dispatched: a real click scrolls it into view, which loads by itself).
    const older = bob.page.getByRole("button", { name: "Load older messages" });
    await until(
      async () => {
        if ((await shown(bob.page)).length === want.length) return true;
        if (await older.isVisible()) await older.dispatchEvent("click");
        return false;
      },
      "every older page",
      [bob.log],
    );
    assert.deepEqual(await shown(bob.page), want, "all of the history, once each, in seq order");
    await older.waitFor({ state: "hidden", timeout: WAIT_MS });
    await saveScreenshot(bob.page, "web-app-9-history-all");
  });

  after(async () => {
    for (const u of pages) {
      const errors = u.log.filter((l) => l.startsWith("[pageerror]") || /Content Security Policy/i.test(l));
      assert.deepEqual(errors, [], `${u.username}: uncaught page errors or CSP violations`);
    }
  });
});

describe("web app in Chromium over TLS", () => {
  it("loads over HTTP/2 and goes live over wss:// within its CSP", async () => {
    const certs = await makeTestCertificates();
    const server = await startTestServer({ TLS_CERT_FILE: certs.certFile, TLS_KEY_FILE: certs.keyFile });
    const browser = await launchBrowser([`--ignore-certificate-errors-spki-list=${spkiFingerprint(await readFile(certs.certFile, "utf8"))}`]);
    try {
      const page = await browser.newPage();
      const log = pageLog(page);
      const response = await page.goto(`https://127.0.0.1:${server.port}/`);
      assert.equal(response?.status(), 200);
      assert.match((await response?.allHeaders())?.["content-security-policy"] ?? "", /connect-src 'self' ws:\/\/127\.0\.0\.1:\d+ wss:\/\/127\.0\.0\.1:\d+;/);
      assert.equal(await page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol"), "h2");
      const username = name("tls");
      await page.getByLabel("Username").fill(username);
      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Register" }).click();
      await page.getByText(`Signed in as ${username}`).waitFor({ timeout: WAIT_MS });
      await until(async () => (await page.getByRole("status").textContent()) === "live", "the wss:// connection to be live", [log]);
      await page.getByLabel("New group").fill("secure");
      await page.getByRole("button", { name: "Create group" }).click();
      await page.getByRole("heading", { name: "secure" }).waitFor({ timeout: WAIT_MS });
      await page.getByRole("textbox", { name: "Message" }).fill("over tls");
      await page.getByRole("button", { name: "Send" }).click();
      await page.getByRole("list", { name: "Messages" }).getByText("over tls", { exact: true }).waitFor({ timeout: WAIT_MS });
      assert.deepEqual(
        (await shown(page)).map((s) => [s.sender, s.text]),
        [[username, "over tls"]],
      );
      await saveScreenshot(page, "web-app-10-tls");
      assert.deepEqual(
        log.filter((l) => l.startsWith("[pageerror]") || /Content Security Policy/i.test(l)),
        [],
      );
    } finally {
      await browser.close();
      await server.stop();
      await certs.remove();
    }
  });
});
