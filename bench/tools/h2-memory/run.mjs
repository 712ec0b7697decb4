// Memory per idle HTTP/2 connection (README, Performance, "What limits it now"): forks server.mjs (an h2c
// server configured by a JSON object) and client.mjs (opens N connections, each with one streaming POST whose
// response stays open), measures the server's RSS and heap after forced GCs at 0, N/2 and N connections, and prints
// one JSON row of bytes per connection. configs.txt lists the configurations measured (label|json).
//
//   node bench/tools/h2-memory/run.mjs <label> '<server cfg json>' [N=4000] [server node flags...]
//   bench/tools/h2-memory/batch.sh [configs.txt] [reps]     # every configuration of configs.txt
//
// RUN_ENV (JSON) adds server environment variables; H2CLIENT (JSON) configures the client. All on 127.0.0.1;
// both processes are killed after 120 s at most.
import { fork } from "node:child_process";
import { once } from "node:events";
const [label, cfgJson = "{}", nArg = "4000", ...nodeArgs] = process.argv.slice(2);
const N = Number(nArg);
const extraEnv = JSON.parse(process.env.RUN_ENV || "{}");
const clientCfg = process.env.H2CLIENT || "{}";
const server = fork(new URL("./server.mjs", import.meta.url), { execArgv: ["--expose-gc", ...nodeArgs], env: { ...process.env, ...extraEnv, H2CFG: cfgJson } });
const client = fork(new URL("./client.mjs", import.meta.url), [], { env: { ...process.env, H2CLIENT: clientCfg } });
const killAll = () => { try { server.kill("SIGKILL"); } catch {} try { client.kill("SIGKILL"); } catch {} };
const guard = setTimeout(() => { console.error("timeout"); killAll(); process.exit(1); }, 120_000);
const ask = async (p, msg) => { p.send(msg); const [r] = await once(p, "message"); return r; };
const [{ port }] = await once(server, "message");
client.send({ cmd: "noop" });
const m0 = await ask(server, { cmd: "measure" });
const o1 = await ask(client, { cmd: "open", n: N / 2, port });
await new Promise((r) => setTimeout(r, 500));
const m1 = await ask(server, { cmd: "measure" });
const o2 = await ask(client, { cmd: "open", n: N / 2, port });
await new Promise((r) => setTimeout(r, 500));
const m2 = await ask(server, { cmd: "measure" });
const per = (a, b, n, k) => Math.round((b[k] - a[k]) / n);
const row = {
  label, conns: m2.sessions, streams: m2.streams, failed: o1.failed + o2.failed,
  rssTotal: per(m0, m2, N, "rss"), rssSlope: per(m1, m2, N / 2, "rss"),
  heapTotal: per(m0, m2, N, "heapUsed"), heapCommit: per(m0, m2, N, "heapTotal"), heapSlope: per(m1, m2, N / 2, "heapUsed"),
  extTotal: per(m0, m2, N, "external"), abTotal: per(m0, m2, N, "arrayBuffers"),
  baseRssMB: +(m0.rss / 2 ** 20).toFixed(1), heapCommitMB: +(m2.heapTotal / 2 ** 20).toFixed(1),
};
console.log(JSON.stringify(row));
if (process.env.GRACEFUL) { client.kill("SIGKILL"); server.send({ cmd: "exit" }); await once(server, "exit"); }
clearTimeout(guard); killAll(); process.exit(0);
