#!/usr/bin/env node
/**
 * build-server compiles the server's TypeScript (services/ and gen/, specs
 * left out) to JavaScript in dist/, one module per source with the same
 * relative paths, so `node dist/services/main.js` runs what
 * `node --import tsx services/main.ts` runs. It also copies what the modules
 * read beside them: the WAL checkpoint worker (services/adapters/sqlite/*.mjs)
 * and the web app (web/public/). dist/ is made afresh each time: built
 * beside it (.dist-<pid>/) and renamed in whole, so a server started or
 * running from dist/ never sees a half-written one, and builds run at the
 * same time (two `npm start`, a bench) each complete (the last one wins).
 *
 * Why not run through tsx in production: tsx compiles with esbuild's
 * keepNames, which wraps every named function expression in a call that
 * defines its `name` at run time, giving each such closure a property store
 * of its own (~256 bytes) and the call's CPU. Measured here (docs/performance.md,
 * "Compiled server"): a group subscription of the NATS bus took 3.2 KB of heap
 * under tsx and 2.1 KB compiled. Type checking stays with tsc (`npm test`);
 * this only strips the types.
 *
 *   node scripts/build-server.mjs
 */
import { cp, mkdir, readdir, rename, rm } from "node:fs/promises";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { NODE_BUILD } from "./node-build-options.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = join(root, "dist");

/** sources lists the .ts files under `dir` (recursively), specs and declaration files left out. */
async function sources(dir) {
  const entries = await readdir(join(root, dir), { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith(".ts") && !e.name.endsWith(".spec.ts") && !e.name.endsWith(".d.ts"))
    .map((e) => relative(root, join(e.parentPath ?? e.path, e.name)));
}

const staging = join(root, `.dist-${process.pid}`);
await rm(staging, { recursive: true, force: true });
const entryPoints = [...(await sources("services")), ...(await sources("gen"))];
await esbuild.build({
  absWorkingDir: root,
  entryPoints,
  outdir: staging,
  outbase: root,
  ...NODE_BUILD,
});
const sqlite = join("services", "adapters", "sqlite");
for (const f of await readdir(join(root, sqlite))) {
  if (f.endsWith(".mjs")) await cp(join(root, sqlite, f), join(staging, sqlite, f));
}
await mkdir(join(staging, "web"), { recursive: true });
await cp(join(root, "web", "public"), join(staging, "web", "public"), { recursive: true });
await swapIn(staging, out);

/**
 * swapIn puts the finished build at `target`: the old one is renamed aside, the new one renamed in, the old one
 * removed. If another build renamed its own in between, that one is moved aside too and ours goes in.
 */
async function swapIn(built, target) {
  for (let attempt = 0; ; attempt++) {
    const aside = `${built}-old-${attempt}`;
    try {
      await rename(target, aside);
    } catch (e) {
      if (e.code !== "ENOENT") throw e;
    }
    try {
      await rename(built, target);
      return;
    } catch (e) {
      if (!["ENOTEMPTY", "EEXIST"].includes(e.code) || attempt >= 20) throw e;
    } finally {
      await rm(aside, { recursive: true, force: true });
    }
  }
}
