// guard runs one command as its child and makes sure the child does not
// outlive the bench: when the guard's stdin ends (the bench process exited,
// even by SIGKILL, which closes the pipe) or the guard gets SIGTERM/SIGINT,
// it sends SIGTERM to the child, then SIGKILL after GUARD_KILL_MS (default
// 5000). It exits with the child's status. Plain JS so it starts fast.
import { spawn } from "node:child_process";

const [cmd, ...args] = process.argv.slice(2);
if (!cmd) {
  process.stderr.write("usage: node guard.mjs <command> [args...]\n");
  process.exit(2);
}
const child = spawn(cmd, args, { stdio: ["ignore", "inherit", "inherit"] });
const killMs = Number(process.env.GUARD_KILL_MS ?? 5000);
let stopping = false;
function stop(signal = "SIGTERM") {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  if (stopping) return;
  stopping = true;
  setTimeout(() => child.kill("SIGKILL"), killMs).unref();
}
process.stdin.on("data", () => {});
process.stdin.on("end", () => stop());
process.stdin.on("error", () => stop());
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 128 + 15 : 1)));
child.on("error", (err) => {
  process.stderr.write(`guard: ${err.message}\n`);
  process.exit(1);
});
