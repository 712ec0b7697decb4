/**
 * What every mode's result carries (command line, machine, load shape,
 * server settings) and the shared table rows.
 */
import type { Bench, PhaseResult, ProcWindow, Window } from "../lib/bench.js";
import type { SenderGroup, WorkerTotals } from "../lib/protocol.js";
import type { Target } from "../lib/servers.js";
import type { Population } from "../lib/setup.js";
import { type Latency, fmt, machineInfo, table } from "../lib/report.js";

/** populateShape registers the run's users and creates its --groups × --members groups. */
export function populateShape(bench: Bench, users = bench.opts.users): Promise<Population> {
  const o = bench.opts;
  return bench.populate({
    groups: o.groups,
    members: o.members,
    ...(users !== undefined ? { users } : {}),
    registerConcurrency: o.registerConcurrency,
    groupConcurrency: 16,
  });
}

/** openShapeStreams opens every member's stream over --workers workers and returns how many; one that fails ends the run. */
export async function openShapeStreams(bench: Bench): Promise<number> {
  const specs = bench.streamSpecs();
  const opened = await bench.openStreams(specs, Math.max(1, bench.opts.workers));
  if (opened.failed > 0) throw new Error(`${opened.failed} streams failed to open`);
  return specs.length;
}

/** senderGroups lists groups with their members' tokens, as a sender needs them. */
export function senderGroups(pop: Population, groups: Population["groups"] = pop.groups): SenderGroup[] {
  return groups.map((g) => ({ groupId: g.groupId, tokens: g.members.map((m) => pop.users[m]?.token ?? "") }));
}

/** senderInit is a sender's configuration for `groups` on every message endpoint, posting SendMessage unless changed. */
export function senderInit(bench: Bench, target: Target, groups: SenderGroup[]) {
  const o = bench.opts;
  return {
    url: [...target.endpoints.messageAll],
    groups,
    textBytes: o.textBytes,
    sessions: o.senderConnections,
    timeoutMs: o.timeout * 1000,
    maxInFlight: o.maxInFlight,
    op: "send" as "send" | "list",
    listLimit: 0,
    listAnchor: "newest" as "newest" | "deep",
  };
}

