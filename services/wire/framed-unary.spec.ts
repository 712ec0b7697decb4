import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { pino } from "pino";
import { AccessTokens } from "../auth/access-tokens.js";
import { isChatError } from "../core/errors.js";
import { type FastUnaryRoute, grpcTimeoutMs, serveFastUnary } from "./framed-unary.js";

describe("grpcTimeoutMs", () => {
  it("reads every unit of the gRPC spec as milliseconds, and no header as no deadline", () => {
    assert.deepEqual(
      ["2H", "3M", "10S", "250m", "1500u", "2000000n", "99999999S"].map(grpcTimeoutMs),
      [7_200_000, 180_000, 10_000, 250, 1.5, 2, 99_999_999_000],
    );
    assert.equal(grpcTimeoutMs(undefined), undefined);
  });

  it("refuses anything else as InvalidArgument", () => {
    for (const bad of ["", "10", "S", "123456789S", "1.5S", "-1S", "10s", " 10S", ["10S", "10S"]]) {
      assert.throws(() => grpcTimeoutMs(bad), (e) => isChatError(e, "InvalidArgument") && /grpc-timeout .* is malformed/.test(e.message), String(bad));
    }
  });
});

describe("serveFastUnary deadlines", () => {
  it("answers DEADLINE_EXCEEDED at the deadline while the handler still runs, and reports no other outcome later", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fast-unary-"));
    const tokens = await AccessTokens.load(join(dir, "k.jwk"), { issuer: "chat", audience: "chat", ttlMs: 60_000 });
    const { token } = await tokens.issue({ id: "u1", username: "ann" }, "s1", Date.now());
    const results: (Code | undefined)[] = [];
    let handlerDone = false;
    const route: FastUnaryRoute = {
      rpc: "test.v1.Slow/Call",
      async handle() {
        await new Promise((r) => setTimeout(r, 400));
        handlerDone = true;
        return new Uint8Array([8, 1]);
      },
      onResult: (code) => results.push(code),
    };
    const deps = { logger: pino({ level: "silent" }) };
    const principal = await tokens.verify(token, Date.now());
    // As the front door does: the request message, read, for the verified caller.
    const server = http2.createServer((req, res) => {
      const arrived = performance.now();
      req.resume();
      req.once("end", () => serveFastUnary(route, "grpc", req, res, deps, principal, Buffer.alloc(0), arrived));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    try {
      const started = Date.now();
      const status = await new Promise<{ status: string | undefined; ms: number }>((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": "/test.v1.Slow/Call", "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${token}`, "grpc-timeout": "100m" });
        let status: string | undefined;
        req.on("response", (h) => (status ??= h["grpc-status"] as string | undefined));
        req.on("trailers", (t) => (status ??= t["grpc-status"] as string | undefined));
        req.on("data", () => {});
        req.on("end", () => resolve({ status, ms: Date.now() - started }));
        req.on("error", reject);
        req.end(Buffer.from([0, 0, 0, 0, 0])); // one empty message
      });
      assert.equal(status.status, String(Code.DeadlineExceeded));
      assert.equal(handlerDone, false, "answered before the handler finished");
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(handlerDone, true);
      assert.deepEqual(results, [Code.DeadlineExceeded], "the late result is not reported");
    } finally {
      session.close();
      await new Promise((r) => server.close(r));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
