import { setFlagsFromString } from "node:v8";

/**
 * turnOffPretenuring stops V8 from allocating objects of "long-lived looking"
 * allocation sites directly in the old generation. Measured on the send
 * path (`npm run bench -- send --rate 500 --server-node-arg=--trace-gc-nvp`):
 * with pretenuring on, each scavenge copied and promoted every finished
 * call (~7 KB each, 2.3 MB per scavenge at 500 sends/s) until the next full
 * collection, and scavenges took 4–6 ms instead of ~2. (Likely mechanism:
 * V8 pretenured sites of the per-call code after the warm-up, and those old,
 * soon dead objects kept pointing at the young objects of later calls.)
 * Without pretenuring 0.25 MB per scavenge survive (the caches' own
 * growth). Set here at start-up, before the process serves anything, it
 * measured the same as `node --no-allocation-site-pretenuring`.
 */
export function turnOffPretenuring(): void {
  setFlagsFromString("--no-allocation-site-pretenuring");
}

/**
 * setHeapGrowingPercent fixes how far V8 lets the old generation grow past
 * what survived a full collection before it starts the next one (0 leaves
 * V8's own factor, 1.1-4× by how fast the process allocates). Set at
 * start-up, it takes effect for every later full collection (the spec checks
 * that a running process obeys it). Measured on the embedded server
 * (docs/performance.md, "Heap growth of the embedded server"): with V8's own
 * factor some runs fell into back-to-back Mark-Compacts under steady load
 * (29 in 20 s, 5-17 ms each) and history reads' tail followed them; a fixed
 * 100 % helped the reads but cost sends ~15 % more CPU (V8 picks more than
 * 100 % for them); 300 % (the most V8 picks itself) helped both. The cost is
 * memory: the old generation may hold up to four times what is live.
 */
export function setHeapGrowingPercent(percent: number): void {
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
}
