/**
 * The benchmark harness (issue 4): `node --import tsx bench/run.ts <mode>
 * [--flags]`. See bench/README.md for every mode, flag and output.
 *
 * fixed        G groups × S members, every member a subscriber stream of its own; one sender at R msg/s open loop
 * max          fixed's shape, R × 1.5 per step until delivery p99 > 200 ms or any loss; reports the best passing step
 * send         SendMessage latency at rising rates until saturation
 * history      ListMessages (page of 50) latency: warm (newest pages of groups being written), deep pages, after a restart
 * connections  ramp live subscriber connections (production topology, several stream processes), memory and p99
 * push         offline members with Web Push devices on a loopback push service: pushes per second, message → push latency
 *
 * `--compare <target>` (fixed, max) runs the mode twice, on --target and then on the other target with the same flags,
 * and prints every figure of both with the ratio (e.g. `--target embedded --compare reference`: ours ÷ the reference).
 */
import { basename } from "node:path";
import { installCleanup, isInterrupted } from "./lib/children.js";
import { Bench } from "./lib/bench.js";
import { compareFigures, comparisonTable } from "./lib/compare.js";
import { resultName, writeResults } from "./lib/report.js";
import { header } from "./modes/common.js";
import { type Options, UsageError, parseOptions, usage } from "./lib/options.js";
import { runConnections } from "./modes/connections.js";
import { runFixed } from "./modes/fixed.js";
import { runHistory } from "./modes/history.js";
import { runMax } from "./modes/max.js";
import { runPush } from "./modes/push.js";
import { runSend } from "./modes/send.js";

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      if (e.message) process.stderr.write(`bench: ${e.message}\n\n`);
      process.stderr.write(`${usage()}\n`);
      return e.message ? 2 : 0;
    }
    throw e;
  }
  let bench = new Bench(opts);
  installCleanup(() => bench.shutdown());
  const modes = { fixed: runFixed, max: runMax, send: runSend, history: runHistory, connections: runConnections, push: runPush };
  const run = async (b: Bench) => {
    try {
      const code = await modes[opts.mode](b);
      b.succeeded = true;
      return code;
    } finally {
      await b.shutdown();
    }
  };
  const code = await run(bench);
  if (opts.compare === "") return code;
  // The same flags on the other target, after the first run's processes are gone.
  const first = bench;
  bench = new Bench({ ...opts, target: opts.compare });
  bench.log(`--compare: the same run on ${opts.compare}`);
  const second = bench;
  const code2 = await run(second);
  printComparison(first, second);
  return Math.max(code, code2);
}

/** printComparison prints both runs' figures with the ratio first ÷ second and writes them to <mode>-compare-<a>-vs-<b>-<stamp>.json. */
function printComparison(a: Bench, b: Bench): void {
  const o = a.opts;
  const rows = compareFigures(a.figures, b.figures);
  const transport = o.transport === "grpc" ? "gRPC (HTTP/2) subscribers" : "WebSocket subscribers";
  process.stdout.write(
    `\n${o.mode}: ${o.target} vs ${b.opts.target}, one after the other on this machine (${o.groups} groups × ${o.members} members, ${o.textBytes}-byte texts, ${transport}, SendMessage over h2c for both)\n`,
  );
  process.stdout.write(`${comparisonTable(o.target, b.opts.target, rows)}\n`);
  process.stdout.write(`  latency is the same measure on both: a message's scheduled send time → its arrival at each subscriber\n`);
  if (!o.write) return;
  const result = {
    ...header(a, { groups: o.groups, members: o.members, rate: o.rate, textBytes: o.textBytes, workers: o.workers, transport: o.transport }),
    comparison: {
      target: o.target,
      comparedWith: b.opts.target,
      ratio: `${o.target} ÷ ${b.opts.target}`,
      // The two runs' own result files (in bench/results/), with every detail.
      runs: { [o.target]: a.resultFile && basename(a.resultFile), [b.opts.target]: b.resultFile && basename(b.resultFile) },
      figures: rows.map((r) => ({
        label: r.label,
        unit: r.unit,
        [o.target]: r.values[0] ?? null,
        [b.opts.target]: r.values[1] ?? null,
        ratio: r.ratio === undefined ? null : Math.round(r.ratio * 1000) / 1000,
        better: r.better,
      })),
    },
  };
  const files = writeResults(o.mode, resultName(`compare-${o.target}-vs-${b.opts.target}`, o), result, undefined);
  process.stdout.write(`\nwrote ${files.json}\n`);
}

main().then(
  (code) => {
    if (!isInterrupted()) process.exit(code);
  },
  (err: unknown) => {
    // After Ctrl-C the cleanup owns the exit; the errors of dying children are its echoes.
    if (isInterrupted()) return;
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
