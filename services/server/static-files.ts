/**
 * The web app's files (web/public/, built by scripts/build-web.mjs) served
 * at `/` and `/assets/<file>` on the API's port. Every file is read into
 * memory once at start: a request can only name a file of that list, so no
 * path reaches the file system (no traversal, no symlink surprises).
 */
import { createHash } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import type http from "node:http";
import type http2 from "node:http2";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";

type AnyRequest = http.IncomingMessage | http2.Http2ServerRequest;
type AnyResponse = http.ServerResponse | http2.Http2ServerResponse;

/** WEB_APP_ROOT is where the built web app lives in the repository (index.html and assets/). */
export const WEB_APP_ROOT = fileURLToPath(new URL("../../web/public/", import.meta.url));

/** CONTENT_TYPES maps the extensions the build emits to their media types; other files are not served. */
const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

/** HASHED_NAME matches the build's content-hashed asset names (`main-ABCD1234.js`): those never change, so they may be cached for good. */
const HASHED_NAME = /-[A-Z0-9]{8}\.[a-z]+$/;

/** HOST_HEADER is what a Host (or :authority) value may hold to be echoed into the CSP: a name or address and a port. */
const HOST_HEADER = /^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/;

interface StaticFile {
  readonly body: Buffer;
  readonly contentType: string;
  readonly cacheControl: string;
  readonly etag: string;
}

/** StaticFiles answers the web app's requests; `handles` says which requests those are. */
export interface StaticFiles {
  /**
   * handles is true for GET and HEAD of `/`, `/index.html` and `/assets/...`
   * (known or not: unknown assets get 404 here). Any other method or path,
   * in particular every RPC path (`/chat.v1.*`, always POST or a Connect GET
   * under its service), `/metrics`, `/readyz` and the WebSocket upgrades, is
   * not the web app's.
   */
  handles(req: AnyRequest): boolean;
  /** serve answers a request `handles` took: 200 with the file, 304 on a matching If-None-Match, or 404. */
  serve(req: AnyRequest, res: AnyResponse): void;
  /** files lists the served paths (`/`, `/assets/...`), for logs and tests. */
  readonly files: readonly string[];
}

/**
 * loadStaticFiles reads `root`/index.html and every file directly in
 * `root`/assets/ (subfolders and unknown extensions are skipped). It throws
 * when index.html is missing: the build (npm run build:web) has not run.
 */
export async function loadStaticFiles(root: string = WEB_APP_ROOT): Promise<StaticFiles> {
  const files = new Map<string, StaticFile>();
  const add = (path: string, body: Buffer, contentType: string, cacheControl: string) =>
    files.set(path, { body, contentType, cacheControl, etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"` });
  // index.html names the current assets, so it is revalidated on every load.
  add("/", await readFile(join(root, "index.html")), CONTENT_TYPES[".html"] as string, "no-cache");
  const assets = await readdir(join(root, "assets"), { withFileTypes: true }).catch(() => []);
  for (const entry of assets) {
    const type = CONTENT_TYPES[extname(entry.name)];
    if (!entry.isFile() || type === undefined) continue;
    const cache = HASHED_NAME.test(entry.name) ? "public, max-age=31536000, immutable" : "no-cache";
    add(`/assets/${entry.name}`, await readFile(join(root, "assets", entry.name)), type, cache);
  }
  return {
    files: [...files.keys()],
    handles(req) {
      if (req.method !== "GET" && req.method !== "HEAD") return false;
      const path = pathOf(req.url);
      return path === "/" || path === "/index.html" || path.startsWith("/assets/");
    },
    serve(req, res) {
      const path = pathOf(req.url);
      const file = files.get(path === "/index.html" ? "/" : path);
      const common = { "x-content-type-options": "nosniff", "referrer-policy": "no-referrer" };
      if (!file) {
        res.writeHead(404, { ...common, "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
        res.end("not found\n");
        return;
      }
      const headers: Record<string, string> = {
        ...common,
        "content-type": file.contentType,
        "cache-control": file.cacheControl,
        etag: file.etag,
      };
      if (file.contentType.startsWith("text/html")) {
        headers["content-security-policy"] = contentSecurityPolicy(hostOf(req));
        headers["x-frame-options"] = "DENY";
      }
      if (req.headers["if-none-match"] === file.etag) {
        res.writeHead(304, headers);
        res.end();
        return;
      }
      headers["content-length"] = String(file.body.length);
      res.writeHead(200, headers);
      if (req.method === "HEAD") res.end();
      else res.end(file.body);
    },
  };
}

/**
 * contentSecurityPolicy allows the page only its own origin's scripts,
 * styles, images and calls, plus WebSockets to the same host (`host` when it
 * is a well-formed Host header; CSP 3's 'self' covers ws: and wss: too, the
 * explicit sources are for browsers that predate it). No inline script or
 * style, no plugins, no framing, no <base> rewriting.
 */
export function contentSecurityPolicy(host: string | undefined): string {
  const ws = host !== undefined && HOST_HEADER.test(host) ? ` ws://${host} wss://${host}` : "";
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    `connect-src 'self'${ws}`,
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/** pathOf is the URL's path without its query; a path that is not absolute maps to nothing served. */
function pathOf(url: string | undefined): string {
  const path = (url ?? "").split("?", 1)[0] ?? "";
  return path.startsWith("/") ? path : "";
}

function hostOf(req: AnyRequest): string | undefined {
  const authority = req.headers[":authority"] ?? req.headers.host;
  return typeof authority === "string" ? authority : undefined;
}
