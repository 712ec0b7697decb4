// Samples a running server's allocations (collected objects included) through the inspector, then prints the top
// allocating functions and stacks. Start the server under test with the inspector, e.g.
//   npm run bench -- fixed --no-write --server-node-arg=--inspect=127.0.0.1:9339
// and, once its measured phase runs:
//   node --experimental-websocket bench/tools/heap-sample.mjs 9339 10 /tmp/fixed.heapprofile
// (port, seconds, output file: a .heapprofile Chrome DevTools opens). Sampling slows the server: it tells where the
// allocations come from, not the latency. A fourth argument `survivors` leaves out the objects that died young
// (collected by a scavenge): what remains is what the scavenges copy and promote, the objects that make them slow.
import { writeFileSync } from "node:fs";

const [port = "9339", seconds = "10", out = "server.heapprofile", which = "all"] = process.argv.slice(2);
if (which !== "all" && which !== "survivors") throw new Error(`the fourth argument is "all" or "survivors", not ${which}`);
const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
await new Promise((resolve, reject) => {
  ws.addEventListener("open", resolve);
  ws.addEventListener("error", reject);
});
let lastId = 0;
const waiting = new Map();
ws.addEventListener("message", (ev) => {
  const m = JSON.parse(ev.data);
  waiting.get(m.id)?.(m);
  waiting.delete(m.id);
});
const call = (method, params = {}) =>
  new Promise((resolve) => {
    const id = ++lastId;
    waiting.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });

await call("HeapProfiler.enable");
await call("HeapProfiler.startSampling", { samplingInterval: 16384, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: which === "all" });
await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
const { profile } = (await call("HeapProfiler.stopSampling")).result;
ws.close();
writeFileSync(out, JSON.stringify(profile));

const byFunction = new Map();
const byStack = new Map();
let total = 0;
const walk = (node, path) => {
  const f = node.callFrame;
  const name = `${f.functionName || "(anonymous)"} ${f.url.split("/").slice(-2).join("/")}:${f.lineNumber}`;
  const stack = [name, ...path].slice(0, 6);
  if (node.selfSize) {
    total += node.selfSize;
    byFunction.set(name, (byFunction.get(name) ?? 0) + node.selfSize);
    const key = stack.join(" < ");
    byStack.set(key, (byStack.get(key) ?? 0) + node.selfSize);
  }
  for (const child of node.children ?? []) walk(child, stack);
};
walk(profile.head, []);
const top = (m, n) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `${((v / total) * 100).toFixed(1).padStart(5)}%  ${k}`).join("\n");
console.log(`${(total / 2 ** 20).toFixed(1)} MB allocated (sampled) in ${seconds} s; wrote ${out}\n\nby function:\n${top(byFunction, 30)}\n\nby stack:\n${top(byStack, 20)}`);
