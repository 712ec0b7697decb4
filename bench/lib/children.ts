/**
 * Every process the bench starts is registered here and stopped on the way
 * out: normal end, error, SIGINT/SIGTERM. Servers run under guard.mjs, which
 * also stops them if the bench itself is SIGKILLed; forked workers exit by
 * themselves when their IPC channel closes.
 */
import { type ChildProcess, fork, spawn } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { join } from "node:path";
import { descendants } from "./procstat.js";

const BENCH_DIR = join(import.meta.dirname, "..");
const GUARD = join(import.meta.dirname, "guard.mjs");

const live = new Set<ChildProcess>();

/** Managed is a started child process and what the bench knows about it. */
export interface Managed {
  readonly name: string;
  readonly child: ChildProcess;
  /** The pid whose CPU and memory are the process's own (for a guarded server: the server, not the guard). */
  readonly pid: number;
  /** The last lines of its output (for error messages). */
  tail(): string;
}

function track(child: ChildProcess): void {
  live.add(child);
  child.once("exit", () => live.delete(child));
}

/** TailBuffer keeps the last `max` characters of a process's output, and optionally writes all of it to a file. */
class TailBuffer {
  text = "";
  constructor(
    private readonly max = 20_000,
    private readonly file?: WriteStream,
  ) {}
  push(d: Buffer | string): void {
    this.file?.write(d);
    this.text += d.toString();
    if (this.text.length > this.max * 2) this.text = this.text.slice(-this.max);
  }
  get(): string {
    return this.text.slice(-this.max);
  }
}

/**
 * spawnGuarded starts `node <nodeArgs...>` under guard.mjs and resolves once
 * the real child exists; `onLine` sees every stdout/stderr line.
 */
export async function spawnGuarded(
  name: string,
  nodeArgs: string[],
  opts: { env: NodeJS.ProcessEnv; cwd?: string; logFile?: string; onLine?: (line: string) => void },
): Promise<Managed> {
  const child = spawn(process.execPath, [GUARD, process.execPath, ...nodeArgs], {
    env: opts.env,
    cwd: opts.cwd,
    stdio: ["pipe", "pipe", "pipe"],
  });
  track(child);
  const tail = new TailBuffer(20_000, opts.logFile ? createWriteStream(opts.logFile, { flags: "a" }) : undefined);
  let partial = "";
  const onData = (d: Buffer) => {
    tail.push(d);
    if (!opts.onLine) return;
    partial += d.toString();
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) opts.onLine(line);
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  child.stdin?.on("error", () => {});
  // The server is the guard's only child; wait (bounded) for it to appear.
  let pid = 0;
  for (let i = 0; i < 200 && pid === 0; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited at once:\n${tail.get()}`);
    pid = descendants(child.pid ?? 0)[0] ?? 0;
    if (pid === 0) await new Promise((r) => setTimeout(r, 10));
  }
  if (pid === 0) throw new Error(`${name}: no child process appeared under the guard`);
  return { name, child, pid, tail: () => tail.get() };
}

/** forkWorker forks a TypeScript module of bench/ (through tsx) with an IPC channel. */
export function forkWorker(name: string, module: string, args: string[] = [], execArgv: string[] = []): Managed {
  const child = fork(join(BENCH_DIR, module), args, {
    execArgv: ["--import", "tsx", ...execArgv],
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    serialization: "advanced",
  });
  track(child);
  const tail = new TailBuffer();
  child.stdout?.on("data", (d: Buffer) => {
    tail.push(d);
    process.stderr.write(`[${name}] ${d.toString()}`);
  });
  child.stderr?.on("data", (d: Buffer) => {
    tail.push(d);
    process.stderr.write(`[${name}] ${d.toString()}`);
  });
  return { name, child, pid: child.pid ?? 0, tail: () => tail.get() };
}

/** stopChild sends SIGTERM, then SIGKILL after `graceMs`, and resolves when the process has exited. */
export function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/** stopAll stops every live child (bounded by the grace period). */
export async function stopAll(graceMs = 5000): Promise<void> {
  await Promise.all([...live].map((c) => stopChild(c, graceMs)));
}

let installed = false;
let interrupted = false;

/** isInterrupted tells whether a signal or an uncaught error started the cleanup (errors after that are its echoes). */
export function isInterrupted(): boolean {
  return interrupted;
}

/**
 * installCleanup stops every child on SIGINT/SIGTERM, uncaught errors and
 * exit; `extra` runs first on signals and errors (e.g. dropping a keyspace).
 */
export function installCleanup(extra: () => Promise<void> = async () => {}): void {
  if (installed) return;
  installed = true;
  let cleaning = false;
  const bail = (why: string, code: number) => {
    if (cleaning) return;
    cleaning = true;
    interrupted = true;
    process.stderr.write(`\nbench: ${why}; stopping child processes\n`);
    const hardStop = setTimeout(() => {
      for (const c of live) c.kill("SIGKILL");
      process.exit(code);
    }, 15_000);
    hardStop.unref();
    extra()
      .catch(() => {})
      .then(() => stopAll(3000))
      .finally(() => process.exit(code));
  };
  process.on("SIGINT", () => bail("interrupted", 130));
  process.on("SIGTERM", () => bail("terminated", 143));
  process.on("uncaughtException", (err) => {
    process.stderr.write(`${err.stack ?? String(err)}\n`);
    bail("uncaught error", 1);
  });
  process.on("unhandledRejection", (err) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    bail("unhandled rejection", 1);
  });
  process.on("exit", () => {
    for (const c of live) c.kill("SIGKILL");
  });
}
