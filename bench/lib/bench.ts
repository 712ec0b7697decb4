/**
 * Bench is one run's machinery, shared by the modes: the server under test,
 * the population, the subscriber workers, the sender(s), CPU/memory samples
 * and the per-phase measurement (run the sender's phases, sample /proc at
 * each phase boundary, collect the subscribers' histograms).
 */
import os from "node:os";
import { join } from "node:path";
import { mkdirSync, rmSync } from "node:fs";
import { forkWorker } from "./children.js";
import type { Figure } from "./compare.js";
import type { Options } from "./options.js";
import { Peer } from "./peer.js";
import { type ProcSample, sampleTree, systemCpuSeconds } from "./procstat.js";
import { type Metrics, type ServerPhaseMetrics, scrapeMetrics, summarizePhase } from "./server-metrics.js";
import {
  type FromSender,
  type FromWorker,
  type LoopDelay,
  type PhaseStats,
  type SenderPhase,
  type SenderPhaseStats,
  type StreamSpec,
  type ToSender,
  type ToWorker,
  type WorkerTotals,
  emptyTotals,
} from "./protocol.js";
import { type Latency, RESULTS_DIR, mergeHistograms, percentileCurve, summarize } from "./report.js";
import { type Population, type PopulationShape, buildPopulation, inventPopulation } from "./setup.js";
import { type Target, startTarget } from "./servers.js";

export type WorkerPeer = Peer<ToWorker, FromWorker>;
export type SenderPeer = Peer<ToSender, FromSender>;

/** Sample is one reading of every measured process. */
export interface Sample {
  atMs: number;
  server: { name: string; sample: ProcSample }[];
  backends: { name: string; sample: ProcSample }[];
  generators: { name: string; sample: ProcSample }[];
  parentCpu: number;
  system: { busy: number; total: number };
}

/** ProcWindow is one process's use over a window. */
export interface ProcWindow {
  name: string;
  pid: number;
  cpuSeconds: number;
  cores: number;
  rssMiB: number;
  peakRssMiB: number;
  /** Share of the window its main thread was ready to run but waited for a CPU (0.05 = 5 %; procstat runQueueSeconds). */
  runQueueShare: number;
}

/** Window is CPU use between two samples. */
export interface Window {
  seconds: number;
  serverCpuSeconds: number;
  serverCores: number;
  serverRssMiB: number;
  server: ProcWindow[];
  /** Backend processes (production: Cassandra, NATS, Redis), shared by everything on the machine. */
  backends: ProcWindow[];
  backendCpuSeconds: number;
  backendCores: number;
  generatorCpuSeconds: number;
  generatorCores: number;
  generators: ProcWindow[];
  parentCpuSeconds: number;
  /** Whole machine busy cores (all processes, from /proc/stat). */
  machineBusyCores: number;
  /** Busy cores not accounted for by the server or the bench (other work on the machine). */
  otherCores: number;
  /** Why the load generator, not the server, may be the limit (empty: it is not). */
  generatorBound: string[];
  /** Other processes used ≥ 0.25 cores during the window: the numbers are disturbed. */
  disturbed: boolean;
}

/** PhaseResult is the measurement of one sender phase. */
export interface PhaseResult {
  phase: number;
  sender: SenderPhaseStats;
  sendLatency: Latency;
  senderLag: Latency;
  /** Deliveries with this phase's stamp received by all subscribers. */
  deliveries: number;
  deliveryLatency: Latency;
  deliveryCurve: [number, number][];
  sendCurve: [number, number][];
  window: Window;
  /** The subscriber workers' event-loop delay over the collected phases (the worst worker's p99 and max). */
  subscriberLoopDelay: LoopDelay | undefined;
  /** The server's own account of the phase, from its /metrics (server-metrics.ts). */
  serverMetrics: ServerPhaseMetrics;
}

const CORES = os.cpus().length;

