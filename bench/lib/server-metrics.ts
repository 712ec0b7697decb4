/**
 * The server's own account of a measured phase, from its Prometheus
 * `/metrics` (read at the phase's start and end, summed over the server
 * processes): how much of the delivery latency the server itself adds, how
 * long its store commits took, and its garbage collections. It splits an
 * end-to-end tail into the server's part and the rest (the send's way in,
 * the readers, the machine), without probes in the server.
 */

/** Metrics holds the samples of one /metrics text: `name{labels}` → value. */
export type Metrics = Map<string, number>;

/** parseMetrics reads the Prometheus text format (the lines this summary needs: any sample line). */
export function parseMetrics(text: string): Metrics {
  const out: Metrics = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    if (space <= 0) continue;
    const value = Number(line.slice(space + 1));
    if (Number.isFinite(value)) out.set(line.slice(0, space), value);
  }
  return out;
}

/** scrapeMetrics reads every url's /metrics; a process that does not answer in 2 s is left out (undefined). */
export async function scrapeMetrics(urls: readonly string[]): Promise<(Metrics | undefined)[]> {
  return Promise.all(
    urls.map(async (url) => {
      try {
        const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2000) });
        return res.ok ? parseMetrics(await res.text()) : undefined;
      } catch {
        return undefined;
      }
    }),
  );
}

/** Buckets is a histogram's growth over a window: cumulative counts by upper bound (seconds), and the total. */
export interface Buckets {
  readonly count: number;
  readonly le: [number, number][];
}

/** Pair is one process's metrics at a window's start and end. */
export type Pair = readonly [before: Metrics, after: Metrics];

/** bucketsDelta is histogram `name`'s growth over the window, summed over the processes and over label sets other than `le`. */
export function bucketsDelta(pairs: readonly Pair[], name: string): Buckets {
  const byLe = new Map<number, number>();
  let count = 0;
  for (const [before, after] of pairs) {
    for (const [key, value] of after) {
      const grew = value - (before.get(key) ?? 0);
      if (key.startsWith(`${name}_bucket{`)) {
        const le = key.match(/[{,]le="([^"]+)"/)?.[1];
        if (le === undefined || le === "+Inf") continue;
        byLe.set(Number(le), (byLe.get(Number(le)) ?? 0) + grew);
      } else if (key === `${name}_count` || key.startsWith(`${name}_count{`)) {
        count += grew;
      }
    }
  }
  return { count, le: [...byLe.entries()].sort((a, b) => a[0] - b[0]) };
}

/** within is the share of a histogram's observations at or below `seconds` (a bucket bound), or undefined with none. */
export function within(b: Buckets, seconds: number): number | undefined {
  if (b.count === 0) return undefined;
  const bucket = b.le.find(([le]) => Math.abs(le - seconds) < 1e-9);
  return bucket ? bucket[1] / b.count : undefined;
}

/** ServerPhaseMetrics is the server's account of one phase, summed over its processes. */
export interface ServerPhaseMetrics {
  /** Processes whose /metrics answered at both ends of the phase, of those asked. */
  readonly processes: { answered: number; asked: number };
  /** Live deliveries: event `at` (seq assigned) → written to a client stream. */
  readonly delivery: { count: number; within5ms?: number; within10ms?: number; within25ms?: number };
  /** Embedded store commits (with their fsync); none on the production topology. Over a bound: undefined if the histogram lacks it. */
  readonly commits: { count: number; over10ms: number | undefined; over50ms: number | undefined };
  /** Sends' appends (membership check and made durable: chat_send_append_seconds), by share within a bound. */
  readonly appends: { count: number; within5ms?: number; within10ms?: number; within25ms?: number };
  /**
   * V8 collections: scavenges (minor) and full ones (major; their time includes the incremental marking steps).
   * Lower bounds: prom-client observes only the first GC entry of each batch its PerformanceObserver gets.
   */
  readonly gc: { minor: { count: number; seconds: number }; full: { count: number; seconds: number } };
}

