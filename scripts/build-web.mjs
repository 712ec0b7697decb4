#!/usr/bin/env node
/**
 * build-web bundles the web app (web/src/main.ts, the @chat/client SDK and
 * its dependencies, web/src/app.css) for browsers into web/public/: the
 * minified assets under content-hashed names in assets/, and index.html
 * (from web/index.html) pointing at them. The output depends only on the
 * sources: the same tree builds the same bytes, so web/public/ is committed
 * and `--check` fails when it is stale.
 *
 *   node scripts/build-web.mjs          write web/public/ (stale assets are deleted)
 *   node scripts/build-web.mjs --check  exit 1, naming the files, if web/public/ differs from a fresh build
 */
import { readFile, readdir, mkdir, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const web = join(root, "web");
const out = join(web, "public");
const check = process.argv.includes("--check");

/** build returns every output file of web/public/ as path (relative to it) -> bytes. */
async function build() {
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: [join(web, "src", "main.ts")],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: ["es2022", "chrome110", "firefox110", "safari16"],
    entryNames: "[name]-[hash]",
    assetNames: "[name]-[hash]",
    outdir: join(out, "assets"),
    tsconfig: join(web, "tsconfig.json"),
    legalComments: "none",
    charset: "utf8",
    metafile: true,
    write: false,
    logLevel: "warning",
  });
  const files = new Map();
  const tags = [];
  for (const file of result.outputFiles) {
    const name = relative(out, file.path);
    files.set(name, Buffer.from(file.contents));
    if (name.endsWith(".css")) tags.push(`<link rel="stylesheet" href="/${name}">`);
    else if (name.endsWith(".js")) tags.push(`<script type="module" src="/${name}"></script>`);
  }
  tags.sort(); // <link> before <script>, whatever order esbuild lists them in
  const template = await readFile(join(web, "index.html"), "utf8");
  if (!template.includes("<!-- assets -->")) throw new Error("web/index.html has no <!-- assets --> placeholder");
  files.set("index.html", Buffer.from(template.replace("<!-- assets -->", tags.join("\n    "))));
  return files;
}

/** existing lists the files now in web/public/ (index.html and assets/*). */
async function existing() {
  const names = [];
  for (const dir of ["", "assets"]) {
    const entries = await readdir(join(out, dir), { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.isFile()) names.push(join(dir, e.name));
  }
  return names;
}

const files = await build();
if (check) {
  const stale = [];
  for (const [name, bytes] of files) {
    const now = await readFile(join(out, name)).catch(() => undefined);
    if (!now?.equals(bytes)) stale.push(`${name} (${now ? "differs" : "missing"})`);
  }
  for (const name of await existing()) if (!files.has(name)) stale.push(`${name} (not built any more)`);
  if (stale.length > 0) {
    console.error(`web/public/ is stale; run npm run build:web and commit it:\n  ${stale.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`web/public/ is up to date (${files.size} files)`);
} else {
  for (const name of await existing()) if (!files.has(name)) await rm(join(out, name));
  for (const [name, bytes] of files) {
    await mkdir(dirname(join(out, name)), { recursive: true });
    await writeFile(join(out, name), bytes);
  }
  console.log(`web/public/: ${[...files].map(([n, b]) => `${basename(n)} ${b.length} B`).join(", ")}`);
}
