/**
 * Observability: structured JSON logs with request ids and user ids, never
 * tokens or passwords; request ids echoed to the client.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { type TestServer, registerUser, startTestServer } from "../support/test-server.js";

const run = promisify(execFile);
/** BUF is the buf CLI the project pins (devDependency), a stock client with gRPC reflection. */
const BUF = join(import.meta.dirname, "../../node_modules/.bin/buf");

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

  it("buf curl's reflection streams (it drops each one when done) log nothing at error or warn", async () => {
    const before = lines.length;
    for (const protocol of ["grpc", "grpcweb", "connect"]) {
      const { stdout } = await run(BUF, ["curl", "--protocol", protocol, "--http2-prior-knowledge", "--list-methods", server.baseUrl], { timeout: 20_000 });
      assert.match(stdout, /chat\.v1\.MessageService\/SendMessage/, `${protocol}: reflection answered`);
    }
    await new Promise((r) => setTimeout(r, 200)); // let the server see the resets
    const loud = lines.slice(before).filter((l) => (l.level as number) >= 40);
    assert.deepEqual(loud, [], "a dropped stream is the client's choice, not a server problem");
  });
});
