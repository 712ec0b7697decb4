/**
 * PrivateNatsCluster runs a three-node NATS cluster of its own (three
 * nats-server child processes on 127.0.0.1) with JetStream clustered, for
 * tests of replicated streams and of losing a node (DESIGN: a fault test never
 * touches the shared server). Modelled on PrivateNatsServer: every node has a
 * distinct `server_name`, free client, cluster and monitoring ports and a
 * store directory of its own under one temp directory; all three are in one
 * `cluster { name, listen, routes }` naming all three routes. Nodes are only
 * ever signalled by their own PIDs, and every child is killed when this
 * process exits. Every wait is bounded in time.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { NATS_SERVER_BIN, freePort } from "./private-nats-server.js";

/** PrivateNatsClusterOptions configures {@link PrivateNatsCluster.start}. */
export interface PrivateNatsClusterOptions {
  /** bin is the nats-server executable; default {@link NATS_SERVER_BIN}. */
  readonly bin?: string;
  /** size is the number of nodes; default 3. */
  readonly size?: number;
  /** readyTimeoutMs bounds the wait for each node's "Server is ready"; default 10000. */
  readonly readyTimeoutMs?: number;
  /** clusterTimeoutMs bounds the wait for a JetStream meta leader seen by every node; default 20000. */
  readonly clusterTimeoutMs?: number;
  /** stopTimeoutMs bounds a graceful stop before it is turned into SIGKILL; default 5000. */
  readonly stopTimeoutMs?: number;
}

/** MetaClusterInfo is the `meta_cluster` part of a node's `/jsz` (what it knows of the JetStream meta group). */
export interface MetaClusterInfo {
  readonly name?: string;
  readonly leader?: string;
  readonly cluster_size?: number;
  readonly replicas?: readonly { name: string; current?: boolean; offline?: boolean }[];
}

/** NodeStreamState is one stream as a node holds it locally (from its `/jsz?streams=true`). */
export interface NodeStreamState {
  readonly name: string;
  readonly messages: number;
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly leader?: string;
}

interface NodeSpec {
  readonly index: number;
  readonly serverName: string;
  readonly port: number;
  readonly clusterPort: number;
  readonly httpPort: number;
  readonly dir: string;
  readonly storeDir: string;
  readonly configFile: string;
}

interface NodeRun {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

/** distinctFreePorts asks for `n` free ports on 127.0.0.1, all different. */
async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  for (let attempt = 0; ports.size < n && attempt < n * 20; attempt++) ports.add(await freePort());
  if (ports.size < n) throw new Error(`could not find ${n} distinct free ports`);
  return [...ports];
}

/** withTimeout races `p` against a timer that rejects with `what` after `ms`. */
async function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what())), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * PrivateNatsCluster is N (default 3) nats-server child processes forming one
 * JetStream cluster. Ports and store directories survive {@link kill} /
 * {@link stop} / {@link restart}, so a restarted node finds its data again
 * and catches up from the others.
 */
