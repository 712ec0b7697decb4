/**
 * The CI's `buf breaking` step (npm run check:breaking) against the last
 * released contract, scripts/buf/last-release.binpb: the contract as it is
 * passes, and a copy of it with one renamed field fails with buf's
 * "breaking changes found" exit code, naming the field.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";

const ROOT = resolve(import.meta.dirname, "../..");
const BUF = join(ROOT, "node_modules/.bin/buf");
const IMAGE = join(ROOT, "scripts/buf/last-release.binpb");

function breaking(dir: string): { status: number | null; out: string } {
  const r = spawnSync(BUF, ["breaking", "--against", IMAGE], { cwd: dir, encoding: "utf8", timeout: 60_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe("buf breaking against the last release", () => {
  it("passes for the contract as it is", () => {
    const r = breaking(ROOT);
    assert.equal(r.status, 0, r.out);
  });

  it("fails for a renamed field, naming it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "chat-breaking-"));
    try {
      await cp(join(ROOT, "proto"), join(dir, "proto"), { recursive: true });
      await cp(join(ROOT, "buf.yaml"), join(dir, "buf.yaml"));
      const file = join(dir, "proto/chat/v1/common.proto");
      const text = await readFile(file, "utf8");
      assert.ok(text.includes("string username = 2;"));
      await writeFile(file, text.replace("string username = 2;", "string user_name = 2;"));
      const r = breaking(dir);
      assert.equal(r.status, 100, r.out);
      assert.match(r.out, /changed name from "username" to "user_name"/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
