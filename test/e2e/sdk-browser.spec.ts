/**
 * @chat/client in a real browser (Chromium via playwright-core): the browser entry bundled by esbuild, served from
 * its own origin (so every call is cross-origin, as for a web app on another host), with the browser's own
 * WebSocket, fetch and localStorage. A page reload restores the session and resumes from the cursors in
 * localStorage: the page is handed exactly the message it missed while it was gone.
 */
import assert from "node:assert/strict";
import { type Server, createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { build } from "esbuild";
import type { Browser, Page } from "playwright-core";
import { WebSocket } from "ws";
import { ChatClient } from "@chat/client";
import { launchBrowser, pageLog } from "../support/browser.js";
import { type TestServer, startTestServer, uniqueName } from "../support/test-server.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** PAGE_SCRIPT runs in the page: one client with localStorage stores, its events recorded in window.seen. */
const PAGE_SCRIPT = `
window.seen = [];
window.states = [];
window.makeClient = (baseUrl) => {
  const { ChatClient, LocalStorageCursorStore, LocalStorageTokenStore } = window.ChatSDK;
  const client = new ChatClient({ baseUrl, tokenStore: new LocalStorageTokenStore(), cursorStore: new LocalStorageCursorStore(), backoff: { initialMs: 50, maxMs: 500 } });
  client.on("event", (e) => { window.seen.push([String(e.seq), e.type, e.type === "message" ? e.message.text : ""]); });
  client.on("state", (s) => { window.states.push(s.state); });
  window.client = client;
  return client;
};
`;

describe("@chat/client in Chromium", () => {
  let server: TestServer;
  let site: Server;
  let siteUrl: string;
  let browser: Browser;

  before(async () => {
    server = await startTestServer();
    const bundle = await build({
      entryPoints: [`${ROOT}clients/typescript/src/index.ts`],
      bundle: true,
      platform: "browser",
      format: "iife",
      globalName: "ChatSDK",
      write: false,
      logLevel: "silent",
      absWorkingDir: ROOT,
    });
    const js = bundle.outputFiles[0]?.text ?? "";
    const html = `<!doctype html><meta charset="utf-8"><title>sdk</title><script>${js}</script><script>${PAGE_SCRIPT}</script>`;
    site = createServer((_req, res) => res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html));
    await new Promise<void>((resolve) => site.listen(0, "127.0.0.1", resolve));
    const a = site.address();
    siteUrl = `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}/`;
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await new Promise((resolve) => site?.close(resolve));
    await server?.stop();
  });

  const waitSeen = (page: Page, n: number) => page.waitForFunction((k) => (globalThis as unknown as { seen: unknown[] }).seen.length >= k, n, { timeout: 15_000 });

  it("logs in, receives live events over the browser's WebSocket, and resumes after a reload from localStorage", async () => {
    const page = await browser.newPage();
    const log = pageLog(page);
    try {
      await page.goto(siteUrl);
      const username = uniqueName("br");
      const bob = new ChatClient({ baseUrl: server.baseUrl, WebSocket });
      await bob.register(uniqueName("bb"), "correct horse battery");

      await page.evaluate(
        async ([baseUrl, name]) => {
          const w = globalThis as unknown as { makeClient(u: string): { register(u: string, p: string): Promise<unknown>; start(): Promise<void>; whenLive(): Promise<void> } };
          const c = w.makeClient(baseUrl ?? "");
          await c.register(name ?? "", "correct horse battery");
          await c.start();
          await c.whenLive();
        },
        [server.baseUrl, username],
      );
      const group = await bob.createGroup("browser", { members: [username] });
      // The page learns the group while connected: GroupJoined, then the member_added event.
      await waitSeen(page, 1);
      const first = await bob.send(group.groupId, "live in the page");
      await waitSeen(page, 2);
      const sentFromPage = await page.evaluate(
        async ([groupId]) => {
          const w = globalThis as unknown as { client: { send(g: string, t: string): Promise<{ seq: bigint; via: string }> } };
          const r = await w.client.send(groupId ?? "", "from the page");
          return [String(r.seq), r.via];
        },
        [group.groupId],
      );
      assert.deepEqual(sentFromPage, [String(first.seq + 1n), "websocket"]);
      await waitSeen(page, 3);
      assert.deepEqual(await page.evaluate(() => (globalThis as unknown as { seen: unknown[] }).seen), [
        ["2", "memberAdded", ""],
        [String(first.seq), "message", "live in the page"],
        [String(first.seq + 1n), "message", "from the page"],
      ]);

      // The page goes away; a message arrives meanwhile; the reloaded page restores the session and gets only that one.
      await page.goto("about:blank");
      const missed = await bob.send(group.groupId, "while the page was gone");
      await page.goto(siteUrl);
      const restored = await page.evaluate(async (baseUrl) => {
        const w = globalThis as unknown as { makeClient(u: string): { restore(): Promise<boolean>; start(): Promise<void>; whenLive(): Promise<void>; user?: { username: string } } };
        const c = w.makeClient(baseUrl);
        const ok = await c.restore();
        await c.start();
        await c.whenLive();
        return [ok, c.user?.username];
      }, server.baseUrl);
      assert.deepEqual(restored, [true, username]);
      await waitSeen(page, 1);
      const after = await bob.send(group.groupId, "after the reload");
      await waitSeen(page, 2);
      assert.deepEqual(await page.evaluate(() => (globalThis as unknown as { seen: unknown[] }).seen), [
        [String(missed.seq), "message", "while the page was gone"],
        [String(after.seq), "message", "after the reload"],
      ]);
      await bob.close();
    } catch (e) {
      throw new Error(`${String(e)}\npage log:\n${log.join("\n")}`);
    } finally {
      await page.close();
    }
  });
});
