// Prints the top functions of a V8 .cpuprofile (from node --cpu-prof, e.g.
// `bench/run.ts --profile`) by self time and by inclusive time.
// usage: node bench/tools/cpuprofile-top.mjs <file.cpuprofile> [n] [last-seconds]
// With last-seconds, only the samples of the profile's last that many seconds count (e.g. a run's measured phase,
// without its setup).
import { readFileSync } from "node:fs";

const [file, nArg, lastArg] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: node bench/tools/cpuprofile-top.mjs <file.cpuprofile> [n] [last-seconds]\n");
  process.exit(2);
}
const n = Number(nArg ?? 30);
const prof = JSON.parse(readFileSync(file, "utf8"));
const nodes = new Map(prof.nodes.map((x) => [x.id, x]));
const parent = new Map();
for (const x of prof.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
const self = new Map();
const dt = prof.timeDeltas;
// A sample's time is the profile's start plus the deltas up to it (µs).
const from = lastArg === undefined ? -Infinity : prof.endTime - Number(lastArg) * 1e6;
let at = prof.startTime;
for (let i = 0; i < prof.samples.length; i++) {
  at += dt[i] ?? 0;
  if (at >= from) self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (dt[i] ?? 0));
}
const total = [...self.values()].reduce((a, b) => a + b, 0);
const label = (x) => {
  const f = x.callFrame;
  const url = (f.url || "").replace(/^file:\/\//, "").replace(/.*\/node_modules\//, "~/").replace(/.*\/work\/main\//, "");
  return `${f.functionName || "(anonymous)"} ${url}${url ? `:${f.lineNumber + 1}` : ""}`;
};
const bySelf = new Map();
const byIncl = new Map();
for (const [id, t] of self) {
  const x = nodes.get(id);
  const k = label(x);
  bySelf.set(k, (bySelf.get(k) ?? 0) + t);
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const kk = label(nodes.get(cur));
    if (seen.has(kk)) continue;
    seen.add(kk);
    byIncl.set(kk, (byIncl.get(kk) ?? 0) + t);
  }
}
const show = (title, m) => {
  console.log(`\n${title} (total ${(total / 1000).toFixed(0)} ms sampled)`);
  for (const [k, t] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) console.log(`${((t / total) * 100).toFixed(1).padStart(6)}%  ${(t / 1000).toFixed(0).padStart(7)} ms  ${k}`);
};
show("self time", bySelf);
show("inclusive time", byIncl);