function sumDelta(before: Metrics, after: Metrics, key: string): number {
  return (after.get(key) ?? 0) - (before.get(key) ?? 0);
}

/** summarizePhase sums the server processes' metric growth over a phase (a process missing at either end, or restarted, is left out). */
export function summarizePhase(before: readonly (Metrics | undefined)[], after: readonly (Metrics | undefined)[]): ServerPhaseMetrics {
  // A process that restarted during the phase (another start time) has counters that began again: left out.
  const pairs = before.flatMap((b, i): Pair[] => {
    const a = after[i];
    return b && a && b.get("process_start_time_seconds") === a.get("process_start_time_seconds") ? [[b, a]] : [];
  });
  const delivery = bucketsDelta(pairs, "chat_delivery_latency_seconds");
  const commits = bucketsDelta(pairs, "chat_store_commit_seconds");
  const appends = bucketsDelta(pairs, "chat_send_append_seconds");
  const over = (b: Buckets, s: number) => {
    if (b.count === 0) return 0;
    const share = within(b, s);
    return share === undefined ? undefined : b.count - Math.round(share * b.count);
  };
  // Counted by the collections themselves; timed with their incremental marking steps for the full ones.
  const gc = (counted: string, timed: string[]) => ({
    count: pairs.reduce((n, [b, a]) => n + sumDelta(b, a, `nodejs_gc_duration_seconds_count{kind="${counted}"}`), 0),
    seconds: pairs.reduce((n, [b, a]) => n + timed.reduce((m, k) => m + sumDelta(b, a, `nodejs_gc_duration_seconds_sum{kind="${k}"}`), 0), 0),
  });
  return {
    processes: { answered: pairs.length, asked: before.length },
    delivery: {
      count: delivery.count,
      within5ms: within(delivery, 0.005),
      within10ms: within(delivery, 0.01),
      within25ms: within(delivery, 0.025),
    },
    appends: { count: appends.count, within5ms: within(appends, 0.005), within10ms: within(appends, 0.01), within25ms: within(appends, 0.025) },
    commits: { count: commits.count, over10ms: over(commits, 0.01), over50ms: over(commits, 0.05) },
    gc: { minor: gc("minor", ["minor"]), full: gc("major", ["major", "incremental"]) },
  };
}

/** serverMetricsText is the one-line account the modes print. */
export function serverMetricsText(m: ServerPhaseMetrics): string {
  if (m.processes.asked === 0) return "- (not read: no server process of the bench's own)";
  if (m.processes.answered === 0) return "- (no /metrics answered at both ends of the phase)";
  const pct = (x: number | undefined) => (x === undefined ? "-" : `${(x * 100).toFixed(2)}%`);
  const d = m.delivery;
  const parts = [
    `at → written ≤ 5 ms ${pct(d.within5ms)}, ≤ 10 ms ${pct(d.within10ms)}, ≤ 25 ms ${pct(d.within25ms)} of ${d.count.toLocaleString("en-US")}`,
    ...(m.appends.count > 0
      ? [`appends ≤ 5 ms ${pct(m.appends.within5ms)}, ≤ 10 ms ${pct(m.appends.within10ms)}, ≤ 25 ms ${pct(m.appends.within25ms)} of ${m.appends.count.toLocaleString("en-US")}`]
      : []),
    ...(m.commits.count > 0 ? [`commits ${m.commits.count.toLocaleString("en-US")} (${m.commits.over10ms ?? "?"} > 10 ms, ${m.commits.over50ms ?? "?"} > 50 ms)`] : []),
    `GC ≥ ${m.gc.minor.count} scavenges ≥ ${(m.gc.minor.seconds * 1000).toFixed(0)} ms, ≥ ${m.gc.full.count} full ≥ ${(m.gc.full.seconds * 1000).toFixed(0)} ms`,
  ];
  return `${parts.join("; ")}${m.processes.answered < m.processes.asked ? ` (${m.processes.answered} of ${m.processes.asked} processes answered)` : ""}`;
}
