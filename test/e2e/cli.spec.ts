/**
 * The `chat` command-line client end to end: a real server on a fixed free
 * port and the CLI as real child processes (`node bin/chat.mjs ...`), one
 * session file per user.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type TestServer, startTestServer, uniqueName } from "../support/test-server.js";

const BIN = fileURLToPath(new URL("../../bin/chat.mjs", import.meta.url));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** freePort asks the OS for a free port (so that a restarted server keeps its address). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      s.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/** Cli runs the client as one user: its own session file and password. */
class Cli {
  readonly outputs: string[] = [];
  constructor(
    readonly username: string,
    readonly env: NodeJS.ProcessEnv,
  ) {}

  spawn(args: readonly string[]): ChildProcess {
    return spawn(process.execPath, [BIN, ...args], { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
  }

  /** run runs one command to completion (at most 20 s). */
  run(...args: string[]): Promise<Result> {
    const child = this.spawn(args);
    const res: Result = { code: null, stdout: "", stderr: "" };
    child.stdout?.on("data", (b: Buffer) => (res.stdout += b.toString()));
    child.stderr?.on("data", (b: Buffer) => (res.stderr += b.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    return new Promise((resolve, reject) => {
      child.once("error", reject);
      child.once("close", (code) => {
        clearTimeout(timer);
        res.code = code;
        this.outputs.push(res.stdout, res.stderr);
        resolve(res);
      });
    });
  }

  /** ok runs a command that must succeed and returns its stdout. */
  async ok(...args: string[]): Promise<string> {
    const res = await this.run(...args);
    assert.equal(res.code, 0, `chat ${args.join(" ")} failed: ${res.stderr}`);
    return res.stdout;
  }

  /** tail starts `chat tail ...` in the background. */
  tail(...args: string[]): Tail {
    return new Tail(this, this.spawn(["tail", ...args]));
  }
}

/** Tail is a running `chat tail` whose output can be awaited. */
class Tail {
  stdout = "";
  stderr = "";
  code: number | null | undefined = undefined;
  private readonly exited: Promise<number | null>;
  private wake: () => void = () => undefined;

  constructor(
    readonly cli: Cli,
    readonly child: ChildProcess,
  ) {
    child.stdout?.on("data", (b: Buffer) => {
      this.stdout += b.toString();
      this.wake();
    });
    child.stderr?.on("data", (b: Buffer) => {
      this.stderr += b.toString();
      this.wake();
    });
    this.exited = new Promise((resolve) =>
      child.once("close", (code) => {
        this.code = code;
        cli.outputs.push(this.stdout, this.stderr);
        this.wake();
        resolve(code);
      }),
    );
  }

  /** waitFor waits until stdout or stderr contains `text`. */
  async waitFor(stream: "stdout" | "stderr", text: string, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this[stream].includes(text)) {
      if (this.code !== undefined) throw new Error(`tail exited (${this.code}) before "${text}":\n${this.stdout}\n${this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for "${text}" on ${stream}:\n${this.stdout}\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** stop sends SIGINT (Ctrl-C) and resolves with the exit code. */
  async stop(): Promise<number | null> {
    if (this.code === undefined) this.child.kill("SIGINT");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

describe("chat CLI", () => {
  let server: TestServer;
  let dir: string;
  let alice: Cli;
  let bob: Cli;
  const tails: Tail[] = [];

  const cliFor = (username: string, password: string): Cli => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of Object.keys(env)) if (k.startsWith("CHAT_")) delete env[k];
    return new Cli(username, {
      ...env,
      CHAT_SERVER: server.baseUrl,
      CHAT_SESSION: join(dir, `${username}.json`),
      CHAT_PASSWORD: password,
    });
  };

  before(async () => {
    server = await startTestServer({ PORT: String(await freePort()) });
    dir = await mkdtemp(join(tmpdir(), "chat-cli-"));
    alice = cliFor(uniqueName("alice"), "alice's long password");
    bob = cliFor(uniqueName("bob"), "bob's long password");
  });

  after(async () => {
    await Promise.all(tails.map((t) => t.stop()));
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("prints usage, and exits 2 on usage errors and 1 on other errors", async () => {
    const [help, bare, wrong, unknown, notLoggedIn, readNothing] = await Promise.all([
      alice.run("help"),
      alice.run(),
      alice.run("send", "team"),
      alice.run("history", "team", "--frob"),
      alice.run("groups"),
      alice.run("read"),
    ]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: chat \[global options\] <command>/m);
    assert.match(help.stdout, /^ {2}read <group> +mark the group read up to its newest event$/m);
    assert.equal(bare.code, 2);
    assert.match(bare.stderr, /Usage: chat/);
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /^error: usage: chat send <group> <text\.\.\.>$/m);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^error: unknown option --frob$/m);
    assert.equal(notLoggedIn.code, 1);
    assert.match(notLoggedIn.stderr, /^error: unauthenticated: not logged in/m);
    assert.equal(readNothing.code, 2);
    assert.match(readNothing.stderr, /^error: usage: chat read <group>$/m);
  });

  it("registers, creates a group, sends, lists history and tails live messages", async () => {
    const [ra, rb] = await Promise.all([alice.ok("register", alice.username), bob.ok("register", bob.username)]);
    assert.match(ra, new RegExp(`^registered and logged in as ${alice.username} \\(user id \\S+\\)$`, "m"));
    assert.match(rb, new RegExp(`^registered and logged in as ${bob.username} `, "m"));
    const [whoami, wrongPassword] = await Promise.all([alice.ok("whoami"), alice.run("login", alice.username, "--password", "not the password")]);
    assert.match(whoami, new RegExp(`^${alice.username} \\(user id \\S+\\) on ${server.baseUrl}$`, "m"));
    const session = JSON.parse(await readFile(alice.env.CHAT_SESSION ?? "", "utf8")) as { tokens: Record<string, string> };
    assert.equal((await stat(alice.env.CHAT_SESSION ?? "")).mode & 0o777, 0o600);
    assert.equal(wrongPassword.code, 1);
    assert.match(wrongPassword.stderr, /^error: unauthenticated: /m);

    assert.match(await alice.ok("create-group", "team", "--member", bob.username), /^created group team \(id \S+\) with 2 members$/m);
    const [groupsText, groupsJson, membersText] = await Promise.all([alice.ok("groups"), bob.ok("groups", "--json"), bob.ok("members", "team")]);
    assert.match(groupsText, /^NAME\s+ROLE\s+MEMBERS\s+UNREAD\s+LAST SEQ\s+ID$/m);
    // Bob's addition (#2) is a membership event: nothing unread.
    assert.match(groupsText, /^team\s+owner\s+2\s+0\s+2\s+\S+$/m);
    const listed = JSON.parse(groupsJson) as { name: string; memberCount: number; myRole: string }[];
    assert.deepEqual(
      listed.map((g) => [g.name, g.memberCount, g.myRole]),
      [["team", 2, "MEMBER_ROLE_MEMBER"]],
    );
    assert.match(membersText, new RegExp(`^${alice.username}\\s+owner\\s`, "m"));
    assert.match(membersText, new RegExp(`^${bob.username}\\s+member\\s`, "m"));

    assert.equal(await alice.ok("send", "team", "hello", "bob"), "sent #3\n");
    assert.equal(await bob.ok("history", "team"), `[team #3] ${alice.username}: hello bob\n`);

    const tail = alice.tail("team");
    tails.push(tail);
    await tail.waitFor("stderr", "connected to");
    assert.equal(await bob.ok("send", "team", "hi alice"), "sent #4\n");
    await tail.waitFor("stdout", `[team #4] ${bob.username}: hi alice\n`);
    assert.equal(await tail.stop(), 0);
    assert.equal(tail.stdout, `[team #4] ${bob.username}: hi alice\n`);

    // A later tail resumes after the last event printed (the cursor is in the session file).
    assert.equal(await bob.ok("send", "team", "while you were away"), "sent #5\n");
    const again = alice.tail();
    tails.push(again);
    await again.waitFor("stdout", `[team #5] ${bob.username}: while you were away\n`);
    await again.stop();
    assert.equal(again.stdout, `[team #5] ${bob.username}: while you were away\n`);

    const history = await bob.run("history", "team", "--limit", "2");
    assert.equal(history.stdout, `[team #4] ${bob.username}: hi alice\n[team #5] ${bob.username}: while you were away\n`);
    assert.match(history.stderr, /^older: chat history team --before 4$/m);

    // Nothing printed holds a token or a password.
    for (const out of [...alice.outputs, ...bob.outputs]) {
      for (const secret of [session.tokens.accessToken, session.tokens.refreshToken, alice.env.CHAT_PASSWORD, bob.env.CHAT_PASSWORD]) {
        assert.ok(secret && !out.includes(secret), "a secret was printed");
      }
    }
  });

  it("reconnects a tail after a server restart without losing or repeating events", async () => {
    const tail = alice.tail("team");
    tails.push(tail);
    await tail.waitFor("stderr", "connected to");
    await server.restart();
    assert.equal(await bob.ok("send", "team", "after the restart"), "sent #6\n");
    await tail.waitFor("stdout", `[team #6] ${bob.username}: after the restart\n`);
    assert.match(tail.stderr, /^stream ended \(unavailable: .*\); reconnecting in [\d.]+s$/m);
    await tail.waitFor("stderr", "reconnected to");
    assert.equal(await alice.ok("send", "team", "me too"), "sent #7\n");
    await tail.waitFor("stdout", `[team #7] ${alice.username}: me too\n`);
    assert.equal(await tail.stop(), 0);
    assert.equal(tail.stdout, `[team #6] ${bob.username}: after the restart\n[team #7] ${alice.username}: me too\n`);
  });

  it("shows unread counts and marks a group read", async () => {
    // team: #3 alice, #4 #5 #6 bob, #7 alice; alice read up to #1 (her creation), bob up to #2 (his addition).
    assert.match(await alice.ok("groups"), /^team\s+owner\s+2\s+3\s+7\s+\S+$/m);
    assert.match(await bob.ok("groups"), /^team\s+member\s+2\s+2\s+7\s+\S+$/m);
    assert.equal(await alice.ok("read", "team"), "marked team read up to #7\n");
    assert.match(await alice.ok("groups"), /^team\s+owner\s+2\s+0\s+7\s+\S+$/m);
    const [listed] = JSON.parse(await alice.ok("groups", "--json")) as { lastReadSeq?: string; unreadCount?: number }[];
    assert.equal(listed?.lastReadSeq, "7");
    assert.equal(listed?.unreadCount, undefined, "0 is left out of proto JSON");
    assert.equal(JSON.parse(await bob.ok("read", "team", "--json")).lastReadSeq, "7");
    assert.match(await bob.ok("groups"), /^team\s+member\s+2\s+0\s+7\s+\S+$/m);
    const missing = await bob.run("read", "no such group");
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error: not_found: you have no group with the id or name "no such group"/m);
  });

  it("adds and removes members and shows membership events", async () => {
    const carol = cliFor(uniqueName("carol"), "carol's long password");
    const tail = bob.tail("--new");
    tails.push(tail);
    await Promise.all([carol.ok("register", carol.username), tail.waitFor("stderr", "connected to")]);
    assert.equal(await alice.ok("add-member", "team", carol.username, "--role", "admin"), `added ${carol.username} to team as admin (#8)\n`);
    assert.equal(await carol.ok("leave", "team"), "left team (#9)\n");
    assert.equal(await alice.ok("remove-member", "team", bob.username), `removed ${bob.username} from team (#10)\n`);
    await tail.waitFor("stdout", `[team #10] ${alice.username} removed ${bob.username}\n`);
    await tail.stop();
    assert.equal(
      tail.stdout,
      [
        `[team #8] ${alice.username} added ${carol.username} as admin`,
        `[team #9] ${carol.username} left`,
        `[team #10] ${alice.username} removed ${bob.username}`,
        "",
      ].join("\n"),
    );
    const [gone, logout] = await Promise.all([bob.run("send", "team", "anyone?"), alice.ok("logout")]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /^error: not_found: you have no group with the id or name "team"/m);
    assert.match(logout, /^logged out /m);
    assert.equal((await alice.run("whoami")).code, 1);
  });
});
