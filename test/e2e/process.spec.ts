/**
 * The server as `npm start` runs it (compiled to dist/ first): a real child process on the embedded
 * defaults that keeps its data across restarts, rejects bad configuration
 * with every problem listed, and shuts down cleanly on SIGTERM.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { freePort } from "../support/helpers.js";
import { WsStreamEnd, wsSubscribe } from "../support/stream-reader.js";
import { clientsFor, registerUser } from "../support/test-server.js";

const MAIN = join(import.meta.dirname, "../../services/main.ts");

interface Running {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** run starts the server; `viaNpm` runs `npm start` in a process group of its own, as a terminal's foreground job. */
function run(env: Record<string, string>, viaNpm = false): Running {
  const [command, args] = viaNpm ? ["npm", ["start", "--silent"]] : [process.execPath, ["--import", "tsx", MAIN]];
  const child = spawn(command, args, {
    cwd: join(import.meta.dirname, "../.."),
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: viaNpm,
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function waitForOutput(r: Running, pattern: RegExp, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pattern.test(r.output())) {
    if (r.child.exitCode !== null) throw new Error(`server exited early:\n${r.output()}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}:\n${r.output()}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

describe("server process", () => {
  let dataDir: string;
  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "chat-proc-"));
  });
  after(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it("starts with `npm start` on the embedded defaults, keeps data across a restart, and exits 0 on SIGTERM", async () => {
    const port = await freePort();
    const env = { DATA_DIR: dataDir, PORT: String(port) };
    const first = run(env, true); // SIGTERM goes to npm, which must pass it on to the server
    await waitForOutput(first, /chat server listening/);
    const baseUrl = `http://127.0.0.1:${port}`;
    // `npm start` runs the compiled server (dist/, scripts/build-server.mjs): the web app is copied beside it.
    const page = await fetch(`${baseUrl}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<script type="module" src="\/assets\//);
    const alice = await registerUser(baseUrl, "connect", "proc");
    const { group } = await alice.groups.createGroup({ name: "persisted" });
    assert.ok(group);
    await alice.messages.sendMessage({ groupId: group.groupId, text: "still here?", clientMessageId: "p1" });
    // Tokens offered as WebSocket subprotocols (as browsers must) stay out of the logs too, valid or not.
    const ws = wsSubscribe(port, alice.token, [], { via: "protocol" });
    await ws.waitReady();
    const forged = wsSubscribe(port, "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln", [], { via: "protocol" });
    await forged.waitDone();
    first.child.kill("SIGTERM");
    assert.equal(await first.exited, 0, first.output());
    assert.match(first.output(), /"msg":"stopped"/);
    await assert.rejects(
      alice.auth.login({ username: "x", password: "y" }),
      (e: { code?: number }) => e.code === Code.Unavailable,
      "nothing is left listening",
    );
    assert.doesNotMatch(first.output(), /correct horse|eyJ/, "no password or token in the logs");

    const second = run(env);
    await waitForOutput(second, /chat server listening/);
    // The old access token still verifies: the signing key persisted.
    const history = await alice.messages.listMessages({ groupId: group.groupId });
    assert.deepEqual(
      history.messages.map((m) => m.text),
      ["still here?"],
    );
    const again = clientsFor(baseUrl, "grpc");
    const login = await again.auth.login({ username: alice.username, password: "correct horse battery" });
    assert.equal(login.user?.userId, alice.userId);
    second.child.kill("SIGTERM");
    assert.equal(await second.exited, 0);
  });

  it("stops gracefully on Ctrl-C under `npm start` (SIGINT to the process group, which npm passes on again)", async () => {
    const port = await freePort();
    const r = run({ DATA_DIR: dataDir, PORT: String(port) }, true);
    await waitForOutput(r, /chat server listening/);
    const bob = await registerUser(`http://127.0.0.1:${port}`, "grpc", "ctrlc");
    const ws = wsSubscribe(port, bob.token, []);
    await ws.waitReady();
    // What a terminal does on Ctrl-C: SIGINT to every process of the foreground group (npm and the server);
    // npm then sends the server its own SIGINT. Twice more for good measure.
    process.kill(-r.child.pid!, "SIGINT");
    await new Promise((res) => setTimeout(res, 20));
    process.kill(-r.child.pid!, "SIGINT");
    assert.equal(await r.exited, 0, r.output());
    assert.match(r.output(), /"msg":"shutting down"/);
    assert.match(r.output(), /"msg":"stopped"/, "the stop ran to its end");
    await ws.waitDone();
    assert.ok(ws.error instanceof WsStreamEnd && ws.error.closeCode === 4014, `the live stream was told to reconnect (UNAVAILABLE), not cut: ${String(ws.error)}`);
  });

  it("refuses to start with bad settings, naming every one", async () => {
    const r = run({ DATA_DIR: dataDir, PORT: "http", RETENTION: "forever", MAX_TEXT_BYTES: "-1" });
    assert.equal(await r.exited, 2);
    for (const name of ["PORT", "RETENTION", "MAX_TEXT_BYTES"]) assert.match(r.output(), new RegExp(name));
  });

  it("answers with UNAVAILABLE, not a hang, while it is down", async () => {
    const port = await freePort();
    const c = clientsFor(`http://127.0.0.1:${port}`, "grpc");
    await assert.rejects(c.auth.login({ username: "x", password: "y" }), (e: { code?: number }) => e.code === Code.Unavailable);
  });
});
