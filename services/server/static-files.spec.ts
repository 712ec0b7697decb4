import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { rejectsWith } from "../../test/support/assertions.js";
import { makeTestCertificates } from "../../test/support/tls-fixture.js";
import { type TestServer, clientsFor, startTestServer } from "../../test/support/test-server.js";
import { type StaticFiles, WEB_APP_ROOT, contentSecurityPolicy, loadStaticFiles } from "./static-files.js";

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** get sends `method path` over HTTP/1.1 exactly as written (no URL normalisation, unlike fetch); over TLS (no ALPN: HTTP/1.1) trusting `ca`. */
function get(port: number, path: string, method = "GET", headers: Record<string, string> = {}, ca?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const options = { host: "127.0.0.1", port, path, method, headers, agent: false as const };
    const onResponse = (res: http.IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    };
    const req = ca ? https.request({ ...options, ca }, onResponse) : http.request(options, onResponse);
    req.on("error", reject);
    req.end();
  });
}

/** get2 sends `GET path` over HTTP/2: cleartext with prior knowledge (as gRPC clients connect), or TLS trusting `ca`. */
async function get2(port: number, path: string, ca?: string): Promise<Answer> {
  const session = ca ? http2.connect(`https://127.0.0.1:${port}`, { ca }) : http2.connect(`http://127.0.0.1:${port}`);
  try {
    return await new Promise<Answer>((resolve, reject) => {
      const stream = session.request({ ":method": "GET", ":path": path });
      const chunks: Buffer[] = [];
      let head: http2.IncomingHttpHeaders = {};
      stream.on("response", (h) => (head = h));
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => resolve({ status: Number(head[":status"]), headers: head, body: Buffer.concat(chunks).toString() }));
      stream.on("error", reject);
    });
  } finally {
    session.close();
  }
}

/** TRAVERSALS are paths that would leave assets/ if anything resolved them against the file system. */
const TRAVERSALS = [
  "/assets/../secret.txt",
  "/assets/../../secret.txt",
  "/assets/%2e%2e/secret.txt",
  "/assets/%2e%2e%2fsecret.txt",
  "/assets/..%2f..%2fsecret.txt",
  "/assets/..\\secret.txt",
  "/assets//etc/passwd",
  "/assets/sub/inner.js",
  "/assets/%00main-ABCD1234.js",
  "/assets/",
];

