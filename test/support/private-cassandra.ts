/**
 * PrivateCassandra runs a single-node Cassandra of its own for a fault test
 * (DESIGN: a fault test never touches the shared server), through
 * scripts/cassandra/cassandra.sh: a fresh run directory, free CQL and storage
 * ports, a small heap, no JMX. It is only ever signalled by the PID in its own
 * run directory's PID file, after checking that the process is the Cassandra
 * started from that directory.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./private-nats-server.js";

/** SCRIPT is scripts/cassandra/cassandra.sh of this repository. */
const SCRIPT = join(import.meta.dirname, "../../scripts/cassandra/cassandra.sh");

/** PrivateCassandraOptions configures {@link PrivateCassandra.start}. */
export interface PrivateCassandraOptions {
  /** -Xms/-Xmx of the JVM (default "512M"). */
  readonly heap?: string;
  /** Seconds `up` may wait for CQL (default 120). */
  readonly waitTimeoutS?: number;
}

export class PrivateCassandra {
  private stopped = false;

  private constructor(
    /** dir is the run directory (conf, data, logs, PID file), removed by {@link stop}. */
    readonly dir: string,
    /** port is the CQL port on 127.0.0.1. */
    readonly port: number,
    private readonly env: NodeJS.ProcessEnv,
    /** pid is the JVM's PID as the script wrote it. */
    readonly pid: number,
    /** startMs is how long `cassandra.sh up` took. */
    readonly startMs: number,
  ) {}

  /** start runs `cassandra.sh up` in a fresh temp dir on free ports; rejects (removing the dir) if it does not become ready. */
  static async start(opts: PrivateCassandraOptions = {}): Promise<PrivateCassandra> {
    const dir = await mkdtemp(join(tmpdir(), "chat-cassandra-"));
    const [port, storagePort] = [await freePort(), await freePort()];
    const env: NodeJS.ProcessEnv = { ...process.env };
    // Never inherit another instance's settings (JMX stays off: nothing here needs nodetool).
    for (const k of Object.keys(env)) if (k.startsWith("CASSANDRA_")) delete env[k];
    Object.assign(env, {
      CASSANDRA_DIR: dir,
      CASSANDRA_PORT: String(port),
      CASSANDRA_STORAGE_PORT: String(storagePort),
      CASSANDRA_HEAP: opts.heap ?? "512M",
      CASSANDRA_WAIT_TIMEOUT: String(opts.waitTimeoutS ?? 120),
      CASSANDRA_STOP_TIMEOUT: "30",
      // Schema DDL without fsync (~3x faster): safe, the server is only ever stopped cleanly (or frozen).
      CASSANDRA_FAST_DDL: "1",
    });
    const t0 = Date.now();
    try {
      await run(env, "up");
      const pid = Number((await readFile(join(dir, "cassandra.pid"), "utf8")).trim());
      if (!Number.isSafeInteger(pid) || pid < 2) throw new Error(`bad PID file in ${dir}`);
      return new PrivateCassandra(dir, port, env, pid, Date.now() - t0);
    } catch (e) {
      await run(env, "stop").catch(() => {});
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /** url is a cassandra:// URL of `keyspace` on this server. */
  url(keyspace: string): string {
    return `cassandra://127.0.0.1:${this.port}/${keyspace}`;
  }

  /**
   * signal sends `signal` (e.g. SIGSTOP to freeze the server with its
   * connections open, SIGCONT to resume it) to this server's PID only, after
   * checking that the PID is still the Cassandra of this run directory.
   */
  async signal(signal: "SIGSTOP" | "SIGCONT"): Promise<void> {
    if (this.stopped) throw new Error("the private Cassandra is stopped");
    const cmdline = (await readFile(`/proc/${this.pid}/cmdline`, "utf8")).split("\0");
    if (!cmdline.includes("org.apache.cassandra.service.CassandraDaemon") || !cmdline.includes(`-Dcassandra.config=file://${join(this.dir, "conf/cassandra.yaml")}`)) {
      throw new Error(`PID ${this.pid} is not the private Cassandra of ${this.dir}`);
    }
    process.kill(this.pid, signal);
  }

  /** stop resumes the server if frozen, runs `cassandra.sh stop` and removes the run directory. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    await this.signal("SIGCONT").catch(() => {});
    this.stopped = true;
    try {
      await run(this.env, "stop");
    } finally {
      await rm(this.dir, { recursive: true, force: true });
    }
  }
}

function run(env: NodeJS.ProcessEnv, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(SCRIPT, [command], { env, timeout: 180_000, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`cassandra.sh ${command} failed: ${err.message}\n${stderr}`));
      else resolve(stdout + stderr);
    });
  });
}
