/**
 * An Android-style Java client (clients/java: grpc-okhttp, stubs generated from proto/ by protoc and
 * protoc-gen-grpc-java) drives a real embedded server end to end: live delivery of 100 messages, a reconnect with a
 * cursor that replays exactly the 20 missed ones, idempotent retries and ordered history. The Java program makes
 * every check itself, naming the seq and message at fault; this spec runs it with Maven and asserts its exit status
 * and the checks it reports. Needs `mvn` and a JDK on PATH (the first run downloads from Maven Central into ~/.m2).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { stripVTControlCharacters } from "node:util";
import { after, before, describe, it } from "node:test";
import { freePort } from "../support/helpers.js";
import { type TestServer, startTestServer } from "../support/test-server.js";

const POM = join(import.meta.dirname, "../../clients/java/pom.xml");
/** MVN_LIMIT_MS bounds one Maven run; the first one downloads plugins, protoc and gRPC (a few minutes at most). */
const MVN_LIMIT_MS = 600_000;

interface MvnResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * runClientCheck compiles clients/java and runs its ClientCheck against `url` (asynchronously: the server under test
 * runs in this process). It rejects with a clear message when `mvn` is not installed, and kills Maven by its PID
 * past MVN_LIMIT_MS.
 */
function runClientCheck(url: string): Promise<MvnResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("mvn", ["-B", "-q", "-Dstyle.color=never", "-f", POM, "compile", "exec:java", `-Dchat.url=${url}`], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), MVN_LIMIT_MS);
    child.on("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        e.code === "ENOENT"
          ? new Error("`mvn` is not on PATH: the Java client check needs Maven 3.8+ and a JDK 17+ (apt-get install maven)")
          : e,
      );
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      // Maven's console wrapper adds colour resets even in batch mode; the checks' lines are matched without them.
      resolve({ code, stdout: stripVTControlCharacters(stdout), stderr: stripVTControlCharacters(stderr) });
    });
  });
}

describe("Java client over grpc-okhttp (clients/java)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it("passes the delivery, resume, retry and history checks against the embedded server", { timeout: MVN_LIMIT_MS + 60_000 }, async () => {
    const res = await runClientCheck(server.baseUrl);
    const output = `--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
    assert.equal(res.code, 0, `the Java client check failed:\n${output}`);
    for (const line of [
      /^ok registered 2 users; group \S+; bob added at seq \d+$/m,
      /^ok live: 100 messages at seq (\d+)\.\.(\d+), each once, in order, the right message at each seq$/m,
      /^ok retry: client_message_id java-\S+ returned the original seq \d+ \(duplicate=true\)$/m,
      /^ok resume: cursor seq \d+ replayed exactly the 20 missed \(seq \d+\.\.\d+\), then 5 live \(seq \d+\.\.\d+\), no duplicate$/m,
      /^ok history: 125 messages in seq order with the right texts \(3 pages\)$/m,
      /^java-client: all checks passed$/m,
    ]) {
      assert.match(res.stdout, line, output);
    }
    assert.equal(res.stdout.match(/^ok retry:/gm)?.length, 2, `expected two retried sends:\n${output}`);
  });

  it("exits non-zero with a clear message when the server cannot be reached", { timeout: MVN_LIMIT_MS + 60_000 }, async () => {
    // A port that was free a moment ago: nothing listens there.
    const res = await runClientCheck(`http://127.0.0.1:${await freePort()}`);
    const output = `--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
    assert.notEqual(res.code, 0, `the check passed without a server:\n${output}`);
    assert.match(res.stderr, /^java-client: FAILED: a call failed with UNAVAILABLE/m, output);
    assert.doesNotMatch(res.stdout, /all checks passed/, output);
  });
});