describe("static files (a built tree in a temporary directory)", () => {
  let dir: string;
  let files: StaticFiles;
  let server: http.Server;
  let port: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "static-files-"));
    const root = join(dir, "public");
    await mkdir(join(root, "assets", "sub"), { recursive: true });
    await writeFile(join(dir, "secret.txt"), "SECRET-OUTSIDE");
    await writeFile(join(root, "secret.txt"), "SECRET-IN-ROOT");
    await writeFile(join(root, "index.html"), "<!doctype html><title>t</title>");
    await writeFile(join(root, "assets", "main-ABCD1234.js"), "console.log(1)");
    await writeFile(join(root, "assets", "main-ABCD1234.css"), "body{}");
    await writeFile(join(root, "assets", "notes.txt"), "plain");
    await writeFile(join(root, "assets", "tool.exe"), "MZ");
    await writeFile(join(root, "assets", "sub", "inner.js"), "nested");
    files = await loadStaticFiles(root);
    server = http.createServer((req, res) => {
      if (files.handles(req)) return files.serve(req, res);
      res.writeHead(418).end("not the web app's");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });

  after(async () => {
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  it("serves exactly index.html and the known file types directly in assets/", () => {
    assert.deepEqual([...files.files].sort(), ["/", "/assets/main-ABCD1234.css", "/assets/main-ABCD1234.js", "/assets/notes.txt"]);
  });

  it("answers / and /index.html with the page, no-cache, a strict CSP and nosniff", async () => {
    for (const path of ["/", "/index.html", "/?next=1"]) {
      const a = await get(port, path, "GET", { host: "chat.example:8443" });
      assert.equal(a.status, 200, path);
      assert.equal(a.body, "<!doctype html><title>t</title>");
      assert.equal(a.headers["content-type"], "text/html; charset=utf-8");
      assert.equal(a.headers["cache-control"], "no-cache");
      assert.equal(a.headers["x-content-type-options"], "nosniff");
      assert.equal(a.headers["x-frame-options"], "DENY");
      assert.equal(a.headers["content-security-policy"], contentSecurityPolicy("chat.example:8443"));
    }
    const csp = contentSecurityPolicy("chat.example:8443");
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self';/);
    assert.match(csp, /connect-src 'self' ws:\/\/chat\.example:8443 wss:\/\/chat\.example:8443;/);
    assert.doesNotMatch(csp, /unsafe/);
  });

  it("never echoes a malformed Host into the CSP", () => {
    for (const host of ["evil.example; script-src *", "a b", "x'y", "", "host:99999999"]) {
      assert.equal(contentSecurityPolicy(host), contentSecurityPolicy(undefined), host);
    }
    assert.match(contentSecurityPolicy("[::1]:8080"), /ws:\/\/\[::1\]:8080/);
  });

  it("serves assets with their content types; hashed names are immutable, others revalidate", async () => {
    const js = await get(port, "/assets/main-ABCD1234.js");
    assert.equal(js.status, 200);
    assert.equal(js.body, "console.log(1)");
    assert.equal(js.headers["content-type"], "text/javascript; charset=utf-8");
    assert.equal(js.headers["cache-control"], "public, max-age=31536000, immutable");
    assert.equal(js.headers["x-content-type-options"], "nosniff");
    assert.equal(js.headers["content-security-policy"], undefined, "the CSP governs documents");
    const css = await get(port, "/assets/main-ABCD1234.css");
    assert.equal(css.headers["content-type"], "text/css; charset=utf-8");
    const txt = await get(port, "/assets/notes.txt");
    assert.equal(txt.headers["content-type"], "text/plain; charset=utf-8");
    assert.equal(txt.headers["cache-control"], "no-cache");
  });

  it("answers HEAD without a body and If-None-Match with 304", async () => {
    const head = await get(port, "/assets/main-ABCD1234.js", "HEAD");
    assert.equal(head.status, 200);
    assert.equal(head.body, "");
    assert.equal(head.headers["content-length"], String("console.log(1)".length));
    const etag = String(head.headers.etag);
    assert.match(etag, /^"[A-Za-z0-9_-]{22}"$/);
    const again = await get(port, "/assets/main-ABCD1234.js", "GET", { "if-none-match": etag });
    assert.equal(again.status, 304);
    assert.equal(again.body, "");
    const other = await get(port, "/assets/main-ABCD1234.js", "GET", { "if-none-match": '"something-else"' });
    assert.equal(other.status, 200);
  });

  it("refuses traversal and unknown files under /assets with 404, never reading outside the list", async () => {
    for (const path of [...TRAVERSALS, "/assets/tool.exe", "/assets/missing-ABCD1234.js"]) {
      const a = await get(port, path);
      assert.equal(a.status, 404, path);
      assert.equal(a.body, "not found\n", path);
      assert.doesNotMatch(a.body, /SECRET/);
    }
  });

  it("leaves other methods and paths to the rest of the server", async () => {
    for (const [method, path] of [
      ["POST", "/"],
      ["PUT", "/assets/main-ABCD1234.js"],
      ["OPTIONS", "/"],
      ["GET", "/secret.txt"],
      ["GET", "/../secret.txt"],
      ["GET", "/chat.v1.GroupService/ListGroups"],
      ["GET", "/metrics"],
      ["GET", "/readyz"],
      ["GET", "/assetsx/main-ABCD1234.js"],
      ["GET", "/assets"],
      ["GET", "http://127.0.0.1/"],
    ] as const) {
      const a = await get(port, path, method);
      assert.equal(a.status, 418, `${method} ${path}`);
    }
  });

  it("fails to load a tree without index.html (the build has not run)", async () => {
    await assert.rejects(loadStaticFiles(join(dir, "nowhere")), /ENOENT/);
  });
});

