/**
 * history: ListMessages page latency (limit --page-size, 50), open loop at
 * --rate reads/s, after writing --history-messages per group:
 *
 * - warm: the newest page of random groups while a second sender keeps
 *   writing to them at --write-rate (the groups "just had messages");
 * - deep: pages ending at a random seq below the newest page (older data);
 * - cold (embedded only): the server is restarted on the same data; reads of
 *   a few groups warm the new processes, unmeasured, then every other
 *   group's newest page is read once, in turn (the first read of each group
 *   after the restart), then deep pages again.
 */
import type { Bench, PhaseResult } from "../lib/bench.js";
import { fmt, gridTable, lineChart, writeResults } from "../lib/report.js";
import { cpuRows, header, latencyText, populateShape, senderGroups, senderInit, table } from "./common.js";

/** COLD_WARM_GROUPS groups' pages, read for COLD_WARM_MS, warm the restarted server and the new reader before the cold phase. */
const COLD_WARM_GROUPS = 10;
const COLD_WARM_MS = 2000;

export async function runHistory(bench: Bench): Promise<number> {
  const o = bench.opts;
  const target = await bench.startTarget();
  const pop = await populateShape(bench);
  const base = senderInit(bench, target, senderGroups(pop));
  // Fill: every group gets about --history-messages messages (random groups, open loop).
  const total = o.groups * o.historyMessages;
  const fillRate = Math.min(2000, Math.max(100, total / 10));
  bench.log(`filling: ${fmt(total)} messages (${o.historyMessages} per group on average) at ${fmt(fillRate)}/s`);
  const writer = await bench.startSender({ ...base, op: "send", listLimit: 0, listAnchor: "newest" }, "writer");
  const [fill] = await bench.runPhases(writer, [{ phase: 900, rate: fillRate, durationMs: (total / fillRate) * 1000 }], { collect: false });
  if (!fill) throw new Error("no fill result");
  const fillErrors = Object.values(fill.sender.errors).reduce((a, b) => a + b, 0);
  bench.log(`  wrote ${fmt(fill.sender.ok)} messages (${fillErrors} errors), SendMessage ${latencyText(fill.sendLatency)}`);
  // Each group's newest seq, from the writes (groups the fill never picked keep their setup head).
  const heads: Record<string, number> = {};
  for (const g of pop.groups) heads[g.groupId] = Math.max(g.headSeq, bench.lastHeads[g.groupId] ?? 0);

  const phases: { name: string; result: PhaseResult }[] = [];
  const duration = o.duration * 1000;
  const reader = await bench.startSender({ ...base, op: "list", listLimit: o.pageSize, listAnchor: "newest" }, "reader");
  if (o.warmup > 0) {
    bench.log(`warm-up: ${o.rate} reads/s for ${o.warmup} s`);
    await bench.runPhases(reader, [{ phase: 0, rate: o.rate, durationMs: o.warmup * 1000 }], { collect: false });
  }
  // warm: reads of newest pages while the writer keeps the groups busy.
  bench.log(`warm: ${o.rate} newest-page reads/s for ${o.duration} s while writing ${o.writeRate} msg/s`);
  const writing =
    o.writeRate > 0
      ? writer.request({ type: "run", phases: [{ phase: 901, rate: o.writeRate, durationMs: duration + 1000 }], startAtMs: Date.now() }, "done", duration + 120_000)
      : Promise.resolve(undefined);
  const [warm] = await bench.runPhases(reader, [{ phase: 1, rate: o.rate, durationMs: duration }], { collect: false, leadMs: 500 });
  const w = await writing;
  if (w) for (const [g, seq] of Object.entries(w.heads)) heads[g] = Math.max(heads[g] ?? 0, seq);
  // drain the writer's phaseDone message
  await writer.waitFor("phaseDone", 5000).catch(() => undefined);
  if (warm) phases.push({ name: "warm (newest page, groups being written)", result: warm });

  const deepReader = await bench.startSender(
    { ...base, op: "list", listLimit: o.pageSize, listAnchor: "deep", groupHeads: heads },
    "deep-reader",
  );
  bench.log(`deep: ${o.rate} reads/s of older pages for ${o.duration} s`);
  const [deep] = await bench.runPhases(deepReader, [{ phase: 2, rate: o.rate, durationMs: duration }], { collect: false });
  if (deep) phases.push({ name: "deep (random older page)", result: deep });

  if (target.kind === "embedded") {
    bench.log("restarting the server (same data) for cold reads");
    await target.restart();
    const coldReader = await bench.startSender(
      { ...base, op: "list", listLimit: o.pageSize, listAnchor: "newest", pick: "sequential", sessions: 1 },
      "cold-reader",
    );
    const coldRate = Math.min(o.rate, o.groups);
    // The first calls of a fresh process (the restarted server's and the new reader's: a connection, code not yet
    // compiled) are not what "cold" measures here, a group whose data no cache holds: the reader first reads pages
    // of the first COLD_WARM_GROUPS groups for COLD_WARM_MS, unmeasured, pauses 1 s (that load's last calls and
    // garbage are not the cold reads' either), then reads each other group's newest page once.
    const warmGroups = Math.min(COLD_WARM_GROUPS, Math.floor(o.groups / 2));
    const coldGroups = o.groups - warmGroups;
    bench.log(
      `cold: pages of ${warmGroups} groups for ${COLD_WARM_MS / 1000} s to warm the new processes, then each other ` +
        `group's newest page once (${coldGroups} reads at ${fmt(coldRate)}/s), then deep pages`,
    );
    const [, , cold] = await bench.runPhases(
      coldReader,
      [
        { phase: 0, rate: o.rate, durationMs: COLD_WARM_MS, groups: { from: 0, to: warmGroups } },
        { phase: 5, rate: 0, durationMs: 1000 }, // the pause
        { phase: 3, rate: coldRate, durationMs: (coldGroups / coldRate) * 1000, groups: { from: warmGroups, to: o.groups } },
      ],
      { collect: false },
    );
    if (cold) phases.push({ name: "cold: first newest-page read per group after restart", result: cold });
    const coldDeep = await bench.startSender(
      { ...base, op: "list", listLimit: o.pageSize, listAnchor: "deep", groupHeads: heads },
      "cold-deep-reader",
    );
    const [cd] = await bench.runPhases(coldDeep, [{ phase: 4, rate: o.rate, durationMs: duration }], { collect: false });
    if (cd) phases.push({ name: "deep after restart", result: cd });
  } else {
    bench.log("cold after restart: only with --target embedded (the production topology is not restarted by the bench)");
  }

  const title = `history on ${target.kind}: ListMessages(limit ${o.pageSize}) over ${o.groups} groups × ~${o.historyMessages} messages, ${o.textBytes}-byte texts`;
  process.stdout.write(`\n${title}\n`);
  process.stdout.write(
    `${gridTable(
      ["phase", "reads/s", "ok", "errors", "msgs/page", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "srv cores", "µs/read"],
      phases.map(({ name, result: r }) => [
        name,
        fmt(r.sender.rate),
        fmt(r.sender.ok),
        fmt(Object.values(r.sender.errors).reduce((a, b) => a + b, 0)),
        fmt(r.sender.ok > 0 ? r.sender.listedMessages / r.sender.ok : 0, 1),
        fmt(r.sendLatency.p50, 2),
        fmt(r.sendLatency.p90, 2),
        fmt(r.sendLatency.p99, 2),
        fmt(r.sendLatency.p999, 2),
        fmt(r.sendLatency.max, 1),
        fmt(r.window.serverCores, 2),
        fmt(r.sender.ok > 0 ? (r.window.serverCpuSeconds * 1e6) / r.sender.ok : 0, 1),
      ]),
    )}\n`,
  );
  if (warm) process.stdout.write(`${table(cpuRows(warm.window))}\n`);
  const firstErrors = phases.flatMap((p) => Object.entries(p.result.sender.errors).map(([c, n]) => `${p.name}: code ${c} × ${n}`));
  if (firstErrors.length) process.stdout.write(`errors: ${firstErrors.join("; ")}\n`);
  const result = {
    ...header(bench, { groups: o.groups, members: o.members, messagesPerGroup: o.historyMessages, pageSize: o.pageSize, rate: o.rate, writeRate: o.writeRate, durationSeconds: o.duration, textBytes: o.textBytes }),
    results: {
      fill: { messages: fill.sender.ok, errors: fill.sender.errors, sendLatencyMs: fill.sendLatency },
      phases: phases.map(({ name, result: r }) => ({
        name,
        rate: r.sender.rate,
        ok: r.sender.ok,
        errors: r.sender.errors,
        messagesPerPage: r.sender.ok > 0 ? r.sender.listedMessages / r.sender.ok : 0,
        latencyMs: r.sendLatency,
        senderLagMs: r.senderLag,
        window: r.window,
        serverMetrics: r.serverMetrics,
        percentiles: r.sendCurve,
      })),
    },
  };
  if (o.write) {
    const colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"];
    const svg = lineChart({
      title: `ListMessages(limit ${o.pageSize}) latency by percentile on ${target.kind}`,
      subtitle: `${o.groups} groups × ~${o.historyMessages} messages; ${fmt(o.rate)} reads/s open loop`,
      xLabel: "percentile",
      yLabel: "latency (ms, log scale)",
      xScale: "percentile",
      yScale: "log",
      series: phases.map((p, i) => ({ label: p.name, color: colors[i % colors.length] as string, points: p.result.sendCurve, dots: true })),
      hlines: [
        { y: 5, label: "5 ms (warm target)", color: "#2ca02c" },
        { y: 15, label: "15 ms (cold target)", color: "#d62728" },
      ],
    });
    const files = writeResults("history", target.kind, result, svg);
    process.stdout.write(`\nwrote ${files.json}${files.svg ? ` and ${files.svg}` : ""}\n`);
  }
  const anyErrors = phases.some((p) => Object.keys(p.result.sender.errors).length > 0);
  return anyErrors ? 3 : 0;
}
