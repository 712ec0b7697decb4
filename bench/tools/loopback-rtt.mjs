/**
 * loopback-rtt: what it costs on this machine to wake another process. A
 * client and a forked echo server (both Node) ping-pong one byte over a
 * loopback TCP connection with TCP_NODELAY, one round trip at a time, and
 * the client reports the round trip's percentiles and its own CPU per round
 * trip. Every cross-process request of the production topology (Redis,
 * NATS, Cassandra, the stream processes) pays at least this.
 *
 * usage: node bench/tools/loopback-rtt.mjs [round trips, default 5000]
 */
import { fork } from "node:child_process";
import net from "node:net";

if (process.argv[2] === "--echo-server") {
  const server = net.createServer({ noDelay: true }, (c) => c.on("data", (d) => c.write(d)));
  server.listen(0, "127.0.0.1", () => process.send?.(server.address().port));
} else {
  const n = Number(process.argv[2] ?? 5000);
  const child = fork(new URL(import.meta.url).pathname, ["--echo-server"]);
  const port = await new Promise((resolve) => child.once("message", resolve));
  const client = net.connect({ port, host: "127.0.0.1", noDelay: true });
  await new Promise((resolve) => client.once("connect", resolve));
  const rtts = [];
  const cpu0 = process.cpuUsage();
  await new Promise((resolve) => {
    let sentAt = process.hrtime.bigint();
    client.on("data", () => {
      rtts.push(Number(process.hrtime.bigint() - sentAt) / 1000);
      if (rtts.length >= n) return resolve();
      sentAt = process.hrtime.bigint();
      client.write("x");
    });
    client.write("x");
  });
  const cpu = process.cpuUsage(cpu0);
  rtts.sort((a, b) => a - b);
  const at = (q) => rtts[Math.min(rtts.length - 1, Math.floor(rtts.length * q))].toFixed(0);
  console.log(
    `loopback TCP round trip between two Node processes (${n}): p50 ${at(0.5)} µs, p90 ${at(0.9)} µs, p99 ${at(0.99)} µs; ` +
      `client CPU ${((cpu.user + cpu.system) / n).toFixed(1)} µs per round trip (system ${(cpu.system / n).toFixed(1)})`,
  );
  client.destroy();
  child.kill();
}
