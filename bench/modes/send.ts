/**
 * send: SendMessage latency (scheduled send time → response, open loop) at
 * rising rates, ×factor (2) per step, until saturation: p99 above
 * --p99-limit (50 ms), errors, skipped sends, or an achieved rate below 95%
 * of the offered one. By default no subscriber streams are open, so the
 * write path is measured alone (authenticate, authorize, validate, sequence,
 * persist, publish); --subscribe adds the fixed shape's streams.
 */
import type { Bench } from "../lib/bench.js";
import { fmt, gridTable, lineChart, writeResults } from "../lib/report.js";
import { cpuRows, header, latencyText, openShapeStreams, populateShape, senderGroups, senderInit, table } from "./common.js";

export async function runSend(bench: Bench): Promise<number> {
  const o = bench.opts;
  const target = await bench.startTarget();
  const users = o.users ?? (o.subscribe ? o.groups * o.members : Math.min(o.groups * o.members, Math.max(o.members, 200)));
  const pop = await populateShape(bench, users);
  const streams = o.subscribe ? await openShapeStreams(bench) : 0;
  const sender = await bench.startSender(senderInit(bench, target, senderGroups(pop)));
  if (o.warmup > 0) {
    bench.log(`warm-up: ${o.rate} msg/s for ${o.warmup} s`);
    await bench.runPhases(sender, [{ phase: 0, rate: o.rate, durationMs: o.warmup * 1000 }], { collect: o.subscribe });
  }
  const steps = [];
  let rate = o.rate;
  for (let k = 1; k <= o.maxSteps; k++) {
    bench.log(`step ${k}: ${fmt(rate)} SendMessage/s for ${o.stepDuration} s`);
    const [r] = await bench.runPhases(sender, [{ phase: k, rate, durationMs: o.stepDuration * 1000 }], { collect: o.subscribe });
    if (!r) throw new Error("no step result");
    const errors = Object.values(r.sender.errors).reduce((a, b) => a + b, 0);
    const achieved = r.sender.ok / Math.max(o.stepDuration, r.sender.spanMs / 1000);
    const reasons: string[] = [];
    if (r.sendLatency.p99 > o.p99Limit) reasons.push(`p99 ${fmt(r.sendLatency.p99, 1)} ms > ${o.p99Limit} ms`);
    if (errors > 0) reasons.push(`${fmt(errors)} errors (${Object.entries(r.sender.errors).map(([c, n]) => `code ${c}: ${n}`).join(", ")})`);
    if (r.sender.skipped > 0) reasons.push(`${fmt(r.sender.skipped)} skipped (in-flight cap)`);
    if (achieved < 0.95 * rate) reasons.push(`achieved ${fmt(achieved)}/s < 95% of offered`);
    const step = {
      step: k,
      rate,
      achieved: Math.round(achieved),
      ok: r.sender.ok,
      errors,
      skipped: r.sender.skipped,
      latencyMs: r.sendLatency,
      senderLagMs: r.senderLag,
      serverCores: r.window.serverCores,
      serverCpuPerSendUs: r.sender.ok > 0 ? Math.round(((r.window.serverCpuSeconds * 1e6) / r.sender.ok) * 10) / 10 : 0,
      generatorBound: r.window.generatorBound,
      disturbed: r.window.disturbed,
      pass: reasons.length === 0,
      why: reasons.join("; "),
      window: r.window,
      serverMetrics: r.serverMetrics,
      curve: r.sendCurve,
    };
    steps.push(step);
    bench.log(`  achieved ${fmt(achieved)}/s, ${latencyText(r.sendLatency)} → ${step.pass ? "pass" : `saturated: ${step.why}`}`);
    if (!step.pass) break;
    if (step.generatorBound.length > 0) {
      bench.log(`  stopping: the load generator is the limit (${step.generatorBound.join("; ")})`);
      break;
    }
    rate = Math.round(rate * o.factor);
  }
  const best = steps.filter((s) => s.pass).at(-1);
  const title = `send on ${target.kind}: SendMessage to ${o.groups} groups of ${o.members} (${pop.users.length} users), ${o.textBytes}-byte texts, ${streams ? `${fmt(streams)} live streams` : "no live streams"}`;
  process.stdout.write(`\n${title}\n`);
  process.stdout.write(
    `${gridTable(
      ["step", "offered/s", "achieved/s", "ok", "errors", "skipped", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "srv cores", "µs/send", "result"],
      steps.map((s) => [
        String(s.step),
        fmt(s.rate),
        fmt(s.achieved),
        fmt(s.ok),
        fmt(s.errors),
        fmt(s.skipped),
        fmt(s.latencyMs.p50, 2),
        fmt(s.latencyMs.p90, 2),
        fmt(s.latencyMs.p99, 2),
        fmt(s.latencyMs.p999, 2),
        fmt(s.latencyMs.max, 1),
        fmt(s.serverCores, 2),
        fmt(s.serverCpuPerSendUs, 1),
        `${s.pass ? "pass" : "SATURATED"}${s.generatorBound.length ? " (gen-bound)" : ""}${s.disturbed ? " (disturbed)" : ""}`,
      ]),
    )}\n`,
  );
  const rows: [string, string][] = [["highest passing rate", best ? `${fmt(best.rate)} msg/s at p99 ${fmt(best.latencyMs.p99, 2)} ms` : "none"]];
  const at1000 = steps.find((s) => s.rate === 1000);
  if (at1000) rows.push(["at 1,000 msg/s", latencyText(at1000.latencyMs)]);
  if (best) rows.push(...cpuRows(best.window));
  process.stdout.write(`${table(rows)}\n`);
  const result = {
    ...header(bench, { groups: o.groups, members: o.members, users: pop.users.length, streams, startRate: o.rate, factor: o.factor, stepSeconds: o.stepDuration, p99LimitMs: o.p99Limit, textBytes: o.textBytes }),
    results: {
      best: best ? { rate: best.rate, p99Ms: best.latencyMs.p99 } : null,
      steps: steps.map(({ curve: _c, ...s }) => s),
    },
  };
  if (o.write) {
    const svg = lineChart({
      title: `SendMessage latency vs rate on ${target.kind} (${streams ? `${fmt(streams)} streams` : "no streams"})`,
      subtitle: best ? `highest passing: ${fmt(best.rate)} msg/s at p99 ${fmt(best.latencyMs.p99, 2)} ms` : "no passing step",
      xLabel: "offered SendMessage per second",
      yLabel: "latency (ms, log scale)",
      yScale: "log",
      series: [
        { label: "p99", color: "#d62728", points: steps.map((s) => [s.rate, s.latencyMs.p99]), dots: true },
        { label: "p90", color: "#ff7f0e", points: steps.map((s) => [s.rate, s.latencyMs.p90]), dots: true },
        { label: "p50", color: "#1f77b4", points: steps.map((s) => [s.rate, s.latencyMs.p50]), dots: true },
      ],
      hlines: [
        { y: 10, label: "10 ms (embedded target at 1,000/s)", color: "#2ca02c" },
        { y: o.p99Limit, label: `saturation limit ${o.p99Limit} ms`, color: "#d62728" },
      ],
    });
    const files = writeResults("send", target.kind, result, svg);
    process.stdout.write(`\nwrote ${files.json}${files.svg ? ` and ${files.svg}` : ""}\n`);
  }
  return best ? 0 : 3;
}
