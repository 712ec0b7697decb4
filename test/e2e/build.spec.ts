/**
 * The server build (scripts/build-server.mjs, run by `npm start` and the
 * bench): builds started at the same time in one checkout each complete,
 * and dist/ is never seen half-written.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, it } from "node:test";

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, "../..");
const DIST = join(ROOT, "dist");
/** Files a started server reads from dist/: its entry point, the WAL checkpoint worker (started later), the web app. */
const NEEDED = ["services/main.js", "services/adapters/sqlite/wal-checkpoint-worker.mjs", "web/public/index.html"];

describe("the server build", () => {
  it("three builds at once each finish, and whenever dist/ is there it is whole", async () => {
    let looks = 0;
    const broken: string[] = [];
    let building = true;
    const watch = (async () => {
      while (building) {
        const before = statSync(DIST, { throwIfNoEntry: false })?.ino;
        if (before !== undefined) {
          const missing = NEEDED.filter((f) => !existsSync(join(DIST, f)));
          // dist/ may be swapped between two checks: only the same dist/ (inode) before and after the look counts.
          if (statSync(DIST, { throwIfNoEntry: false })?.ino === before) {
            looks += 1;
            if (missing.length > 0) broken.push(missing.join(", "));
          }
        }
        await new Promise((r) => setImmediate(r));
      }
    })();
    const builds = [1, 2, 3].map(() => run(process.execPath, [join(ROOT, "scripts/build-server.mjs")], { cwd: ROOT }));
    const results = await Promise.allSettled(builds);
    building = false;
    await watch;
    assert.deepEqual(
      results.map((r) => r.status),
      ["fulfilled", "fulfilled", "fulfilled"],
      String(results.find((r) => r.status === "rejected")?.reason ?? ""),
    );
    assert.ok(looks > 10, `dist/ was looked at ${looks} times`);
    assert.deepEqual(broken.slice(0, 3), [], "dist/ was seen without files a server needs");
    for (const f of NEEDED) assert.ok(existsSync(join(DIST, f)), `dist/${f}`);
    assert.deepEqual(readdirSync(ROOT).filter((f) => f.startsWith(".dist-")), [], "no build left its staging directory");
  });
});
