/**
 * fixed: G groups × S members, every member its own subscriber connection
 * and live stream; one sender posting to random groups (as a random member)
 * at R msg/s open loop for the warm-up, then for the measured duration.
 */
import type { Bench } from "../lib/bench.js";
import { fmt, gridTable, lineChart, resultName, writeResults } from "../lib/report.js";
import { serverMetricsText } from "../lib/server-metrics.js";
import { cpuRows, deliveryRows, header, latencyText, lossOf, openShapeStreams, populateShape, senderGroups, senderInit, table } from "./common.js";

export async function runFixed(bench: Bench): Promise<number> {
  const o = bench.opts;
  const target = await bench.startTarget();
  const pop = await populateShape(bench);
  const streams = await openShapeStreams(bench);
  const sender = await bench.startSender(senderInit(bench, target, senderGroups(pop)));
  // Idle baseline: the server with every stream open and nothing sent (heartbeats only).
  const idle0 = bench.sample();
  await new Promise((r) => setTimeout(r, 2000));
  const idle = bench.window(idle0, bench.sample());
  const phases = [
    ...(o.warmup > 0 ? [{ phase: 0, rate: o.rate, durationMs: o.warmup * 1000 }] : []),
    { phase: 1, rate: o.rate, durationMs: o.duration * 1000 },
  ];
  bench.log(`sending ${o.rate} msg/s to ${o.groups} groups × ${o.members} members: ${o.warmup} s warm-up, then ${o.duration} s measured`);
  const results = await bench.runPhases(sender, phases, { collect: true });
  const r = results.find((x) => x.phase === 1);
  if (!r) throw new Error("no measured phase");
  const totals = bench.mergedTotals();
  const loss = lossOf(r.sender.expectedDeliveries, r.deliveries, totals);
  const deliveriesPerSecond = r.deliveries / (o.duration || 1);
  const w = r.window;
  const cpuPerDeliveryUs = r.deliveries > 0 ? (w.serverCpuSeconds * 1e6) / r.deliveries : 0;

  const title = `fixed on ${target.kind}: ${o.groups} groups × ${o.members} members (${fmt(streams)} streams), ${fmt(o.rate)} msg/s × ${o.duration} s, ${o.textBytes}-byte texts`;
  const rows: [string, string][] = [
    ...deliveryRows(r, totals),
    ["deliveries/s", fmt(deliveriesPerSecond)],
    ["delivery latency", latencyText(r.deliveryLatency)],
    ["SendMessage latency", latencyText(r.sendLatency)],
    ["sender schedule lag", `p99 ${fmt(r.senderLag.p99, 2)} ms, max ${fmt(r.senderLag.max, 2)} ms`],
    ["subscriber loop delay", r.subscriberLoopDelay ? `p99 ${fmt(r.subscriberLoopDelay.p99, 2)} ms, max ${fmt(r.subscriberLoopDelay.max, 2)} ms (the readers' own stalls, counted in delivery latency)` : "-"],
    ...cpuRows(w, r.deliveries),
    ["server CPU per message sent", r.sender.ok > 0 ? `${fmt((w.serverCpuSeconds * 1e6) / r.sender.ok, 0)} µs (send path + its ${o.members} deliveries)` : "-"],
    ["server CPU idle (streams open)", `${fmt(idle.serverCores, 3)} cores`],
    ["server's own account", target.hasMetrics ? serverMetricsText(r.serverMetrics) : "- (the reference server has no /metrics)"],
  ];
  if (target.kind === "reference") {
    rows.push(["", ""], ["note", "reference: bench/reference/broadcast-server.ts, no auth, no storage; the same sender (SendMessage over h2c) and subscribers, so latency is send → delivery at each subscriber as for the others"]);
  }
  const sendErrors = Object.values(r.sender.errors).reduce((a, b) => a + b, 0);
  bench.figures = [
    { label: "messages sent OK", unit: "", value: r.sender.ok, decimals: 0, better: "-" },
    { label: "deliveries/s", unit: "", value: deliveriesPerSecond, decimals: 0, better: "higher" },
    { label: "loss", unit: "", value: loss.loss, decimals: 0, better: "lower" },
    { label: "duplicates", unit: "", value: totals.duplicates, decimals: 0, better: "lower" },
    { label: "send errors + skipped", unit: "", value: sendErrors + r.sender.skipped, decimals: 0, better: "lower" },
    { label: "delivery p50", unit: "ms", value: r.deliveryLatency.p50, decimals: 2, better: "lower" },
    { label: "delivery p99", unit: "ms", value: r.deliveryLatency.p99, decimals: 2, better: "lower" },
    { label: "delivery p99.9", unit: "ms", value: r.deliveryLatency.p999, decimals: 2, better: "lower" },
    { label: "delivery max", unit: "ms", value: r.deliveryLatency.max, decimals: 2, better: "lower" },
    { label: "SendMessage p99", unit: "ms", value: r.sendLatency.p99, decimals: 2, better: "lower" },
    { label: "server CPU per delivery", unit: "µs", value: r.deliveries > 0 ? cpuPerDeliveryUs : undefined, decimals: 2, better: "lower" },
    { label: "server CPU per message", unit: "µs", value: r.sender.ok > 0 ? (w.serverCpuSeconds * 1e6) / r.sender.ok : undefined, decimals: 0, better: "lower" },
    { label: "server cores", unit: "", value: w.serverCores, decimals: 2, better: "lower" },
    { label: "server cores idle (streams open)", unit: "", value: idle.serverCores, decimals: 3, better: "lower" },
    { label: "server RSS", unit: "MiB", value: w.serverRssMiB, decimals: 1, better: "lower" },
    { label: "load generator cores", unit: "", value: w.generatorCores, decimals: 2, better: "-" },
    { label: "machine busy cores", unit: "", value: w.machineBusyCores, decimals: 2, better: "-" },
    {
      label: "server waiting for a CPU (most of its processes)",
      unit: "%",
      value: w.server.length > 0 ? Math.max(...w.server.map((p) => p.runQueueShare)) * 100 : undefined,
      decimals: 1,
      better: "-",
    },
    { label: "load generator bound / disturbed", unit: "", value: `${w.generatorBound.length > 0 ? "YES" : "no"} / ${w.disturbed ? "YES" : "no"}`, decimals: 0, better: "-" },
  ];
  process.stdout.write(`\n${title}\n${table(rows)}\n`);
  if (w.server.length > 0) {
    process.stdout.write(
      `\n${gridTable(
        ["process", "CPU s", "cores", "RSS MiB", "peak MiB"],
        [...w.server, ...w.backends, ...w.generators].map((p) => [p.name, fmt(p.cpuSeconds, 2), fmt(p.cores, 2), fmt(p.rssMiB, 1), fmt(p.peakRssMiB, 1)]),
      )}\n`,
    );
  }
  // Deliveries and the worst latency per wall-clock second, from the first delivery on (warm-up included).
  const seconds = Object.entries(totals.perSecond)
    .map(([s, [n, max]]) => ({ second: Number(s), deliveries: n, maxLatencyMs: max / 1000 }))
    .filter((x) => x.deliveries > 0)
    .sort((a, b) => a.second - b.second);
  const t0 = seconds[0]?.second ?? 0;
  const perSecond: { second: number; deliveries: number; maxLatencyMs: number }[] = [];
  for (let t = t0; seconds.length > 0 && t <= (seconds.at(-1)?.second ?? t0); t++) {
    const x = seconds.find((y) => y.second === t);
    perSecond.push({ second: t - t0, deliveries: x?.deliveries ?? 0, maxLatencyMs: x?.maxLatencyMs ?? 0 });
  }
  const result = {
    ...header(bench, { groups: o.groups, members: o.members, streams: streams, rate: o.rate, durationSeconds: o.duration, warmupSeconds: o.warmup, textBytes: o.textBytes, workers: o.workers }),
    results: {
      messagesSent: r.sender.ok,
      sendErrors: r.sender.errors,
      sendsSkipped: r.sender.skipped,
      deliveriesExpected: r.sender.expectedDeliveries,
      deliveriesReceived: r.deliveries,
      loss: loss.loss,
      lossDetail: { ...loss, gapSeqs: totals.gapSeqs, behindSeqs: totals.behindSeqs, behindStreams: totals.behindStreams, resetSeqs: totals.resetSeqs },
      duplicates: totals.duplicates,
      streamEnds: totals.ends,
      streamEndMessages: totals.endMessages,
      reconnects: totals.reconnects,
      deliveriesPerSecond: Math.round(deliveriesPerSecond),
      deliveryLatencyMs: r.deliveryLatency,
      sendLatencyMs: r.sendLatency,
      senderLagMs: r.senderLag,
      subscriberLoopDelayMs: r.subscriberLoopDelay,
      serverMetrics: r.serverMetrics,
      serverCpuSeconds: w.serverCpuSeconds,
      serverCores: w.serverCores,
      serverCpuPerDeliveryUs: Math.round(cpuPerDeliveryUs * 100) / 100,
      serverCpuPerMessageUs: r.sender.ok > 0 ? Math.round((w.serverCpuSeconds * 1e6) / r.sender.ok) : 0,
      serverRssMiB: w.serverRssMiB,
      serverIdleCores: idle.serverCores,
      window: w,
      loadGeneratorBound: w.generatorBound.length > 0,
      warmup: results.find((x) => x.phase === 0)?.deliveryLatency,
      deliveryPercentiles: r.deliveryCurve,
      sendPercentiles: r.sendCurve,
      perSecond,
    },
  };
  if (o.write) {
    const svg = lineChart({
      title: `Latency by percentile: ${o.groups}×${o.members} streams, ${fmt(o.rate)} msg/s (${fmt(deliveriesPerSecond)} deliveries/s), ${target.kind}`,
      subtitle: `loss ${loss.loss}, server ${fmt(cpuPerDeliveryUs, 2)} µs CPU/delivery, ${fmt(w.serverCores, 2)} cores; ${bench.startedAt.toISOString()}`,
      xLabel: "percentile",
      yLabel: "latency (ms, log scale)",
      xScale: "percentile",
      yScale: "log",
      series: [
        { label: "send → receive (every delivery)", color: "#1f77b4", points: r.deliveryCurve, dots: true },
        { label: "SendMessage (scheduled → response)", color: "#ff7f0e", points: r.sendCurve, dots: true, dashed: true },
      ],
      hlines: [{ y: 10, label: "10 ms (embedded p99 target)", color: "#2ca02c" }],
    });
    const timeline = lineChart({
      title: `Deliveries per second and worst latency per second (${target.kind}, ${fmt(o.rate)} msg/s offered)`,
      subtitle: `seconds from the first delivery; the first ${o.warmup} s are the warm-up`,
      xLabel: "second of the run",
      yLabel: "deliveries received in the second",
      series: [{ label: "deliveries/s", color: "#1f77b4", points: perSecond.map((x) => [x.second, x.deliveries]) }],
      right: { label: "max latency in the second (ms)", series: [{ label: "max latency ms (right axis)", color: "#d62728", dashed: true, points: perSecond.map((x) => [x.second, x.maxLatencyMs]) }] },
    });
    const files = writeResults("fixed", resultName(target.kind, o), result, svg, { timeline });
    bench.resultFile = files.json;
    process.stdout.write(`\nwrote ${files.json}${files.svg ? ` and ${files.svg}` : ""}${files.extra.length ? ` and ${files.extra.join(", ")}` : ""}\n`);
  }
  return loss.loss === 0 && totals.duplicates === 0 ? 0 : 3;
}