describe("the web app on the server's port", () => {
  let server: TestServer;
  let assets: string[];

  before(async () => {
    server = await startTestServer();
    const index = await readFile(join(WEB_APP_ROOT, "index.html"), "utf8");
    assets = [...index.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1] as string);
  });

  after(async () => {
    await server.stop();
  });

  it("serves the built index.html and every asset it names, over HTTP/1.1 and HTTP/2", async () => {
    assert.ok(assets.some((a) => a.endsWith(".js")) && assets.some((a) => a.endsWith(".css")), `assets: ${assets.join(", ")}`);
    for (const fetchOver of [get, get2]) {
      const page = await fetchOver(server.port, "/");
      assert.equal(page.status, 200);
      assert.equal(page.body, await readFile(join(WEB_APP_ROOT, "index.html"), "utf8"));
      assert.equal(page.headers["content-type"], "text/html; charset=utf-8");
      assert.match(String(page.headers["content-security-policy"]), new RegExp(`connect-src 'self' ws://127\\.0\\.0\\.1:${server.port} `));
      for (const asset of assets) {
        const a = await fetchOver(server.port, asset);
        assert.equal(a.status, 200, asset);
        assert.equal(a.body, await readFile(join(WEB_APP_ROOT, asset), "utf8"), asset);
        assert.equal(a.headers["content-type"], asset.endsWith(".js") ? "text/javascript; charset=utf-8" : "text/css; charset=utf-8");
        assert.equal(a.headers["cache-control"], "public, max-age=31536000, immutable");
      }
      for (const path of ["/assets/../package.json", "/assets/%2e%2e/%2e%2e/package.json", "/assets/nope.js"]) {
        const a = await fetchOver(server.port, path);
        assert.equal(a.status, 404, path);
        assert.doesNotMatch(a.body, /chat-backend/);
      }
    }
  });

  it("leaves the RPC paths, /metrics, /readyz and the API's 404 as they were", async () => {
    for (const protocol of ["grpc", "grpc-web", "connect"] as const) {
      const c = clientsFor(server.baseUrl, protocol);
      const res = await c.auth.register({ username: `web${protocol.replace("-", "")}${process.pid % 1000}`, password: "correct horse battery" });
      assert.ok(res.tokens?.accessToken, protocol);
      await rejectsWith(c.groups.listGroups({}), Code.Unauthenticated);
    }
    const connectGet = await get(server.port, "/chat.v1.GroupService/ListGroups?encoding=json&message=%7B%7D&connect=v1");
    assert.notEqual(connectGet.headers["content-type"], "text/html; charset=utf-8");
    assert.equal((await get(server.port, "/metrics")).status, 200);
    assert.equal((await get(server.port, "/readyz")).body, "ready\n");
    const other = await get(server.port, "/favicon.ico");
    assert.deepEqual([other.status, other.body], [404, "not found\n"]);
    assert.equal(other.headers["content-security-policy"], undefined);
    const post = await get(server.port, "/", "POST");
    assert.equal(post.status, 404, "POST / is the API's, which has no such method");
  });

  it("serves the page over TLS too, HTTP/1.1 and HTTP/2 (ALPN)", async () => {
    const certs = await makeTestCertificates();
    const secure = await startTestServer({ TLS_CERT_FILE: certs.certFile, TLS_KEY_FILE: certs.keyFile });
    try {
      for (const page of [await get(secure.port, "/", "GET", {}, certs.ca), await get2(secure.port, "/", certs.ca)]) {
        assert.equal(page.status, 200);
        assert.equal(page.headers["content-type"], "text/html; charset=utf-8");
        assert.match(String(page.headers["content-security-policy"]), new RegExp(`wss://127\\.0\\.0\\.1:${secure.port};`));
      }
      const asset = assets[0] as string;
      assert.equal((await get2(secure.port, asset, certs.ca)).body, await readFile(join(WEB_APP_ROOT, asset), "utf8"));
    } finally {
      await secure.stop();
      await certs.remove();
    }
  });

  it("serves nothing at / with WEB_APP=false", async () => {
    const off = await startTestServer({ WEB_APP: "false" });
    try {
      for (const path of ["/", ...assets]) {
        const a = await get(off.port, path);
        assert.equal(a.status, 404, path);
        assert.equal(a.headers["content-security-policy"], undefined);
      }
      assert.equal((await get(off.port, "/readyz")).status, 200);
    } finally {
      await off.stop();
    }
  });
});
