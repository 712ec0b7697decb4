/**
 * CORS: a browser page on another origin may send `x-request-id` (the
 * preflight allows it) and read it back (exposed), on the server's own port
 * and behind Envoy (envoy/envoy.yaml lists the same headers).
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CORS_HEADERS } from "../../services/server/app.js";
import { type TestServer, registerUser, startTestServer } from "../support/test-server.js";

const list = (value: string | null | undefined) => (value ?? "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);

describe("CORS", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it("a preflight allows x-request-id, and the answer exposes it", async () => {
    const path = "/chat.v1.GroupService/ListGroups";
    const preflight = await fetch(`${server.baseUrl}${path}`, {
      method: "OPTIONS",
      headers: {
        origin: "http://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, connect-protocol-version, x-request-id",
      },
    });
    assert.equal(preflight.status, 204);
    const allowed = list(preflight.headers.get("access-control-allow-headers"));
    for (const h of ["authorization", "content-type", "connect-protocol-version", "x-request-id"]) assert.ok(allowed.includes(h), `allows ${h}`);

    const alice = await registerUser(server.baseUrl, "connect", "cors");
    const res = await fetch(`${server.baseUrl}${path}`, {
      method: "POST",
      headers: {
        origin: "http://app.example",
        "content-type": "application/json",
        "connect-protocol-version": "1",
        authorization: `Bearer ${alice.token}`,
        "x-request-id": "cors-req-1",
      },
      body: "{}",
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-request-id"), "cors-req-1", "the client's id is honoured");
    assert.ok(list(res.headers.get("access-control-expose-headers")).includes("x-request-id"), "a page may read the id");
  });

  it("envoy.yaml's cors policy allows and exposes the same headers as the server", async () => {
    const yaml = await readFile(join(import.meta.dirname, "../../envoy/envoy.yaml"), "utf8");
    const field = (name: string) => list(new RegExp(`^\\s*${name}:\\s*"([^"]*)"`, "m").exec(yaml)?.[1]);
    assert.deepEqual(field("allow_headers").sort(), list(CORS_HEADERS["access-control-allow-headers"]).sort());
    assert.deepEqual(field("expose_headers").sort(), list(CORS_HEADERS["access-control-expose-headers"]).sort());
  });
});