export class Bench {
  target: Target | undefined;
  population: Population | undefined;
  workers: WorkerPeer[] = [];
  senders: SenderPeer[] = [];
  /** Totals of the workers at the last collect. */
  lastTotals: WorkerTotals[] = [];
  /** Each group's highest seq the last runPhases' sender saw acknowledged. */
  lastHeads: Record<string, number> = {};
  readonly startedAt = new Date();
  /** The machine's load average when the run started (other work shows here). */
  readonly loadAtStart = os.loadavg().map((x) => Math.round(x * 100) / 100);
  private stopped = false;
  /** Where the server logs go; deleted at the end unless the run failed. */
  logDir: string | undefined;
  /** Set by a mode that finished normally: the server logs are deleted then. */
  succeeded = false;
  /** The mode's headline figures, for --compare (compare.ts). */
  figures: Figure[] = [];
  /** The result file the mode wrote (undefined with --no-write). */
  resultFile: string | undefined;

  constructor(readonly opts: Options) {}

  log(line: string): void {
    const t = ((Date.now() - this.startedAt.getTime()) / 1000).toFixed(1).padStart(6);
    process.stderr.write(`[${t}s] ${line}\n`);
  }

  async startTarget(): Promise<Target> {
    const o = this.opts;
    const nodeArgs = [...o.serverNodeArgs];
    if (o.profile) {
      const dir = join(RESULTS_DIR, "profiles");
      mkdirSync(dir, { recursive: true });
      nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${dir}`);
    }
    const logDir = join(os.tmpdir(), `chat-bench-logs-${process.pid}`);
    mkdirSync(logDir, { recursive: true });
    this.logDir = logDir;
    this.log(`starting the ${o.target} server${o.target === "production" ? "s" : ""} (logs in ${logDir})`);
    if (o.target === "reference" && Object.keys(o.serverEnv).length > 0) this.log("  --server-env does not apply to the reference server: ignored");
    this.target = await startTarget({
      kind: o.target,
      url: o.url,
      serverPids: o.serverPids,
      serverEnv: o.serverEnv,
      serverNodeArgs: nodeArgs,
      maxGroupMembers: Math.max(o.members, o.groupSize),
      streamProcs: o.streamProcs,
      messageProcs: o.messageProcs,
      cassandraUrl: o.cassandraUrl,
      natsUrl: o.natsUrl,
      natsReplicas: o.natsReplicas,
      redisUrl: o.redisUrl,
      keep: o.keep,
      logDir,
      streamHosts: o.hosts,
    });
    for (const p of this.target.processes) this.log(`  ${p.name} (${p.services}) pid ${p.pid} at ${p.url}`);
    return this.target;
  }

  async populate(shape: Omit<PopulationShape, "log">): Promise<Population> {
    if (!this.target) throw new Error("no target");
    const users = shape.users ?? shape.groups * shape.members;
    if (this.target.kind === "reference") {
      this.log(`setup: ${users} users in ${shape.groups} groups of ${shape.members}, ids invented (the reference has no users)`);
      this.population = inventPopulation(shape);
      return this.population;
    }
    this.log(`setup: registering ${users} users (${shape.registerConcurrency} at a time), then ${shape.groups} groups of ${shape.members}`);
    this.population = await buildPopulation(this.target.endpoints, { ...shape, log: (l) => this.log(`  ${l}`) });
    return this.population;
  }

  /** streamSpecs builds one stream per user and device, spread over the stream endpoints. */
  streamSpecs(devicesPerUser = 1): StreamSpec[] {
    const pop = this.population;
    const target = this.target;
    if (!pop || !target) throw new Error("no population");
    const groupsOf = new Map<number, string[]>();
    for (const g of pop.groups) for (const m of g.members) groupsOf.set(m, [...(groupsOf.get(m) ?? []), g.groupId]);
    const specs: StreamSpec[] = [];
    const urls = target.endpoints.stream;
    for (const u of pop.users) {
      for (let d = 0; d < devicesPerUser; d++) {
        const id = specs.length;
        specs.push({ id, url: urls[id % urls.length] as string, token: u.token, groups: groupsOf.get(u.index) ?? [] });
      }
    }
    return specs;
  }

  /** openStreams forks `workers` subscriber processes and opens the streams, spread round-robin. */
  async openStreams(specs: StreamSpec[], workers: number, offset = 0): Promise<{ ready: number; failed: number; seconds: number }> {
    const t0 = performance.now();
    while (this.workers.length < workers) {
      const name = `sub-${this.workers.length + 1}`;
      this.workers.push(new Peer(forkWorker(name, "subscriber-worker.ts")));
    }
    const targets = this.workers.slice(offset, offset + workers);
    const per = targets.map(() => [] as StreamSpec[]);
    specs.forEach((s, i) => per[i % targets.length]?.push(s));
    const most = Math.max(...per.map((p) => p.length));
    if (most * (this.opts.streamsPerConnection > 1 ? 1 / this.opts.streamsPerConnection : 1) > 18_000) {
      throw new Error(`${most} connections in one worker exceed the ~20,000 open files a process may hold here: use more --workers`);
    }
    this.log(`opening ${specs.length} streams over ${targets.length} worker process(es)`);
    let lastLog = 0;
    const progress = new Map<WorkerPeer, number>();
    for (const w of targets) {
      w.onOther = (msg) => {
        if (msg.type !== "progress") return;
        progress.set(w, msg.ready);
        if (Date.now() - lastLog > 5000) {
          lastLog = Date.now();
          const ready = [...progress.values()].reduce((a, b) => a + b, 0);
          this.log(`  ${ready} streams ready in total (opening ${specs.length})`);
        }
      };
    }
    const openTimeoutMs = 60_000 + specs.length * 20;
    const replies = await Promise.all(
      targets.map((w, i) =>
        w.request(
          {
            type: "open",
            streams: per[i] ?? [],
            connectConcurrency: this.opts.connectConcurrency,
            transport: this.opts.transport,
            streamsPerSession: this.opts.streamsPerConnection,
            maxReconnects: 20,
            openTimeoutMs,
          },
          "opened",
          openTimeoutMs + 30_000,
        ),
      ),
    );
    const ready = replies.reduce((a, r) => a + r.ready, 0);
    const failed = replies.reduce((a, r) => a + r.failed, 0);
    const errors = replies.flatMap((r) => r.errors);
    const seconds = (performance.now() - t0) / 1000;
    this.log(`  ${ready} streams ready, ${failed} failed, in ${seconds.toFixed(1)} s${errors.length ? `; first errors: ${errors.slice(0, 3).join(" | ")}` : ""}`);
    return { ready, failed, seconds };
  }

  /** startSender forks a sender and initializes it. */
  async startSender(init: Omit<Extract<ToSender, { type: "init" }>, "type">, name = "sender"): Promise<SenderPeer> {
    const s = new Peer<ToSender, FromSender>(forkWorker(`${name}-${this.senders.length + 1}`, "sender.ts"));
    this.senders.push(s);
    await s.request({ type: "init", ...init }, "ready", 60_000);
    return s;
  }

  /** closeSender closes a sender before the run ends (its CPU is no longer sampled). */
  async closeSender(sender: SenderPeer): Promise<void> {
    this.senders = this.senders.filter((s) => s !== sender);
    await sender.request({ type: "close" }, "closed", 5000).catch(() => undefined);
  }

  sample(): Sample {
    const server = (this.target?.processes ?? []).map((p) => ({ name: p.name, sample: sampleTree(p.pid) }));
    for (const pid of this.target?.extraPids ?? []) server.push({ name: `pid ${pid}`, sample: sampleTree(pid) });
    const backends = (this.target?.backends ?? []).map((b) => ({ name: b.name, sample: sampleTree(b.pid, false) }));
    const generators = [...this.workers, ...this.senders].map((p) => ({ name: p.proc.name, sample: sampleTree(p.pid, false) }));
    const u = process.cpuUsage();
    return { atMs: Date.now(), server, backends, generators, parentCpu: (u.user + u.system) / 1e6, system: systemCpuSeconds() };
  }

  window(a: Sample, b: Sample): Window {
    const seconds = Math.max(1e-3, (b.atMs - a.atMs) / 1000);
    const diff = (xs: Sample["server"], ys: Sample["server"]): ProcWindow[] =>
      ys.map((y) => {
        const x = xs.find((p) => p.name === y.name && p.sample.pid === y.sample.pid);
        const cpu = Math.max(0, y.sample.cpuSeconds - (x?.sample.cpuSeconds ?? y.sample.cpuSeconds));
        const waited = Math.max(0, y.sample.runQueueSeconds - (x?.sample.runQueueSeconds ?? y.sample.runQueueSeconds));
        return {
          name: y.name,
          pid: y.sample.pid,
          cpuSeconds: round(cpu, 3),
          cores: round(cpu / seconds, 3),
          rssMiB: round(y.sample.rssBytes / 2 ** 20, 1),
          peakRssMiB: round(y.sample.peakRssBytes / 2 ** 20, 1),
          runQueueShare: round(waited / seconds, 4),
        };
      });
    const server = diff(a.server, b.server);
    const generators = diff(a.generators, b.generators);
    const backends = diff(a.backends, b.backends);
    const backendCpu = backends.reduce((s, p) => s + p.cpuSeconds, 0);
    const serverCpu = server.reduce((s, p) => s + p.cpuSeconds, 0);
    const genCpu = generators.reduce((s, p) => s + p.cpuSeconds, 0);
    const parentCpu = Math.max(0, b.parentCpu - a.parentCpu);
    const busy = Math.max(0, b.system.busy - a.system.busy);
    const reasons: string[] = [];
    const genCores = genCpu / seconds;
    const machineCores = busy / seconds;
    if (genCores >= 0.8) reasons.push(`load generators used ${genCores.toFixed(2)} cores (≥ 0.8)`);
    for (const g of generators) if (g.cores >= 0.85) reasons.push(`${g.name} used ${g.cores.toFixed(2)} of its one core (≥ 0.85: its event loop is saturated)`);
    if (machineCores >= 0.9 * CORES) reasons.push(`the machine was ${((machineCores / CORES) * 100).toFixed(0)}% busy (≥ 90% of ${CORES} cores): server and generators compete`);
    return {
      seconds: round(seconds, 3),
      serverCpuSeconds: round(serverCpu, 3),
      serverCores: round(serverCpu / seconds, 3),
      serverRssMiB: round(server.reduce((s, p) => s + p.rssMiB, 0), 1),
      server,
      backends,
      backendCpuSeconds: round(backendCpu, 3),
      backendCores: round(backendCpu / seconds, 3),
      generatorCpuSeconds: round(genCpu, 3),
      generatorCores: round(genCores, 3),
      generators,
      parentCpuSeconds: round(parentCpu, 3),
      machineBusyCores: round(machineCores, 3),
      otherCores: round(Math.max(0, machineCores - (serverCpu + backendCpu + genCpu + parentCpu) / seconds), 3),
      generatorBound: reasons,
      disturbed: machineCores - (serverCpu + backendCpu + genCpu + parentCpu) / seconds >= 0.25,
    };
  }

  /**
   * runPhases runs the sender's phases back to back (open loop), samples
   * CPU at every phase boundary, then (with subscribers) waits until every
   * stream reached the heads and collects the phases' delivery histograms.
   */
  async runPhases(sender: SenderPeer, phases: SenderPhase[], opts: { collect: boolean; leadMs?: number }): Promise<PhaseResult[]> {
    const startAt = Date.now() + (opts.leadMs ?? 500);
    const boundaries: number[] = [startAt];
    for (const p of phases) boundaries.push((boundaries.at(-1) as number) + p.durationMs);
    const samples: (Sample | undefined)[] = boundaries.map(() => undefined);
    const urls = this.target?.hasMetrics === false ? [] : (this.target?.processes ?? []).map((p) => p.url);
    const scrapes: (Promise<(Metrics | undefined)[]> | undefined)[] = boundaries.map(() => undefined);
    const timers = boundaries.map((at, i) =>
      setTimeout(() => {
        samples[i] = this.sample();
        scrapes[i] = scrapeMetrics(urls);
      }, Math.max(0, at - Date.now())),
    );
    const totalMs = (boundaries.at(-1) as number) - Date.now();
    const stats = new Map<number, SenderPhaseStats>();
    const phaseDone = (async () => {
      for (let i = 0; i < phases.length; i++) {
        const msg = await sender.waitFor("phaseDone", totalMs + this.opts.timeout * 1000 + 60_000);
        stats.set(msg.stats.phase, msg.stats);
      }
    })();
    const done = sender.request({ type: "run", phases, startAtMs: startAt }, "done", totalMs + this.opts.timeout * 1000 + 60_000);
    let lastLog = Date.now();
    const progress = setInterval(() => {
      if (Date.now() - lastLog < 5000) return;
      lastLog = Date.now();
      const left = Math.max(0, ((boundaries.at(-1) as number) - Date.now()) / 1000);
      if (left > 0) this.log(`  running… ${left.toFixed(0)} s left`);
    }, 1000);
    let result;
    try {
      [, result] = await Promise.all([phaseDone, done]);
    } finally {
      clearInterval(progress);
      for (const t of timers) clearTimeout(t);
    }
    for (let i = 0; i < samples.length; i++) samples[i] ??= this.sample();
    const metrics = await Promise.all(scrapes.map((x) => x ?? scrapeMetrics(urls)));
    if (result.firstError) this.log(`  first sender error: ${result.firstError}`);
    this.lastHeads = result.heads;
    let collected: { phases: Record<number, PhaseStats>; totals: WorkerTotals; waitedMs: number; loopDelay: LoopDelay }[] = [];
    if (opts.collect && this.workers.length > 0) {
      const waitMs = this.opts.drain * 1000;
      collected = await Promise.all(
        this.workers.map((w) => w.request({ type: "collect", phases: phases.map((p) => p.phase), heads: result.heads, waitMs }, "collected", waitMs + 60_000)),
      );
      this.lastTotals = collected.map((c) => c.totals);
    }
    return phases.map((p, i) => {
      const s = stats.get(p.phase);
      if (!s) throw new Error(`no sender stats for phase ${p.phase}`);
      const sendHist = mergeHistograms([s.histogram]);
      const deliveryHist = mergeHistograms(collected.map((c) => c.phases[p.phase]?.histogram ?? ""));
      return {
        phase: p.phase,
        sender: s,
        sendLatency: summarize(sendHist),
        senderLag: summarize(mergeHistograms([s.lagHistogram])),
        deliveries: collected.reduce((a, c) => a + (c.phases[p.phase]?.deliveries ?? 0), 0),
        deliveryLatency: summarize(deliveryHist),
        deliveryCurve: percentileCurve(deliveryHist),
        sendCurve: percentileCurve(sendHist),
        window: this.window(samples[i] as Sample, samples[i + 1] as Sample),
        serverMetrics: summarizePhase(metrics[i] ?? [], metrics[i + 1] ?? []),
        subscriberLoopDelay:
          collected.length === 0
            ? undefined
            : {
                p50: Math.max(...collected.map((c) => c.loopDelay.p50)),
                p99: Math.max(...collected.map((c) => c.loopDelay.p99)),
                max: Math.max(...collected.map((c) => c.loopDelay.max)),
              },
      };
    });
  }

  /** totals merges the workers' counters from the last collect. */
  mergedTotals(): WorkerTotals {
    const t = emptyTotals();
    for (const w of this.lastTotals) {
      for (const k of ["streams", "ready", "failedToOpen", "messageEvents", "otherEvents", "heartbeats", "duplicates", "gapSeqs", "cursorResets", "resetSeqs", "reconnects", "behindStreams", "behindSeqs"] as const) {
        t[k] += w[k];
      }
      for (const [code, n] of Object.entries(w.ends)) t.ends[code] = (t.ends[code] ?? 0) + n;
      t.endMessages.push(...w.endMessages);
      for (const [s, [n, max]] of Object.entries(w.perSecond)) {
        const cur = t.perSecond[s] ?? [0, 0];
        t.perSecond[s] = [cur[0] + n, Math.max(cur[1], max)];
      }
    }
    t.endMessages = t.endMessages.slice(0, 10);
    return t;
  }

  /** shutdown closes the generators and stops the server(s); idempotent. */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const close = async (request: () => Promise<unknown>, child: import("node:child_process").ChildProcess) => {
      try {
        await request();
      } catch {
        // already gone
      }
      if (child.exitCode === null) child.kill("SIGTERM");
    };
    await Promise.all([
      ...this.workers.map((p) => close(() => p.request({ type: "close" }, "closed", 5000), p.proc.child)),
      ...this.senders.map((p) => close(() => p.request({ type: "close" }, "closed", 5000), p.proc.child)),
    ]);
    if (this.target) {
      this.log("stopping the server");
      await this.target.stop();
    }
    if (this.logDir) {
      if (this.succeeded && !this.opts.keep) rmSync(this.logDir, { recursive: true, force: true });
      else this.log(`server logs kept in ${this.logDir}`);
    }
  }
}

export function round(n: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(n * f) / f;
}
