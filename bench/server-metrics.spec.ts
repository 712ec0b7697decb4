import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { bucketsDelta, parseMetrics, serverMetricsText, summarizePhase, within } from "./lib/server-metrics.js";

/** exposition writes a /metrics text like prom-client's: the three histograms and the GC summary the summary reads. */
function exposition(o: { delivery: number[]; commits: number[]; appends?: number[]; minor: [number, number]; major: [number, number]; incremental: number; started?: number }): string {
  const bounds = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1"];
  const hist = (name: string, cum: number[]) =>
    [
      `# HELP ${name} test`,
      `# TYPE ${name} histogram`,
      ...bounds.map((le, i) => `${name}_bucket{le="${le}"} ${cum[i]}`),
      `${name}_bucket{le="+Inf"} ${cum.at(-1)}`,
      `${name}_sum 1.5`,
      `${name}_count ${cum.at(-1)}`,
    ].join("\n");
  return [
    hist("chat_delivery_latency_seconds", o.delivery),
    hist("chat_store_commit_seconds", o.commits),
    hist("chat_send_append_seconds", o.appends ?? [0, 0, 0, 0, 0, 0, 0, 0]),
    `nodejs_gc_duration_seconds_count{kind="minor"} ${o.minor[0]}`,
    `nodejs_gc_duration_seconds_sum{kind="minor"} ${o.minor[1]}`,
    `nodejs_gc_duration_seconds_count{kind="major"} ${o.major[0]}`,
    `nodejs_gc_duration_seconds_sum{kind="major"} ${o.major[1]}`,
    `nodejs_gc_duration_seconds_count{kind="incremental"} 7`,
    `nodejs_gc_duration_seconds_sum{kind="incremental"} ${o.incremental}`,
    `process_start_time_seconds ${o.started ?? 1700000000}`,
    "",
  ].join("\n");
}

const zero = { delivery: [0, 0, 0, 0, 0, 0, 0, 0], commits: [0, 0, 0, 0, 0, 0, 0, 0], minor: [0, 0] as [number, number], major: [0, 0] as [number, number], incremental: 0 };

describe("server metrics of a phase", () => {
  it("counts only what grew during the phase, summed over the processes that answered at both ends", () => {
    const before = [
      parseMetrics(exposition({ ...zero, delivery: [10, 10, 10, 10, 10, 10, 10, 10], minor: [5, 0.01], major: [1, 0.02] })),
      parseMetrics(exposition(zero)),
      parseMetrics(exposition(zero)), // its end is missing: left out
      parseMetrics(exposition(zero)), // restarted during the phase: left out
    ];
    const after = [
      // +1,000 deliveries: 950 ≤ 5 ms, 990 ≤ 10 ms, all ≤ 25 ms; 3 scavenges (+6 ms), 1 full (+8 ms, +4 ms of marking steps).
      parseMetrics(
        exposition({
          delivery: [110, 510, 810, 960, 1000, 1010, 1010, 1010],
          commits: [50, 90, 96, 98, 99, 100, 100, 100],
          // +100 appends: 80 ≤ 5 ms, 90 ≤ 10 ms, 99 ≤ 25 ms.
          appends: [0, 10, 40, 80, 90, 99, 100, 100],
          minor: [8, 0.016], major: [2, 0.028], incremental: 0.004,
        }),
      ),
      // +1,000 deliveries: all ≤ 5 ms; 1 commit over 50 ms.
      parseMetrics(exposition({ ...zero, delivery: [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000], commits: [0, 0, 0, 0, 0, 0, 0, 1] })),
      undefined,
      parseMetrics(exposition({ ...zero, delivery: [5, 5, 5, 5, 5, 5, 5, 5], started: 1700000500 })),
    ];
    const m = summarizePhase(before, after);
    assert.deepEqual(m.processes, { answered: 2, asked: 4 });
    assert.equal(m.delivery.count, 2000);
    assert.equal(m.delivery.within5ms, 1950 / 2000);
    assert.equal(m.delivery.within10ms, 1990 / 2000);
    assert.equal(m.delivery.within25ms, 1);
    assert.deepEqual(m.commits, { count: 101, over10ms: 2, over50ms: 1 });
    assert.deepEqual(m.appends, { count: 100, within5ms: 0.8, within10ms: 0.9, within25ms: 0.99 });
    assert.equal(m.gc.minor.count, 3);
    assert.ok(Math.abs(m.gc.minor.seconds - 0.006) < 1e-9);
    assert.equal(m.gc.full.count, 1, "incremental marking steps are not collections of their own");
    assert.ok(Math.abs(m.gc.full.seconds - 0.012) < 1e-9);
    assert.match(serverMetricsText(m), /^at → written ≤ 5 ms 97\.50%, ≤ 10 ms 99\.50%, ≤ 25 ms 100\.00% of 2,000; appends ≤ 5 ms 80\.00%, ≤ 10 ms 90\.00%, ≤ 25 ms 99\.00% of 100; commits 101 \(2 > 10 ms, 1 > 50 ms\); GC ≥ 3 scavenges ≥ 6 ms, ≥ 1 full ≥ 12 ms \(2 of 4 processes answered\)$/);
  });

  it("says so when no process answered, instead of reporting zeros as a measurement", () => {
    const m = summarizePhase([undefined], [undefined]);
    assert.equal(m.processes.answered, 0);
    assert.equal(m.delivery.within5ms, undefined);
    assert.equal(serverMetricsText(m), "- (no /metrics answered at both ends of the phase)");
    assert.equal(serverMetricsText(summarizePhase([], [])), "- (not read: no server process of the bench's own)");
  });

  it("reads le only as its own label, and says it cannot tell when a histogram lacks the bound asked for", () => {
    const before = parseMetrics('x_bucket{role="a",le="0.5"} 0\nx_bucket{role="a",le="+Inf"} 0\nx_count{role="a"} 0\n');
    const after = parseMetrics('x_bucket{role="a",le="0.5"} 3\nx_bucket{role="a",le="+Inf"} 4\nx_count{role="a"} 4\n');
    const b = bucketsDelta([[before, after]], "x");
    assert.deepEqual(b, { count: 4, le: [[0.5, 3]] });
    assert.equal(within(b, 0.5), 0.75);
    assert.equal(within(b, 0.01), undefined);
  });
});
