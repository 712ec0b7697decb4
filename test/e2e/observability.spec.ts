/**
 * Observability: structured JSON logs with request ids and user ids, never
 * tokens or passwords; request ids echoed to the client.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { type TestServer, registerUser, startTestServer } from "../support/test-server.js";

describe("logs", () => {
  let server: TestServer;
  const lines: Record<string, unknown>[] = [];
  before(async () => {
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split("\n")) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    const logger = pino({ level: "debug", redact: { paths: ["password", "token", "authorization"], censor: "[redacted]" } }, sink);
    server = await startTestServer({}, { logger });
  });
  after(async () => {
    await server.stop();
  });

  it("carries the request id and the user id, echoes the id, and never logs secrets", async () => {
    const alice = await registerUser(server.baseUrl, "connect", "obs");
    let echoed: string | null = null;
    await alice.groups.listGroups({}, { headers: { "x-request-id": "req-123" }, onHeader: (h) => (echoed = h.get("x-request-id")) });
    assert.equal(echoed, "req-123");
    const done = lines.find((l) => l.requestId === "req-123");
    assert.equal(done?.rpc, "chat.v1.GroupService/ListGroups");
    assert.equal(done?.userId, alice.userId);
    assert.equal(done?.code, "OK");

    const err = await alice.groups.getGroup({ groupId: "nope" }).catch((e: unknown) => ConnectError.from(e));
    assert.ok(err instanceof ConnectError && err.code === Code.InvalidArgument);
    const generated = err.metadata.get("x-request-id");
    assert.ok(generated && generated.length > 8, "a request id is made up when none was sent");
    const failed = lines.find((l) => l.requestId === generated);
    assert.equal(failed?.code, "InvalidArgument");
    assert.equal(failed?.userId, alice.userId);

    const all = JSON.stringify(lines);
    assert.ok(!all.includes(alice.token ?? "no-token"), "no access token in the logs");
    assert.ok(!all.includes("correct horse battery"), "no password in the logs");
  });
});