export class PrivateNatsCluster {
  private readonly runs: (NodeRun | undefined)[];
  private readonly outputs: string[];
  private disposed = false;
  private readonly onExit = (): void => this.killAllSync();
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    this.killAllSync();
    this.unhook();
    process.kill(process.pid, signal);
  };

  private constructor(
    /** root is the temp directory holding every node's config and store (removed by {@link dispose}). */
    readonly root: string,
    /** clusterName is the `cluster { name }` of every node. */
    readonly clusterName: string,
    private readonly nodes: readonly NodeSpec[],
    private readonly bin: string,
    private readonly readyTimeoutMs: number,
    private readonly clusterTimeoutMs: number,
    private readonly stopTimeoutMs: number,
  ) {
    this.runs = nodes.map(() => undefined);
    this.outputs = nodes.map(() => "");
  }

  /**
   * start creates the directories and config files, launches every node and
   * resolves once all of them are ready and agree on a JetStream meta leader.
   * On failure everything started is disposed of before the error is thrown.
   */
  static async start(opts: PrivateNatsClusterOptions = {}): Promise<PrivateNatsCluster> {
    const size = opts.size ?? 3;
    const root = await mkdtemp(join(tmpdir(), "chat-nats-cluster-"));
    const clusterName = `c${Date.now().toString(36)}${process.pid.toString(36)}`;
    const ports = await distinctFreePorts(size * 3);
    const nodes: NodeSpec[] = [];
    for (let i = 0; i < size; i++) {
      const dir = join(root, `n${i}`);
      nodes.push({
        index: i,
        serverName: `${clusterName}-n${i}`,
        port: ports[i * 3] ?? 0,
        clusterPort: ports[i * 3 + 1] ?? 0,
        httpPort: ports[i * 3 + 2] ?? 0,
        dir,
        storeDir: join(dir, "store"),
        configFile: join(dir, "nats.conf"),
      });
    }
    const routes = nodes.map((n) => `"nats-route://127.0.0.1:${n.clusterPort}"`).join(", ");
    for (const n of nodes) {
      await mkdir(n.storeDir, { recursive: true });
      await writeFile(
        n.configFile,
        [
          `server_name: "${n.serverName}"`,
          `listen: "127.0.0.1:${n.port}"`,
          `http: "127.0.0.1:${n.httpPort}"`,
          `jetstream { store_dir: "${n.storeDir}" }`,
          `cluster {`,
          `  name: "${clusterName}"`,
          `  listen: "127.0.0.1:${n.clusterPort}"`,
          `  routes: [${routes}]`,
          `}`,
          "",
        ].join("\n"),
      );
    }
    const cluster = new PrivateNatsCluster(
      root,
      clusterName,
      nodes,
      opts.bin ?? NATS_SERVER_BIN,
      opts.readyTimeoutMs ?? 10_000,
      opts.clusterTimeoutMs ?? 20_000,
      opts.stopTimeoutMs ?? 5_000,
    );
    process.on("exit", cluster.onExit);
    process.once("SIGINT", cluster.onSignal);
    process.once("SIGTERM", cluster.onSignal);
    try {
      await Promise.all(nodes.map((n) => cluster.launch(n.index)));
      await cluster.waitForMetaLeader();
    } catch (e) {
      await cluster.dispose();
      throw e;
    }
    return cluster;
  }

  /** size is the number of nodes. */
  get size(): number {
    return this.nodes.length;
  }

  /** urls is every node's client URL, comma-separated (what a client is given to reach the cluster). */
  get urls(): string {
    return this.nodes.map((n) => this.url(n.index)).join(",");
  }

  /** url is node `i`'s client URL, e.g. `nats://127.0.0.1:41234`. */
  url(i: number): string {
    return `nats://127.0.0.1:${this.node(i).port}`;
  }

  /** serverName is node `i`'s `server_name` (what stream info's `cluster.leader` names). */
  serverName(i: number): string {
    return this.node(i).serverName;
  }

  /** indexOf returns the index of the node called `serverName`, or -1. */
  indexOf(serverName: string | undefined): number {
    return this.nodes.findIndex((n) => n.serverName === serverName);
  }

  /** pid is node `i`'s PID, or undefined when it is not running. */
  pid(i: number): number | undefined {
    const child = this.runs[i]?.child;
    return child && child.exitCode === null && child.signalCode === null ? child.pid : undefined;
  }

  /** running tells whether node `i` is running. */
  running(i: number): boolean {
    return this.pid(i) !== undefined;
  }

  /** log returns the tail of node `i`'s output (for failure messages). */
  log(i: number): string {
    return this.outputs[i] ?? "";
  }

  /** kill sends SIGKILL to node `i`'s PID only and waits (bounded) until it has exited. No-op if not running. */
  async kill(i: number): Promise<void> {
    await this.signalAndWait(i, "SIGKILL", this.stopTimeoutMs);
  }

  /** stop asks node `i` to shut down (SIGTERM) and waits for it; after stopTimeoutMs it is killed. No-op if not running. */
  async stop(i: number): Promise<void> {
    try {
      await this.signalAndWait(i, "SIGTERM", this.stopTimeoutMs);
    } catch {
      await this.kill(i);
    }
  }

  /**
   * restart starts node `i` again (same ports, same store directory; stopped
   * first if it is running) and resolves once it is ready and every running
   * node agrees on a meta leader again.
   */
  async restart(i: number): Promise<void> {
    if (this.running(i)) await this.stop(i);
    await this.launch(i);
    await this.waitForMetaLeader();
  }

  /** jsz fetches node `i`'s `/jsz` monitoring page (with `query`, e.g. `streams=true`), bounded by `timeoutMs`. */
  async jsz(i: number, query = "", timeoutMs = 2_000): Promise<Record<string, unknown>> {
    const res = await fetch(`http://127.0.0.1:${this.node(i).httpPort}/jsz${query ? `?${query}` : ""}`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) throw new Error(`node ${i} /jsz: HTTP ${res.status}`);
    return (await res.json()) as Record<string, unknown>;
  }

  /** metaCluster returns what node `i` knows of the JetStream meta group. */
  async metaCluster(i: number): Promise<MetaClusterInfo> {
    return ((await this.jsz(i)).meta_cluster ?? {}) as MetaClusterInfo;
  }

  /**
   * streamState returns stream `name` as node `i` holds it locally (its own
   * replica, not the leader's view), or undefined if the node has no replica.
   */
  async streamState(i: number, name: string): Promise<NodeStreamState | undefined> {
    const jsz = await this.jsz(i, "streams=true");
    const accounts = (jsz.account_details ?? []) as { stream_detail?: { name: string; state?: { messages: number; first_seq: number; last_seq: number }; cluster?: { leader?: string } }[] }[];
    for (const a of accounts) {
      for (const s of a.stream_detail ?? []) {
        if (s.name !== name) continue;
        return { name, messages: s.state?.messages ?? 0, firstSeq: s.state?.first_seq ?? 0, lastSeq: s.state?.last_seq ?? 0, leader: s.cluster?.leader };
      }
    }
    return undefined;
  }

  /**
   * waitForMetaLeader resolves once every running node reports the same
   * JetStream meta leader, which is itself running, and sees the whole
   * cluster; rejects after `timeoutMs` (default clusterTimeoutMs).
   */
  async waitForMetaLeader(timeoutMs = this.clusterTimeoutMs): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    for (;;) {
      const running = this.nodes.filter((n) => this.running(n.index));
      try {
        const metas = await Promise.all(running.map((n) => this.metaCluster(n.index)));
        const leaders = new Set(metas.map((m) => m.leader ?? ""));
        const leader = metas[0]?.leader ?? "";
        const leaderIndex = this.indexOf(leader);
        last = JSON.stringify(metas.map((m) => ({ leader: m.leader, size: m.cluster_size })));
        if (leaders.size === 1 && leaderIndex >= 0 && this.running(leaderIndex) && metas.every((m) => (m.cluster_size ?? 0) >= this.nodes.length)) {
          return leader;
        }
      } catch (e) {
        last = String(e);
      }
      if (Date.now() >= deadline) throw new Error(`no JetStream meta leader agreed within ${timeoutMs} ms (last: ${last})`);
      await sleep(100);
    }
  }

  /** dispose kills every node and removes the temp directory. Idempotent. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await Promise.all(this.nodes.map((n) => this.kill(n.index).catch(() => undefined)));
    this.unhook();
    await rm(this.root, { recursive: true, force: true });
  }

  private node(i: number): NodeSpec {
    const n = this.nodes[i];
    if (!n) throw new Error(`no node ${i} (cluster of ${this.nodes.length})`);
    return n;
  }

  /** launch starts node `i` and resolves when it logs "Server is ready"; it is killed if it does not in time. */
  private async launch(i: number): Promise<void> {
    if (this.disposed) throw new Error("cluster disposed");
    const n = this.node(i);
    if (this.running(i)) throw new Error(`node ${i} already running (pid ${this.pid(i)})`);
    const child = spawn(this.bin, ["-c", n.configFile], { stdio: ["ignore", "pipe", "pipe"] });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    this.runs[i] = { child, exited };
    const ready = new Promise<void>((resolve, reject) => {
      let seen = "";
      const onData = (chunk: Buffer) => {
        const text = chunk.toString("utf8");
        this.outputs[i] = ((this.outputs[i] ?? "") + text).slice(-16_384);
        if (seen !== "done") {
          seen += text;
          if (seen.includes("Server is ready")) {
            seen = "done";
            resolve();
          }
        }
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", onData);
      child.once("error", reject);
      child.once("exit", (code, signal) => reject(new Error(`nats-server node ${i} exited (${code ?? signal}) before it was ready:\n${this.log(i)}`)));
    });
    try {
      await withTimeout(ready, this.readyTimeoutMs, () => `nats-server node ${i} not ready within ${this.readyTimeoutMs} ms:\n${this.log(i)}`);
    } catch (e) {
      await this.kill(i).catch(() => undefined);
      throw e;
    }
  }

  private async signalAndWait(i: number, signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
    const run = this.runs[i];
    if (!run || !this.running(i)) return;
    run.child.kill(signal);
    await withTimeout(run.exited, timeoutMs, () => `nats-server node ${i} did not exit within ${timeoutMs} ms of ${signal}`);
  }

  /** killAllSync SIGKILLs every running node by PID and removes the temp directory (for process exit). */
  private killAllSync(): void {
    for (const n of this.nodes) {
      const child = this.runs[n.index]?.child;
      if (child && child.exitCode === null && child.signalCode === null) {
        try {
          child.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }
    }
    try {
      rmSync(this.root, { recursive: true, force: true });
    } catch {
      // Best effort at exit.
    }
  }

  private unhook(): void {
    process.off("exit", this.onExit);
    process.off("SIGINT", this.onSignal);
    process.off("SIGTERM", this.onSignal);
  }
}
