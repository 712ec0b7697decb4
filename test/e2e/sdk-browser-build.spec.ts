/**
 * The browser build of @chat/client: its entry type-checks with the DOM lib and no Node types
 * (clients/typescript/tsconfig.json), and esbuild bundles it for `platform: "browser"` with no `node:` import and
 * no Node built-in. The Node entry, which uses node:fs, fails the same bundle: the check can fail.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { builtinModules } from "node:module";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { build } from "esbuild";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const NODE_BUILTINS = new Set(builtinModules);

async function bundle(entry: string) {
  return build({
    entryPoints: [`${ROOT}clients/typescript/src/${entry}`],
    bundle: true,
    platform: "browser",
    format: "esm",
    write: false,
    metafile: true,
    logLevel: "silent",
    absWorkingDir: ROOT,
  });
}

describe("@chat/client browser build", () => {
  it("type-checks with the DOM lib and no Node types (npx tsc -p clients/typescript)", async () => {
    const tsc = `${ROOT}node_modules/typescript/bin/tsc`;
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [tsc, "-p", `${ROOT}clients/typescript`], { cwd: ROOT }).catch(
      (e: { stdout: string; stderr: string }) => ({ stdout: e.stdout, stderr: `${e.stderr}\n(tsc failed)` }),
    );
    assert.equal(`${stdout}${stderr}`.trim(), "");
  });

  it("bundles src/index.ts for the browser without a node: import or a Node built-in", async () => {
    const result = await bundle("index.ts");
    assert.deepEqual(result.errors, []);
    const inputs = Object.keys(result.metafile.inputs);
    assert.ok(inputs.some((p) => p.endsWith("gen/chat/v1/stream_service_pb.ts")), "built from the repository's gen/");
    assert.ok(inputs.some((p) => p.includes("@connectrpc/connect-web")));
    const imports = Object.values(result.metafile.inputs).flatMap((i) => i.imports.map((x) => x.path));
    const nodeOnly = imports.filter((p) => p.startsWith("node:") || NODE_BUILTINS.has(p));
    assert.deepEqual(nodeOnly, []);
    const code = result.outputFiles[0]?.text ?? "";
    assert.ok(code.length > 0);
    assert.doesNotMatch(code, /from\s*["']node:|require\(["']node:/);
  });

  it("refuses to bundle the Node entry (node:fs) for the browser", async () => {
    await assert.rejects(bundle("node.ts"), (e: { errors?: { text: string }[] }) => (e.errors ?? []).some((x) => /node:/.test(x.text)));
  });
});
