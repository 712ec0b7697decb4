import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, it } from "node:test";

const run = promisify(execFile);
const tuning = fileURLToPath(new URL("./gc-tuning.ts", import.meta.url));

/**
 * fullCollections runs a fixed workload in a fresh process after
 * setHeapGrowingPercent(percent): 20 MB that stays alive, then 400,000
 * 1 KB arrays that each live long enough to be promoted (a ring of 20,000)
 * and then die in the old generation. It returns how many full
 * collections (major GCs) the workload took.
 */
async function fullCollections(percent: number): Promise<number> {
  const code = `
    const { setHeapGrowingPercent } = await import(${JSON.stringify(tuning)});
    const { setFlagsFromString } = await import("node:v8");
    const { runInNewContext } = await import("node:vm");
    const { PerformanceObserver, constants } = await import("node:perf_hooks");
    setHeapGrowingPercent(${percent});
    const live = [];
    for (let i = 0; i < 20; i++) live.push(new Array(131072).fill(i));
    setFlagsFromString("--expose-gc");
    runInNewContext("gc")();
    let majors = 0;
    new PerformanceObserver((l) => {
      for (const e of l.getEntries()) if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
    }).observe({ entryTypes: ["gc"] });
    const ring = new Array(20000);
    for (let i = 0; i < 400000; i++) ring[i % 20000] = new Array(128).fill(i);
    globalThis.keptAlive = live; // alive until the end, so every full collection finds the same 20 MB
    setTimeout(() => process.stdout.write(String(majors)), 50);
  `;
  const { stdout } = await run(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code]);
  return Number(stdout);
}

describe("setHeapGrowingPercent", () => {
  it("takes effect in a running process: a smaller percent means more full collections of the same workload", async () => {
    const [tight, loose] = await Promise.all([fullCollections(10), fullCollections(300)]);
    assert.ok(tight >= 2 * loose, `full collections at 10 %: ${tight}, at 300 %: ${loose}`);
  });
});
