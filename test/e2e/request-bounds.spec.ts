/**
 * Request bounds under attack (issue 12, point 2): a client without a token
 * opens many HTTP/2 streams that announce a large request message, send most
 * of it and stop. The server, a real child process, answers or refuses every
 * stream within the request-body deadline (plus the unread-body grace), its
 * RSS grows less than the bound stated in docs/architecture.md ("Bounds"),
 * and it still serves a normal client afterwards.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { freePort } from "../support/helpers.js";
import { registerUser } from "../support/test-server.js";

const MAIN = join(import.meta.dirname, "../../services/main.ts");

/** The attack of the issue: 4 connections x 500 streams, each announcing 65,000 bytes and sending 60,000. */
const CONNECTIONS = 4;
const STREAMS = 500;
const ANNOUNCED = 65_000;
const SENT = 60_000;
/** Settings of the child: a short body deadline keeps the test fast; the rest are the defaults. */
const BODY_TIMEOUT_MS = 1000;
const STREAMS_PER_CONNECTION = 100;
/** UNREAD_BODY_GRACE_MS mirrors one-port-server.ts: how long an answered stream may keep sending before its reset. */
const UNREAD_BODY_GRACE_MS = 1000;
/**
 * RSS_BOUND is the stated bound (docs/architecture.md, "Bounds") for these
 * connections without a token: per connection, MAX_STREAMS_PER_CONNECTION
 * streams x (64 KiB stream window + 64 KiB held by a streamed body, or the
 * 8 KiB cap of a unary one, + one 16 KiB DATA frame), plus 32 MiB of
 * allocator slack.
 */
const RSS_BOUND = CONNECTIONS * STREAMS_PER_CONNECTION * (64 + 64 + 16) * 1024 + 32 * 1024 * 1024;

/** Outcome is how one attacking stream ended: the gRPC status it got, or how it was refused. */
type Outcome = { status: string } | { refused: number } | { unanswered: true };

async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  if (!kb) throw new Error("no VmRSS");
  return Number(kb) * 1024;
}

/**
 * attack opens `STREAMS` streams to `path` on each of `CONNECTIONS`
 * connections, each announcing a message of `announced` bytes and sending
 * `sent` bytes of it without ending, and resolves with every stream's outcome
 * once each has one or `waitMs` passed.
 */
async function attack(port: number, path: string, announced: number, sent: number, waitMs: number): Promise<Outcome[]> {
  const sessions: http2.ClientHttp2Session[] = [];
  const outcomes: Promise<Outcome>[] = [];
  const body = Buffer.alloc(sent);
  body.writeUInt8(0, 0);
  body.writeUInt32BE(announced, 1);
  for (let c = 0; c < CONNECTIONS; c++) {
    // The attacker queues all its data at once: its own session must not refuse it (maxSessionMemory, MB).
    const session = http2.connect(`http://127.0.0.1:${port}`, { maxSessionMemory: 1000 });
    session.on("error", () => {});
    sessions.push(session);
    for (let i = 0; i < STREAMS; i++) {
      const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
      outcomes.push(
        new Promise<Outcome>((resolve) => {
          let status: string | undefined;
          const timer = setTimeout(() => resolve({ unanswered: true }), waitMs);
          const take = (headers: http2.IncomingHttpHeaders) => {
            const s = headers["grpc-status"];
            if (typeof s === "string") status = s;
          };
          stream.on("response", take);
          stream.on("trailers", take);
          stream.on("error", () => {});
          stream.on("data", () => {});
          stream.on("close", () => {
            clearTimeout(timer);
            resolve(status !== undefined ? { status } : { refused: stream.rstCode ?? -1 });
          });
        }),
      );
      stream.write(body);
    }
  }
  const results = await Promise.all(outcomes);
  for (const s of sessions) s.destroy();
  return results;
}

