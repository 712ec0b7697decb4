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
