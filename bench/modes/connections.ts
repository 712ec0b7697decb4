/**
 * connections: ramp live subscriber connections toward --connections
 * (100,000) in groups of --group-size (10), --step-connections (10,000) at a
 * time, spread over several client processes (≤ 16,000 connections each:
 * one process may hold ~20,000 open files here) and, on the production
 * topology, several stream processes (--stream-procs, on --hosts addresses).
 * After each step: the server memory added per idle connection (RSS of the
 * stream processes after the new connections settled, minus before), then a
 * light message rate (default: 10,000 deliveries/s) to the groups whose
 * members are all connected, measured like fixed (p99, loss), and before it
 * the servers' CPU over --idle-seconds with no message (heartbeats only).
 * Once every connection is open: --final-duration (60 s) of traffic to every
 * group with all connections held.
 */
import type { Bench } from "../lib/bench.js";
import type { SenderPeer } from "../lib/bench.js";
import { fmt, gridTable, lineChart, resultName, writeResults } from "../lib/report.js";
import { header, latencyText, lossOf, senderGroups, senderInit, table } from "./common.js";

const PER_CLIENT_PROC = 16_000;

export async function runConnections(bench: Bench): Promise<number> {
  const o = bench.opts;
  const n = o.connections;
  const S = o.groupSize;
  const d = o.devicesPerUser;
  const users = Math.ceil(n / d);
  // Every user in exactly one group (users are assigned group-major), unless --groups says otherwise.
  const groups = o.given.has("groups") ? o.groups : Math.max(1, Math.floor(users / S));
  const perGroup = S * d; // connections per group
  const rate = o.given.has("rate") ? o.rate : Math.max(1, Math.round(10_000 / perGroup));
  const clientProcs = o.clientProcs || Math.max(1, Math.ceil(n / PER_CLIENT_PROC));
  if (n / clientProcs > 18_000) throw new Error(`${n} connections over ${clientProcs} client processes is more than ~18,000 each: raise --client-procs`);
  const target = await bench.startTarget();
  const streamProcs = target.processes.filter((p) => p.services === "stream" || p.services === "all");
  if (streamProcs.length > 0 && n / streamProcs.length > 18_000) {
    bench.log(`warning: ${fmt(n)} connections over ${streamProcs.length} stream process(es) exceed ~18,000 open files each; expect failures past that (use --target production --stream-procs ${Math.ceil(n / 16_000)})`);
  }
  const pop = await bench.populate({ groups, members: S, users, registerConcurrency: o.registerConcurrency, groupConcurrency: 32 });
  const specs = bench.streamSpecs(d).slice(0, n);
  const steps = [];
  let opened = 0;
  let sender: SenderPeer | undefined;
  let prevTotals = bench.mergedTotals();
  let stopReason = "";
  const streamRss = () => {
    const s = bench.sample();
    const names = new Set(streamProcs.map((p) => p.name));
    const stream = s.server.filter((p) => names.has(p.name)).reduce((a, p) => a + p.sample.rssBytes, 0);
    const all = s.server.reduce((a, p) => a + p.sample.rssBytes, 0);
    return { stream, all };
  };
  const streamNames = new Set(streamProcs.map((p) => p.name));
  /** measureIdle: CPU of the servers over --idle-seconds with every open connection held and no message sent (heartbeats only). */
  const measureIdle = async (connections: number) => {
    const a = bench.sample();
    await new Promise((r) => setTimeout(r, o.idleSeconds * 1000));
    const w = bench.window(a, bench.sample());
    const streamCores = w.server.filter((p) => streamNames.has(p.name)).reduce((x, p) => x + p.cores, 0);
    return {
      idleSeconds: o.idleSeconds,
      idleStreamCores: Math.round(streamCores * 1000) / 1000,
      idleStreamCoresPer10k: Math.round(((streamCores * 10_000) / Math.max(1, connections)) * 1000) / 1000,
      idleServerCores: w.serverCores,
      idleBackendCores: w.backendCores,
      idleGeneratorCores: w.generatorCores,
      idleDisturbed: w.disturbed,
    };
  };
  /** traffic: `rate` msg/s to `toGroups` for `seconds`, measured like fixed; `stop` says why the ramp must end (loss, duplicates, p99). */
  const traffic = async (toGroups: typeof pop.groups, seconds: number, phase: number) => {
    if (sender) await bench.closeSender(sender);
    sender = await bench.startSender(senderInit(bench, target, senderGroups(pop, toGroups)));
    bench.log(`  traffic: ${fmt(rate)} msg/s to ${fmt(toGroups.length)} groups (${fmt(rate * perGroup)} deliveries/s) for ${seconds} s`);
    const [r] = await bench.runPhases(sender, [{ phase, rate, durationMs: seconds * 1000 }], { collect: true });
    if (!r) throw new Error("no step result");
    const now = bench.mergedTotals();
    const delta = { ...now, duplicates: now.duplicates - prevTotals.duplicates, gapSeqs: now.gapSeqs - prevTotals.gapSeqs, resetSeqs: now.resetSeqs - prevTotals.resetSeqs };
    prevTotals = now;
    const l = lossOf(r.sender.expectedDeliveries, r.deliveries, delta);
    // Deliveries go to devices: the sender counts members, each has d devices.
    const expected = r.sender.expectedDeliveries * d;
    const loss = Math.max(l.seqMissing, expected - r.deliveries);
    const fields = {
      rate,
      trafficSeconds: seconds,
      deliveriesPerSecond: Math.round(r.deliveries / seconds),
      expected,
      received: r.deliveries,
      loss,
      duplicates: delta.duplicates,
      sendErrors: Object.values(r.sender.errors).reduce((a, b) => a + b, 0),
      deliveryLatencyMs: r.deliveryLatency,
      sendLatencyMs: r.sendLatency,
      serverCores: r.window.serverCores,
      backendCores: r.window.backendCores,
      generatorCores: r.window.generatorCores,
      generatorBound: r.window.generatorBound,
      disturbed: r.window.disturbed,
      window: r.window,
      serverMetrics: r.serverMetrics,
    };
    bench.log(`  ${latencyText(r.deliveryLatency)}; loss ${loss}; server ${fmt(r.window.serverCores, 2)} cores, backends ${fmt(r.window.backendCores, 2)}`);
    let stop = "";
    if (loss > 0 || delta.duplicates > 0) stop = `loss ${loss}, duplicates ${delta.duplicates}`;
    else if (r.deliveryLatency.p99 > o.p99Limit) stop = `p99 ${r.deliveryLatency.p99} ms > ${o.p99Limit} ms`;
    return { fields, stop };
  };
  /** fullyConnected: every device of every member is among the first `opened` connections (user u's devices are connections u·d … u·d + d − 1). */
  const fullyConnected = (g: (typeof pop.groups)[number], opened: number) => g.members.every((u) => (u + 1) * d <= opened);
  // Baseline: the stream processes with no connection (after setup), so per-connection memory excludes the process itself.
  await new Promise((r) => setTimeout(r, 2000));
  const baseline = streamRss();
  bench.log(`baseline: stream processes RSS ${fmt(baseline.stream / 2 ** 20, 1)} MiB with no connection`);
  for (let k = 1; opened < specs.length && k <= 1000; k++) {
    const upTo = Math.min(specs.length, opened + o.stepConnections);
    const before = streamRss();
    bench.log(`step ${k}: opening connections ${fmt(opened + 1)}–${fmt(upTo)}`);
    const res = await bench.openStreams(specs.slice(opened, upTo), clientProcs);
    const added = res.ready;
    opened = upTo;
    // Let allocations settle (and a heartbeat interval pass at most) before reading memory.
    await new Promise((r) => setTimeout(r, 5000));
    const after = streamRss();
    const perConnKiB = added > 0 ? (after.stream - before.stream) / added / 1024 : 0;
    const fullGroups = pop.groups.filter((g) => fullyConnected(g, opened));
    const step: Record<string, unknown> = {
      step: k,
      connections: opened,
      openedThisStep: added,
      failedThisStep: res.failed,
      openSeconds: Math.round(res.seconds * 10) / 10,
      openedPerSecond: Math.round(added / Math.max(0.001, res.seconds)),
      streamRssMiB: Math.round((after.stream / 2 ** 20) * 10) / 10,
      serverRssMiB: Math.round((after.all / 2 ** 20) * 10) / 10,
      serverKiBPerConnectionAdded: Math.round(perConnKiB * 10) / 10,
      serverKiBPerConnectionTotal: Math.round(((after.stream - baseline.stream) / Math.max(1, opened) / 1024) * 10) / 10,
      activeGroups: fullGroups.length,
    };
    if (res.failed > 0) {
      steps.push(step);
      stopReason = `${res.failed} connections failed to open`;
      break;
    }
    if (o.idleSeconds > 0 && added > 0) {
      const idle = await measureIdle(opened);
      Object.assign(step, idle);
      bench.log(`  idle (heartbeats only) ${o.idleSeconds} s: stream processes ${fmt(idle.idleStreamCores, 3)} cores = ${fmt(idle.idleStreamCoresPer10k, 3)} per 10,000 connections; all servers ${fmt(idle.idleServerCores, 3)} cores`);
    }
    if (fullGroups.length > 0 && o.stepDuration > 0) {
      const t = await traffic(fullGroups, o.stepDuration, k);
      Object.assign(step, t.fields);
      steps.push(step);
      if (t.stop) {
        stopReason = t.stop;
        break;
      }
    } else {
      steps.push(step);
    }
    bench.log(`  ${fmt(opened)} connections: stream processes RSS ${fmt(after.stream / 2 ** 20, 1)} MiB, +${fmt(perConnKiB, 1)} KiB per added connection`);
  }
  if (!stopReason) stopReason = opened >= specs.length ? `reached ${fmt(opened)} connections` : "step limit";
  // Every connection held at once, then --final-duration seconds of traffic to every group (the issue's 60 s run).
  let final: Record<string, unknown> | undefined;
  if (stopReason.startsWith("reached") && o.finalDuration > 0) {
    const allFull = pop.groups.filter((g) => fullyConnected(g, opened));
    bench.log(`final: ${fmt(opened)} connections held, ${o.finalDuration} s of traffic`);
    const t = await traffic(allFull, o.finalDuration, 1000);
    final = { connections: opened, activeGroups: allFull.length, ...t.fields };
    if (t.stop) stopReason = `reached ${fmt(opened)} connections; final run: ${t.stop}`;
  }
  const s = (x: Record<string, unknown>, k: string) => x[k] as number | undefined;
  process.stdout.write(
    `\nconnections on ${target.kind}: up to ${fmt(n)} connections in groups of ${S} (${d} device(s) per user), ${streamProcs.length} stream process(es), ${clientProcs} client process(es)\n`,
  );
  process.stdout.write(
    `${gridTable(
      ["step", "connections", "open s", "opened/s", "stream RSS MiB", "KiB/conn added", "KiB/conn total", "groups", "deliv/s", "p50 ms", "p99 ms", "max ms", "loss", "srv cores"],
      steps.map((x) => {
        const lat = x.deliveryLatencyMs as { p50: number; p99: number; max: number } | undefined;
        return [
          String(x.step),
          fmt(s(x, "connections") ?? 0),
          fmt(s(x, "openSeconds") ?? 0, 1),
          fmt(s(x, "openedPerSecond") ?? 0),
          fmt(s(x, "streamRssMiB") ?? 0, 1),
          fmt(s(x, "serverKiBPerConnectionAdded") ?? 0, 1),
          fmt(s(x, "serverKiBPerConnectionTotal") ?? 0, 1),
          fmt(s(x, "activeGroups") ?? 0),
          fmt(s(x, "deliveriesPerSecond") ?? 0),
          lat ? fmt(lat.p50, 2) : "-",
          lat ? fmt(lat.p99, 2) : "-",
          lat ? fmt(lat.max, 1) : "-",
          fmt(s(x, "loss") ?? 0),
          fmt(s(x, "serverCores") ?? 0, 2),
        ];
      }),
    )}\n`,
  );
  const fl = final?.deliveryLatencyMs as { p50: number; p99: number } | undefined;
  const finalRow: [string, string][] = final && fl ? [["final", `${fmt(s(final, "connections") ?? 0)} connections, ${fmt(s(final, "deliveriesPerSecond") ?? 0)} deliveries/s for ${o.finalDuration} s: p50 ${fmt(fl.p50, 2)} ms, p99 ${fmt(fl.p99, 2)} ms, loss ${fmt(s(final, "loss") ?? 0)}, server ${fmt(s(final, "serverCores") ?? 0, 2)} cores`]] : [];
  const lastIdle = [...steps].reverse().find((x) => x.idleStreamCoresPer10k !== undefined);
  const idleRow: [string, string][] = lastIdle ? [["idle CPU", `${fmt(s(lastIdle, "idleStreamCoresPer10k") ?? 0, 3)} cores of stream processes per 10,000 idle connections (at ${fmt(s(lastIdle, "connections") ?? 0)})`]] : [];
  process.stdout.write(`${table([["stopped", stopReason], ...finalRow, ...idleRow])}\n`);
  const result = {
    ...header(bench, { connections: n, groupSize: S, devicesPerUser: d, users, groups, stepConnections: o.stepConnections, rate, stepSeconds: o.stepDuration, clientProcs, streamProcs: streamProcs.length, hosts: o.hosts }),
    results: { reached: opened, stopReason, baselineStreamRssMiB: Math.round((baseline.stream / 2 ** 20) * 10) / 10, steps, final },
  };
  if (o.write) {
    const svg = lineChart({
      title: `Live connections on ${target.kind}: server memory per connection and p99`,
      subtitle: `groups of ${S}, ${fmt(rate)} msg/s to fully connected groups; ${stopReason}`,
      xLabel: "live subscriber connections",
      yLabel: "KiB of stream-process RSS per connection",
      series: [{ label: "KiB per connection ((RSS − RSS with none) / connections)", color: "#1f77b4", points: steps.map((x) => [s(x, "connections") ?? 0, s(x, "serverKiBPerConnectionTotal") ?? 0]), dots: true }],
      right: {
        label: "delivery p99 (ms)",
        series: [
          {
            label: "delivery p99 ms (right axis)",
            color: "#d62728",
            dashed: true,
            dots: true,
            points: steps.filter((x) => x.deliveryLatencyMs).map((x) => [s(x, "connections") ?? 0, (x.deliveryLatencyMs as { p99: number }).p99]),
          },
        ],
      },
      hlines: [{ y: 16, label: "16 KiB target", color: "#2ca02c" }],
    });
    const files = writeResults("connections", resultName(target.kind, o), result, svg);
    process.stdout.write(`\nwrote ${files.json}${files.svg ? ` and ${files.svg}` : ""}\n`);
  }
  return stopReason.startsWith("reached") ? 0 : 3;
}
