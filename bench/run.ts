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
 */
import { installCleanup, isInterrupted } from "./lib/children.js";
import { Bench } from "./lib/bench.js";
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
  const bench = new Bench(opts);
  installCleanup(() => bench.shutdown());
  const modes = { fixed: runFixed, max: runMax, send: runSend, history: runHistory, connections: runConnections, push: runPush };
  try {
    const code = await modes[opts.mode](bench);
    bench.succeeded = true;
    return code;
  } finally {
    await bench.shutdown();
  }
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
