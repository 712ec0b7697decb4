/**
 * Test pages for real-browser specs: a page's script is bundled by esbuild at
 * test time (into a temporary directory, deleted again) from a TypeScript
 * source under test/browser/pages/, and served with a minimal HTML document by
 * a tiny static server on its own port of 127.0.0.1, over http:// or, with
 * `tls`, https:// (HTTP/1.1). Its own port makes it another origin than the
 * chat server, so every call the page makes is cross-origin (CORS).
 */
import { createHash, X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import type { Browser, Page } from "playwright-core";
import type { ChatPageApi, PageGlobal, PageStream } from "../browser/pages/chat-page-api.js";
import { pageLog } from "./browser.js";

/** PageSite is a served test page: its origin (scheme://127.0.0.1:port) and the page's URL. */
export interface PageSite {
  readonly origin: string;
  /** url is the page: an HTML document that loads the bundle as a module script. */
  readonly url: string;
  /** script is the page's bundle (for `ChatPage.open`'s `inject`, to run it in a document of another origin). */
  readonly script: string;
  /** close stops the server and ends its open connections. */
  close(): Promise<void>;
}

/** PageOptions: the TypeScript entry to bundle, the document's title, and a certificate and key to serve https://. */
export interface PageOptions {
  readonly entry: string;
  readonly title: string;
  readonly tls?: { readonly cert: string; readonly key: string };
}

/**
 * bundlePage bundles `entry` and everything it imports (node_modules, gen/) into
 * one ES module for Chromium, with an inline source map so a page error names
 * the source line. It throws esbuild's error when the source does not build.
 */
export async function bundlePage(entry: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "chat-page-"));
  try {
    const outfile = join(dir, "page.js");
    await build({
      entryPoints: [entry],
      outfile,
      bundle: true,
      format: "esm",
      platform: "browser",
      target: "chrome120",
      sourcemap: "inline",
      logLevel: "silent",
    });
    return await readFile(outfile, "utf8");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * servePage bundles `entry` and serves it on 127.0.0.1:<free port>: `GET /` is
 * the document (a `<pre id="log">` the page may write to, and the module script),
 * `GET /page.js` the bundle, anything else 404. Nothing is cached.
 */
export async function servePage(options: PageOptions): Promise<PageSite> {
  const script = await bundlePage(options.entry);
  const html =
    `<!doctype html><html><head><meta charset="utf-8"><title>${options.title}</title>` +
    `<style>body{font:13px monospace;margin:12px}h1{font-size:15px}pre{white-space:pre-wrap}</style></head>` +
    `<body><h1>${options.title}</h1><pre id="log"></pre><script type="module" src="/page.js"></script></body></html>`;
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const headers = { "cache-control": "no-store" };
    if (req.url === "/") res.writeHead(200, { ...headers, "content-type": "text/html; charset=utf-8" }).end(html);
    else if (req.url === "/page.js") res.writeHead(200, { ...headers, "content-type": "text/javascript; charset=utf-8" }).end(script);
    else res.writeHead(404, { ...headers, "content-type": "text/plain" }).end("not found\n");
  };
  const server = options.tls ? https.createServer({ cert: options.tls.cert, key: options.tls.key }, handler) : http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const origin = `${options.tls ? "https" : "http"}://127.0.0.1:${port}`;
  return {
    origin,
    url: `${origin}/`,
    script,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * spkiFingerprint is the base64 SHA-256 of a PEM certificate's
 * SubjectPublicKeyInfo: what Chromium's `--ignore-certificate-errors-spki-list`
 * takes to trust exactly the certificates with that public key (and no other).
 */
export function spkiFingerprint(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

/** CHAT_PAGE is the entry of the chat page (test/browser/pages/chat-page.ts), which exposes ChatPageApi. */
export const CHAT_PAGE = join(import.meta.dirname, "../browser/pages/chat-page.ts");

/** PAGE_WAIT_MS bounds every wait on a page: long enough for a loaded 2-core machine, short enough to fail fast. */
const PAGE_WAIT_MS = 15_000;

/**
 * NetworkRequest is one request the page's network stack made, as Chromium's
 * DevTools protocol reports it: CORS preflights included (type "Preflight"),
 * which playwright's own request events leave out. `status` and `protocol`
 * ("http/1.1", "h2") are set once the response came.
 */
export interface NetworkRequest {
  readonly method: string;
  readonly url: string;
  readonly requestHeaders: Readonly<Record<string, string>>;
  type: string;
  status: number;
  protocol: string;
}

/**
 * ChatPage drives a loaded chat page: `call` runs a ChatPageApi method in the
 * page (its rejection carries the page's error), `waitForStreams` waits for
 * a condition on named streams and fails with their state and the page's
 * console when it does not come. `network` lists the page's requests.
 */
export class ChatPage {
  private constructor(
    readonly page: Page,
    readonly log: string[],
    readonly network: NetworkRequest[],
  ) {}

  /**
   * open loads `url` in a new page of `browser` and waits for the page's script
   * to expose ChatPageApi. With `inject` (a PageSite's script), `url` may be
   * any document (e.g. one of the chat server's own origin) and the script is
   * added to it as a module.
   */
  static async open(browser: Browser, url: string, options: { inject?: string } = {}): Promise<ChatPage> {
    const page = await browser.newPage();
    const chat = new ChatPage(page, pageLog(page), []);
    const byId = new Map<string, NetworkRequest>();
    const cdp = await page.context().newCDPSession(page);
    cdp.on("Network.requestWillBeSent", (e) => {
      const { method, url, headers } = e.request;
      const r: NetworkRequest = { method, url, requestHeaders: headers, type: e.type ?? "", status: 0, protocol: "" };
      byId.set(e.requestId, r);
      chat.network.push(r);
    });
    cdp.on("Network.responseReceived", (e) => {
      const r = byId.get(e.requestId);
      if (!r) return;
      r.type = e.type;
      r.status = e.response.status;
      r.protocol = e.response.protocol ?? "";
    });
    await cdp.send("Network.enable");
    await page.goto(url);
    if (options.inject !== undefined) {
      await page.evaluate(() => {
        const doc = (globalThis as unknown as { document: { body: { innerHTML: string } } }).document;
        doc.body.innerHTML = '<pre id="log"></pre>';
      });
      await page.addScriptTag({ content: options.inject, type: "module" });
    }
    await page.waitForFunction(() => "chatPage" in globalThis, undefined, { timeout: PAGE_WAIT_MS });
    return chat;
  }

  /** call runs `chatPage[method](...args)` in the page and returns its (JSON) result. */
  async call<K extends keyof ChatPageApi>(method: K, ...args: Parameters<ChatPageApi[K]>): Promise<Awaited<ReturnType<ChatPageApi[K]>>> {
    const result = await this.page.evaluate(
      ({ method, args }: { method: string; args: unknown[] }): unknown => {
        const fn = (globalThis as unknown as { chatPage: Record<string, unknown> }).chatPage[method];
        if (typeof fn !== "function") throw new Error(`chatPage has no method ${method}`);
        return (fn as (...a: unknown[]) => unknown)(...args);
      },
      { method, args: args as unknown[] },
    );
    return result as Awaited<ReturnType<ChatPageApi[K]>>;
  }

  /** streams returns the named streams' states. */
  async streams(names: readonly string[]): Promise<Record<string, PageStream>> {
    return this.page.evaluate(
      (names) => Object.fromEntries(names.map((n) => [n, (globalThis as unknown as PageGlobal).chatPage.stream(n)])),
      names,
    );
  }

  /**
   * waitForStreams waits until every named stream is ready (`seq` 0) or has an
   * event at `seq` or later, or has ended (so a failed stream fails the test's
   * assertions at once instead of timing out); it throws with the streams'
   * states after PAGE_WAIT_MS.
   */
  async waitForStreams(names: readonly string[], seq: number, what: string): Promise<void> {
    try {
      await this.page.waitForFunction(
        ({ names, seq }) =>
          names.every((n) => {
            const s = (globalThis as unknown as PageGlobal).chatPage.stream(n);
            return s.ended || (seq === 0 ? s.ready : s.events.some((e) => e.seq >= seq));
          }),
        { names, seq },
        { timeout: PAGE_WAIT_MS, polling: 50 },
      );
    } catch (e) {
      const state = await this.streams(names).catch((err: unknown) => String(err));
      throw new Error(`${what}: ${e instanceof Error ? e.message : String(e)}\nstreams: ${JSON.stringify(state)}\npage: ${this.log.join("\n")}`);
    }
  }
}