describe("request bounds under attack (child process)", () => {
  let dataDir: string;
  let child: ChildProcess;
  let output = "";
  let port: number;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "chat-bounds-"));
    port = await freePort();
    child = spawn(process.execPath, ["--import", "tsx", MAIN], {
      cwd: join(import.meta.dirname, "../.."),
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "",
        DATA_DIR: dataDir,
        PORT: String(port),
        REQUEST_BODY_TIMEOUT: `${BODY_TIMEOUT_MS}ms`,
        MAX_STREAMS_PER_CONNECTION: String(STREAMS_PER_CONNECTION),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout?.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      output += d.toString();
    });
    const deadline = Date.now() + 20_000;
    while (!/chat server listening/.test(output)) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`server did not start:\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // One attack round before any baseline: the first target's RSS must not include what the first attack loads once.
    const warm = await registerUser(`http://127.0.0.1:${port}`, "grpc", "bounds");
    await warm.groups.createGroup({ name: "warm-up" });
    await attack(port, "/chat.v1.AuthService/Login", 1000, 900, 30_000);
  });

  after(async () => {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
    await rm(dataDir, { recursive: true, force: true });
  });

  for (const target of [
    { path: "/chat.v1.MessageService/SendMessage", announced: ANNOUNCED, sent: SENT, status: "16", why: "no token: refused before the body is read" },
    { path: "/chat.v1.AuthService/Login", announced: ANNOUNCED, sent: SENT, status: "8", why: "public, but over its small size cap" },
    { path: "/chat.v1.AuthService/Login", announced: 1000, sent: 900, status: "4", why: "public, under the cap, never completed: the body deadline" },
    {
      path: "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      announced: 8000,
      sent: 7000,
      status: "4",
      why: "public bidirectional stream, a message under the cap never completed: the deadline",
      // Its RSS is logged, not asserted: a stream handed to its handler costs connect-node's per-call machinery, not
      // counted by the stated body bound (docs/architecture.md, "Bounds"; measured +75 MiB for 4 x 100 open streams).
      // Before the front door these streams were never answered, which the assertions above catch.
      rssNotBounded: true,
    },
  ] as { path: string; announced: number; sent: number; status: string; why: string; rssNotBounded?: boolean }[]) {
    it(`answers all ${CONNECTIONS * STREAMS} streams to ${target.path} (${target.why}) with bounded RSS`, { timeout: 60_000 }, async () => {
      const pid = child.pid!;
      // A normal client first, so that the baseline includes what every call loads once.
      const warm = await registerUser(`http://127.0.0.1:${port}`, "grpc", "bounds");
      await warm.groups.createGroup({ name: "warm-up" });
      const baseline = await rssOf(pid);
      let peak = baseline;
      const sampler = setInterval(() => {
        rssOf(pid).then(
          (rss) => {
            peak = Math.max(peak, rss);
          },
          () => {},
        );
      }, 50);
      // Streams over the per-connection cap wait in the client for a free slot: at most
      // STREAMS / STREAMS_PER_CONNECTION rounds, each within the deadline and the grace.
      const rounds = Math.ceil(STREAMS / STREAMS_PER_CONNECTION);
      const waitMs = rounds * (BODY_TIMEOUT_MS + UNREAD_BODY_GRACE_MS) + 10_000;
      let outcomes: Outcome[];
      try {
        outcomes = await attack(port, target.path, target.announced, target.sent, waitMs);
      } finally {
        clearInterval(sampler);
      }
      peak = Math.max(peak, await rssOf(pid));
      const tally = new Map<string, number>();
      for (const o of outcomes) {
        const key = "status" in o ? `status ${o.status}` : "refused" in o ? `reset ${o.refused}` : "unanswered";
        tally.set(key, (tally.get(key) ?? 0) + 1);
      }
      const growth = peak - baseline;
      console.log(`# ${target.path} (${target.why}): ${JSON.stringify(Object.fromEntries(tally))}; RSS ${(baseline / 2 ** 20).toFixed(0)} MiB -> peak ${(peak / 2 ** 20).toFixed(0)} MiB (+${(growth / 2 ** 20).toFixed(1)} MiB; bound ${(RSS_BOUND / 2 ** 20).toFixed(0)} MiB)`);
      assert.equal(tally.get("unanswered") ?? 0, 0, `every stream is answered or refused: ${JSON.stringify(Object.fromEntries(tally))}`);
      const answered = [...tally.entries()].filter(([k]) => k.startsWith("status")).reduce((n, [, v]) => n + v, 0);
      assert.ok(answered > 0, "the server answered with statuses, not only resets");
      // Each target its own status (an answered stream reset after the unread-body grace still counts as answered).
      const expected = new RegExp(`^status ${target.status}$|^reset (0|7|8)$`);
      for (const key of tally.keys()) assert.match(key, expected, `unexpected outcome ${key} for ${target.path} (${target.why})`);
      if (!target.rssNotBounded) assert.ok(growth < RSS_BOUND, `RSS grew ${growth} bytes, over the stated bound of ${RSS_BOUND}`);
      // The server still serves a normal client.
      const after = await registerUser(`http://127.0.0.1:${port}`, "grpc", "after");
      const { group } = await after.groups.createGroup({ name: "after the attack" });
      const sent = await after.messages.sendMessage({ groupId: group!.groupId, text: "still serving", clientMessageId: "a1" });
      assert.equal(sent.message?.text, "still serving");
    });
  }
});
