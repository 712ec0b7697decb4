/**
 * PrivateNatsServer runs a nats-server child process of its own, for tests
 * that stop or restart NATS (DESIGN: a fault test never touches the shared
 * server). It listens on 127.0.0.1 on a free port with JetStream on a store
 * directory of its own, and is only ever stopped by its own PID.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** NATS_SERVER_BIN is where Debian installs nats-server. */
export const NATS_SERVER_BIN = "/usr/sbin/nats-server";

/** freePort asks the OS for a port that is free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error("no port assigned"))));
    });
  });
}

/** PrivateNatsServerOptions configures {@link startPrivateNatsServer}. */
export interface PrivateNatsServerOptions {
  /** bin is the nats-server executable; default {@link NATS_SERVER_BIN}. */
  readonly bin?: string;
  /** readyTimeoutMs bounds the wait for "Server is ready"; default 10000. */
  readonly readyTimeoutMs?: number;
}

/**
 * PrivateNatsServer is one nats-server child process plus its port and store
 * directory, which survive {@link kill}/{@link start} cycles so a restart
 * finds its JetStream data again.
 */
export class PrivateNatsServer {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** output keeps the tail of the server's log (for failure messages). */
  private output = "";

  private constructor(
    /** port is the client port on 127.0.0.1. */
    readonly port: number,
    /** storeDir is the JetStream store directory (removed by {@link dispose}). */
    readonly storeDir: string,
    private readonly bin: string,
    private readonly readyTimeoutMs: number,
  ) {}

  /** create picks a free port and a fresh store directory; the server is not started yet. */
  static async create(opts: PrivateNatsServerOptions = {}): Promise<PrivateNatsServer> {
    const port = await freePort();
    const storeDir = await mkdtemp(join(tmpdir(), "chat-nats-"));
    return new PrivateNatsServer(port, storeDir, opts.bin ?? NATS_SERVER_BIN, opts.readyTimeoutMs ?? 10_000);
  }

  /** url is the client URL, e.g. `nats://127.0.0.1:41234`. */
  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** pid is the running server's PID, or undefined when it is not running. */
  get pid(): number | undefined {
    return this.child?.exitCode === null && this.child.signalCode === null ? this.child.pid : undefined;
  }

  /** log returns the tail of the server's output. */
  log(): string {
    return this.output;
  }

  /**
   * start launches the server (same port and store directory every time) and
   * resolves once it logs "Server is ready"; rejects if it exits first or
   * does not become ready within the timeout (it is killed then).
   */
  async start(): Promise<void> {
    if (this.pid !== undefined) throw new Error(`nats-server already running (pid ${this.pid})`);
    const child = spawn(this.bin, ["-a", "127.0.0.1", "-p", String(this.port), "-js", "-sd", this.storeDir], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    const ready = new Promise<void>((resolve, reject) => {
      let seen = "";
      const onData = (chunk: Buffer) => {
        const text = chunk.toString("utf8");
        seen += text;
        this.output = (this.output + text).slice(-8192);
        if (seen.includes("Server is ready")) {
          seen = "";
          resolve();
        }
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", onData);
      child.once("error", reject);
      child.once("exit", (code, signal) => reject(new Error(`nats-server exited (${code ?? signal}) before it was ready:\n${this.output}`)));
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`nats-server not ready within ${this.readyTimeoutMs} ms:\n${this.output}`)), this.readyTimeoutMs);
    });
    try {
      await Promise.race([ready, timeout]);
    } catch (e) {
      await this.kill();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** kill sends `signal` (default SIGKILL) to this server's PID only and waits until it has exited. No-op if not running. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await this.exited;
  }

  /**
   * signal sends `signal` to this server's PID only, without waiting for
   * anything (e.g. SIGSTOP to freeze it with its connections open, SIGCONT to
   * resume it). No-op if not running.
   */
  signal(signal: NodeJS.Signals): void {
    if (this.pid !== undefined) this.child?.kill(signal);
  }

  /** dispose kills the server (if running) and removes its store directory. */
  async dispose(): Promise<void> {
    await this.kill();
    await rm(this.storeDir, { recursive: true, force: true });
  }
}
