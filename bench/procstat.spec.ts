import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseSchedstat, sampleTree } from "./lib/procstat.js";

describe("run-queue wait (procstat)", () => {
  it("reads the second field of /proc/<pid>/schedstat as seconds, and 0 from text it cannot read", () => {
    assert.equal(parseSchedstat("5120385 2500000000 37\n"), 2.5);
    assert.equal(parseSchedstat("5120385 1500 37"), 1.5e-6);
    assert.equal(parseSchedstat(""), 0);
    assert.equal(parseSchedstat("garbage"), 0);
  });

  it("samples this process's main thread: it has waited at some point since it started, and the sum never goes down", () => {
    const a = sampleTree(process.pid, false).runQueueSeconds;
    for (let x = 0, i = 0; i < 5e6; i++) x += i;
    const b = sampleTree(process.pid, false).runQueueSeconds;
    assert.ok(a > 0 && b >= a, `run-queue seconds went from ${a} to ${b}`);
  });
});
