/**
 * max: the fixed shape, ramping the send rate ×factor (1.5) per step of
 * --step-duration (10 s) until delivery p99 exceeds --p99-limit (200 ms),
 * anything is lost or duplicated, a send fails, or the load generator
 * becomes the bottleneck; reports the highest passing step. Each step is
 * measured alone: after it, the bench waits until every stream reached its
 * groups' heads (bounded by --drain) before the next step starts.
 */
import type { Bench, PhaseResult } from "../lib/bench.js";
import { fmt, gridTable, lineChart, resultName, writeResults } from "../lib/report.js";
import { cpuRows, header, latencyText, lossOf, openShapeStreams, populateShape, senderGroups, senderInit, table } from "./common.js";

interface Step {
  step: number;
  rate: number;
  deliveriesPerSecond: number;
  expected: number;
  received: number;
  loss: number;
  duplicates: number;
  sendErrors: number;
  skipped: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  sendP99: number;
  serverCores: number;
  serverCpuPerDeliveryUs: number;
  generatorCores: number;
  machineBusyCores: number;
  generatorBound: string[];
  disturbed: boolean;
  pass: boolean;
  why: string;
  result: PhaseResult;
}

export async function runMax(bench: Bench): Promise<number> {
  const o = bench.opts;
  const target = await bench.startTarget();
  const pop = await populateShape(bench);
  const streams = await openShapeStreams(bench);
  const sender = await bench.startSender(senderInit(bench, target, senderGroups(pop)));
  if (o.warmup > 0) {
    bench.log(`warm-up: ${o.rate} msg/s for ${o.warmup} s`);
    await bench.runPhases(sender, [{ phase: 0, rate: o.rate, durationMs: o.warmup * 1000 }], { collect: true });
  }
  const steps: Step[] = [];
  let prev = bench.mergedTotals();
  let rate = o.rate;
  for (let k = 1; k <= o.maxSteps; k++) {
    bench.log(`step ${k}: ${fmt(rate)} msg/s (${fmt(rate * o.members)} deliveries/s offered) for ${o.stepDuration} s`);
    const [r] = await bench.runPhases(sender, [{ phase: k, rate, durationMs: o.stepDuration * 1000 }], { collect: true });
    if (!r) throw new Error("no step result");
    const now = bench.mergedTotals();
    // Counters are cumulative: this step's share is the difference (behind-head is a state at collect time).
    const delta = {
      ...now,
      duplicates: now.duplicates - prev.duplicates,
      gapSeqs: now.gapSeqs - prev.gapSeqs,
      resetSeqs: now.resetSeqs - prev.resetSeqs,
    };
    prev = now;
    const l = lossOf(r.sender.expectedDeliveries, r.deliveries, delta);
    const sendErrors = Object.values(r.sender.errors).reduce((a, b) => a + b, 0);
    const w = r.window;
    const reasons: string[] = [];
    if (r.deliveryLatency.p99 > o.p99Limit) reasons.push(`p99 ${fmt(r.deliveryLatency.p99, 1)} ms > ${o.p99Limit} ms`);
    if (l.loss > 0) reasons.push(`${fmt(l.loss)} deliveries lost`);
    if (delta.duplicates > 0) reasons.push(`${fmt(delta.duplicates)} duplicates`);
    if (sendErrors > 0) reasons.push(`${fmt(sendErrors)} send errors`);
    if (r.sender.skipped > 0) reasons.push(`${fmt(r.sender.skipped)} sends skipped (in-flight cap)`);
    const step: Step = {
      step: k,
      rate,
      deliveriesPerSecond: Math.round(r.deliveries / o.stepDuration),
      expected: r.sender.expectedDeliveries,
      received: r.deliveries,
      loss: l.loss,
      duplicates: delta.duplicates,
      sendErrors,
      skipped: r.sender.skipped,
      p50: r.deliveryLatency.p50,
      p99: r.deliveryLatency.p99,
      p999: r.deliveryLatency.p999,
      max: r.deliveryLatency.max,
      sendP99: r.sendLatency.p99,
      serverCores: w.serverCores,
      serverCpuPerDeliveryUs: r.deliveries > 0 ? Math.round(((w.serverCpuSeconds * 1e6) / r.deliveries) * 100) / 100 : 0,
      generatorCores: w.generatorCores,
      machineBusyCores: w.machineBusyCores,
      generatorBound: w.generatorBound,
      disturbed: w.disturbed,
      pass: reasons.length === 0,
      why: reasons.join("; "),
      result: r,
    };
    steps.push(step);
    bench.log(
      `  ${fmt(step.deliveriesPerSecond)} deliveries/s, p99 ${fmt(step.p99, 1)} ms, loss ${step.loss}, server ${fmt(step.serverCores, 2)} cores, generators ${fmt(step.generatorCores, 2)} → ${step.pass ? "pass" : `FAIL: ${step.why}`}${step.generatorBound.length ? " (load generator bound)" : ""}`,
    );
    if (!step.pass) break;
    if (step.generatorBound.length > 0) {
      bench.log(`  stopping: the load generator, not the server, is the limit (${step.generatorBound.join("; ")})`);
      break;
    }
    rate = Math.round(rate * o.factor);
  }
  const passing = steps.filter((s) => s.pass);
  const best = passing.at(-1);
  const last = steps.at(-1);
  const stoppedBy = !last ? "no steps" : !last.pass ? last.why : last.generatorBound.length ? `load generator bound: ${last.generatorBound.join("; ")}` : `--max-steps ${o.maxSteps} reached`;
  const title = `max on ${target.kind}: ${o.groups} groups × ${o.members} members (${fmt(streams)} streams), ×${o.factor} per ${o.stepDuration} s step, pass = p99 ≤ ${o.p99Limit} ms and no loss`;
  process.stdout.write(`\n${title}\n`);
  process.stdout.write(
    `${gridTable(
      ["step", "msg/s", "deliv/s", "expected", "received", "loss", "dup", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "send p99", "srv cores", "µs/deliv", "gen cores", "busy", "result"],
      steps.map((s) => [
        String(s.step),
        fmt(s.rate),
        fmt(s.deliveriesPerSecond),
        fmt(s.expected),
        fmt(s.received),
        fmt(s.loss),
        fmt(s.duplicates),
        fmt(s.p50, 2),
        fmt(s.p99, 2),
        fmt(s.p999, 2),
        fmt(s.max, 1),
        fmt(s.sendP99, 2),
        fmt(s.serverCores, 2),
        fmt(s.serverCpuPerDeliveryUs, 2),
        fmt(s.generatorCores, 2),
        fmt(s.machineBusyCores, 2),
        `${s.pass ? "pass" : "FAIL"}${s.generatorBound.length ? " (gen-bound)" : ""}${s.disturbed ? " (disturbed)" : ""}`,
      ]),
    )}\n`,
  );
  const rows: [string, string][] = [
    ["highest passing step", best ? `${fmt(best.rate)} msg/s = ${fmt(best.deliveriesPerSecond)} deliveries/s at p99 ${fmt(best.p99, 2)} ms` : "none"],
    ["stopped by", stoppedBy],
  ];
  if (best) {
    rows.push(["delivery latency (best)", latencyText(best.result.deliveryLatency)]);
    rows.push(...cpuRows(best.result.window, best.received));
  }
  process.stdout.write(`${table(rows)}\n`);
  if (target.kind === "reference") {
    process.stdout.write("  (reference: bench/reference/broadcast-server.ts, no auth, no storage; the same sender and subscribers, latency is send → delivery at each subscriber)\n");
  }
  bench.figures = [
    { label: "highest passing rate", unit: "msg/s", value: best?.rate, decimals: 0, better: "higher" },
    { label: "deliveries/s (best step)", unit: "", value: best?.deliveriesPerSecond, decimals: 0, better: "higher" },
    { label: "delivery p50 (best step)", unit: "ms", value: best?.p50, decimals: 2, better: "lower" },
    { label: "delivery p99 (best step)", unit: "ms", value: best?.p99, decimals: 2, better: "lower" },
    { label: "SendMessage p99 (best step)", unit: "ms", value: best?.sendP99, decimals: 2, better: "lower" },
    { label: "server CPU per delivery (best step)", unit: "µs", value: best && best.received > 0 ? best.serverCpuPerDeliveryUs : undefined, decimals: 2, better: "lower" },
    {
      label: "server CPU per message (best step)",
      unit: "µs",
      value: best && best.result.sender.ok > 0 ? (best.result.window.serverCpuSeconds * 1e6) / best.result.sender.ok : undefined,
      decimals: 0,
      better: "lower",
    },
    { label: "server cores (best step)", unit: "", value: best?.serverCores, decimals: 2, better: "-" },
    { label: "load generator cores (best step)", unit: "", value: best?.generatorCores, decimals: 2, better: "-" },
    { label: "steps passed", unit: "", value: passing.length, decimals: 0, better: "higher" },
    { label: "stopped by", unit: "", value: stoppedBy, decimals: 0, better: "-" },
  ];
  const result = {
    ...header(bench, { groups: o.groups, members: o.members, streams: streams, startRate: o.rate, factor: o.factor, stepSeconds: o.stepDuration, p99LimitMs: o.p99Limit, textBytes: o.textBytes, workers: o.workers }),
    results: {
      best: best ? { rate: best.rate, deliveriesPerSecond: best.deliveriesPerSecond, p99Ms: best.p99, serverCpuPerDeliveryUs: best.serverCpuPerDeliveryUs } : null,
      stoppedBy,
      steps: steps.map(({ result, ...s }) => ({
        ...s,
        deliveryLatencyMs: result.deliveryLatency,
        sendLatencyMs: result.sendLatency,
        senderLagMs: result.senderLag,
        window: result.window,
        serverMetrics: result.serverMetrics,
      })),
    },
  };
  if (o.write) {
    const svg = lineChart({
      title: `Max throughput on ${target.kind}: deliveries/s vs latency (${o.groups}×${o.members} streams)`,
      subtitle: best ? `best passing: ${fmt(best.deliveriesPerSecond)} deliveries/s at p99 ${fmt(best.p99, 1)} ms; stopped by ${stoppedBy}` : `no passing step; ${stoppedBy}`,
      xLabel: "deliveries per second (received)",
      yLabel: "delivery latency (ms, log scale)",
      yScale: "log",
      series: [
        { label: "p99", color: "#d62728", points: steps.map((s) => [s.deliveriesPerSecond, s.p99]), dots: true },
        { label: "p50", color: "#1f77b4", points: steps.map((s) => [s.deliveriesPerSecond, s.p50]), dots: true },
        { label: "max", color: "#7f7f7f", points: steps.map((s) => [s.deliveriesPerSecond, s.max]), dots: true, dashed: true },
      ],
      hlines: [{ y: o.p99Limit, label: `p99 limit ${o.p99Limit} ms`, color: "#d62728" }],
    });
    const files = writeResults("max", resultName(target.kind, o), result, svg);
    bench.resultFile = files.json;
    process.stdout.write(`\nwrote ${files.json}${files.svg ? ` and ${files.svg}` : ""}\n`);
  }
  return best ? 0 : 3;
}