/** commandLine is the command as typed (argv of this process). */
export function commandLine(): string {
  const args = process.argv.slice(2).map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`));
  return `node --import tsx bench/run.ts ${args.join(" ")}`.trim();
}

/** header is the common head of every result file. */
export function header(bench: Bench, extraShape: Record<string, unknown>): Record<string, unknown> {
  const o = bench.opts;
  const { given: _given, serverEnv, ...flags } = o;
  return {
    mode: o.mode,
    target: o.target,
    label: o.label || undefined,
    startedAt: bench.startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    command: commandLine(),
    machine: { ...machineInfo(), loadAverageAtStart: bench.loadAtStart },
    shape: { ...extraShape },
    flags: { ...flags, serverEnv },
    server: {
      settings: bench.target?.settings,
      processes: bench.target?.processes.map((p) => ({ name: p.name, services: p.services, pid: p.pid, url: p.url })),
    },
    setup: bench.population
      ? {
          users: bench.population.users.length,
          groups: bench.population.groups.length,
          registerSeconds: round(bench.population.registerSeconds),
          groupSeconds: round(bench.population.groupSeconds),
        }
      : undefined,
  };
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/** latencyText prints p50 / p90 / p99 / p99.9 / max in ms. */
export function latencyText(l: Latency): string {
  if (l.count === 0) return "(no samples)";
  return `p50 ${fmt(l.p50, 2)}  p90 ${fmt(l.p90, 2)}  p99 ${fmt(l.p99, 2)}  p99.9 ${fmt(l.p999, 2)}  max ${fmt(l.max, 2)} ms  (${fmt(l.count)} samples)`;
}

/** cpuRows describes a window's CPU and memory. */
export function cpuRows(w: Window, deliveries?: number): [string, string][] {
  const rows: [string, string][] = [];
  rows.push(["server CPU", `${fmt(w.serverCpuSeconds, 2)} s over ${fmt(w.seconds, 1)} s = ${fmt(w.serverCores, 2)} cores`]);
  if (w.server.length > 1) {
    for (const p of w.server) rows.push([`  ${p.name}`, `${fmt(p.cpuSeconds, 2)} s (${fmt(p.cores, 2)} cores), RSS ${fmt(p.rssMiB, 1)} MiB (peak ${fmt(p.peakRssMiB, 1)})`]);
  }
  if (deliveries !== undefined && deliveries > 0) {
    rows.push(["server CPU per delivery", `${fmt((w.serverCpuSeconds * 1e6) / deliveries, 2)} µs`]);
  }
  if (w.backends.length > 0) {
    rows.push([
      "backend CPU (shared)",
      `${fmt(w.backendCpuSeconds, 2)} s = ${fmt(w.backendCores, 2)} cores (${w.backends.map((b) => `${b.name} ${fmt(b.cores, 2)}`).join(", ")})`,
    ]);
    if (deliveries !== undefined && deliveries > 0) {
      rows.push(["server + backends CPU per delivery", `${fmt(((w.serverCpuSeconds + w.backendCpuSeconds) * 1e6) / deliveries, 2)} µs`]);
    }
  }
  const rss = w.server.reduce((s, p) => s + p.rssMiB, 0);
  const peak = w.server.reduce((s, p) => s + p.peakRssMiB, 0);
  rows.push(["server RSS", `${fmt(rss, 1)} MiB (peak ${fmt(peak, 1)} MiB)`]);
  rows.push([
    "load generator CPU",
    `${fmt(w.generatorCpuSeconds, 2)} s = ${fmt(w.generatorCores, 2)} cores (${w.generators.map((g) => `${g.name} ${fmt(g.cores, 2)}`).join(", ")})`,
  ]);
  rows.push([
    "machine busy",
    `${fmt(w.machineBusyCores, 2)} cores (other processes: ${fmt(w.otherCores, 2)}${w.disturbed ? " — DISTURBED: other work ran during the measurement" : ""})`,
  ]);
  rows.push(["load generator bound", w.generatorBound.length === 0 ? "no" : `YES: ${w.generatorBound.join("; ")}`]);
  rows.push(["waiting for a CPU", runQueueText(w)]);
  return rows;
}

/**
 * runQueueText says how long each process's event loop was ready to run but had no CPU (the run queue), as a share
 * of the window: time that every latency measured in it may include and that neither the server's code nor its CPU
 * figures show. On a machine with cores to spare it stays near 0.
 */
export function runQueueText(w: Window): string {
  const pct = (p: ProcWindow) => `${p.name} ${fmt(p.runQueueShare * 100, 1)}%`;
  const parts = [...w.server, ...w.generators].map(pct);
  return `${parts.join(", ")} of the time (main threads on the run queue, /proc/<pid>/schedstat)`;
}

/** lossOf computes loss from the sender's expectation and the subscribers' seq checks. */
export function lossOf(expected: number, received: number, totals: WorkerTotals): { loss: number; countShortfall: number; seqMissing: number } {
  const countShortfall = Math.max(0, expected - received);
  const seqMissing = totals.gapSeqs + totals.behindSeqs + totals.resetSeqs;
  return { loss: Math.max(countShortfall, seqMissing), countShortfall, seqMissing };
}

/** deliveryRows are the delivery-correctness rows of a phase. */
export function deliveryRows(r: PhaseResult, totals: WorkerTotals): [string, string][] {
  const l = lossOf(r.sender.expectedDeliveries, r.deliveries, totals);
  const errors = Object.entries(r.sender.errors)
    .map(([c, n]) => `${n} × code ${c}`)
    .join(", ");
  return [
    ["messages sent", `${fmt(r.sender.ok)} ok of ${fmt(r.sender.issued)} issued${errors ? `, errors: ${errors}` : ""}${r.sender.skipped ? `, ${fmt(r.sender.skipped)} SKIPPED (in-flight cap)` : ""}`],
    ["deliveries expected", fmt(r.sender.expectedDeliveries)],
    ["deliveries received", fmt(r.deliveries)],
    [
      "loss",
      `${fmt(l.loss)}${l.loss === 0 ? " (zero)" : ` (count shortfall ${fmt(l.countShortfall)}; by seq: ${fmt(totals.gapSeqs)} gap, ${fmt(totals.behindSeqs)} behind head on ${fmt(totals.behindStreams)} streams, ${fmt(totals.resetSeqs)} reset)`}`,
    ],
    ["duplicates", fmt(totals.duplicates)],
    [
      "stream ends / reconnects",
      `${fmt(Object.values(totals.ends).reduce((a, b) => a + b, 0))} / ${fmt(totals.reconnects)}${Object.keys(totals.ends).length ? ` (${Object.entries(totals.ends).map(([c, n]) => `code ${c}: ${n}`).join(", ")})` : ""}`,
    ],
  ];
}

export { table };
