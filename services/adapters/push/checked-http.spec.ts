import assert from "node:assert/strict";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { RefusedAddressError, createCheckedHttp } from "./checked-http.js";

describe("checked-http", () => {
  let server: http.Server;
  let port = 0;
  let hits = 0;
  before(async () => {
    server = http.createServer((req, res) => {
      hits += 1;
      req.resume();
      if (req.url === "/redirect") return void res.writeHead(302, { location: `http://127.0.0.1:${port}/elsewhere` }).end();
      if (req.url === "/big") return void res.writeHead(200).end("y".repeat(10_000));
      if (req.url === "/slow") return;
      res.writeHead(200, { "x-host": req.headers.host ?? "" }).end("ok");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("refuses a name the system resolver maps to loopback, and loopback literals, before connecting", async () => {
    const client = createCheckedHttp({ allowPrivate: false, timeoutMs: 2000 });
    try {
      const before = hits;
      for (const [url, reason] of [
        [`http://localhost:${port}/`, /^localhost resolves to (127\.\d+\.\d+\.\d+|::1), which is not a public address$/],
        [`http://127.0.0.1:${port}/`, /^127\.0\.0\.1 is not a public address$/],
        [`http://[::1]:${port}/`, /^::1 is not a public address$/],
      ] as const) {
        await assert.rejects(client.post(new URL(url), {}, "x"), (err: unknown) => err instanceof RefusedAddressError && reason.test(err.message));
      }
      assert.equal(hits, before);
    } finally {
      client.close();
    }
  });

  it("with allowPrivate, posts through the system resolver, keeps the Host header and returns a 3xx as it is", async () => {
    const client = createCheckedHttp({ allowPrivate: true, timeoutMs: 2000, maxResponseBytes: 100 });
    try {
      const ok = await client.post(new URL(`http://localhost:${port}/`), {}, "x");
      assert.equal(ok.status, 200);
      assert.equal(ok.headers["x-host"], `localhost:${port}`);
      const before = hits;
      const moved = await client.post(new URL(`http://127.0.0.1:${port}/redirect`), {}, "x");
      assert.equal(moved.status, 302);
      assert.equal(hits, before + 1, "the redirect was not followed");
      const big = await client.post(new URL(`http://127.0.0.1:${port}/big`), {}, "x");
      assert.equal(big.body.length, 100);
    } finally {
      client.close();
    }
  });

  it("bounds a slow answer and a slow resolver by the timeout", async () => {
    const client = createCheckedHttp({ allowPrivate: true, timeoutMs: 200, resolve: () => new Promise(() => {}) });
    try {
      await assert.rejects(client.post(new URL(`http://127.0.0.1:${port}/slow`), {}, "x"), /within 200 ms/);
      await assert.rejects(client.post(new URL(`http://push.example.test:${port}/`), {}, "x"), /resolving push\.example\.test took over 200 ms/);
    } finally {
      client.close();
    }
  });
});
