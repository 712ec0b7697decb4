/**
 * Sender: the load generator of unary calls. It posts SendMessage (or, in
 * history mode, ListMessages) at a fixed open-loop rate: call i of a phase
 * is scheduled at start + i / rate and issued then whether or not earlier
 * calls were answered, so a slow server cannot slow the offered load down
 * (no coordinated omission). Each message goes to a random group from a
 * random member of it, and its text starts with its scheduled send time and
 * phase. Latency is measured from the scheduled time. Driven by the parent
 * over IPC (lib/protocol.ts).
 */
import * as hdr from "hdr-histogram-js";
import { turnOffPretenuring } from "../services/server/gc-tuning.js";
import type { FromSender, SenderGroup, SenderPhase, SenderPhaseStats, ToSender } from "./lib/protocol.js";
import { LIST_PATH, SEND_PATH, UnaryPool, type UnaryResult } from "./lib/unary.js";
import {
  benchText,
  decodeListMessagesResponse,
  decodeSendMessageResponse,
  encodeListMessagesRequest,
  encodeSendMessageRequest,
  nowUs,
} from "./lib/wire-lite.js";

// The same young-generation behaviour as the server (see gc-tuning.ts): the readers' and the sender's own stalls count in
// the latencies they measure.
turnOffPretenuring();

function send(msg: FromSender): void {
  process.send?.(msg);
}

if (!process.send) {
  process.stderr.write("sender must be started by bench/run.ts (it needs an IPC channel)\n");
  process.exit(2);
}
process.on("disconnect", () => process.exit(0));

function newHistogram(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
}

let init: Extract<ToSender, { type: "init" }> | undefined;
let pool: UnaryPool | undefined;
let groups: SenderGroup[] = [];
const heads: Record<string, number> = {};
let firstError: string | undefined;
let counter = 0;

/** PhaseRun is one phase in progress. */
class PhaseRun {
  issued = 0;
  completed = 0;
  ok = 0;
  skipped = 0;
  expected = 0;
  listed = 0;
  scheduleDone = false;
  readonly errors: Record<string, number> = {};
  readonly hist = newHistogram();
  readonly lag = newHistogram();
  readonly total: number;
  lastResponseUs = 0;
  /** The next group of a sequential pick, counted from the phase's first group. */
  sequence = 0;

  constructor(
    readonly spec: SenderPhase,
    readonly startUs: number,
  ) {
    this.total = Math.max(0, Math.round((spec.rate * spec.durationMs) / 1000));
  }

  get done(): boolean {
    return this.scheduleDone && this.completed === this.issued;
  }

  stats(): SenderPhaseStats {
    return {
      phase: this.spec.phase,
      rate: this.spec.rate,
      durationMs: this.spec.durationMs,
      issued: this.issued,
      ok: this.ok,
      errors: this.errors,
      skipped: this.skipped,
      expectedDeliveries: this.expected,
      histogram: hdr.encodeIntoCompressedBase64(this.hist),
      lagHistogram: hdr.encodeIntoCompressedBase64(this.lag),
      spanMs: (Math.max(this.lastResponseUs, this.startUs) - this.startUs) / 1000,
      listedMessages: this.listed,
    };
  }
}

function issue(run: PhaseRun, scheduledUs: number): void {
  const cfg = init;
  const p = pool;
  if (!cfg || !p) return;
  if (p.inFlight >= cfg.maxInFlight) {
    run.skipped++;
    return;
  }
  const from = Math.max(0, run.spec.groups?.from ?? 0);
  const span = Math.max(1, Math.min(groups.length, run.spec.groups?.to ?? groups.length) - from);
  const gi = from + (cfg.pick === "sequential" ? run.sequence++ % span : Math.floor(Math.random() * span));
  const group = groups[gi] as SenderGroup;
  const token = group.tokens[Math.floor(Math.random() * group.tokens.length)] as string;
  let path: string;
  let body: Buffer;
  if (cfg.op === "send") {
    path = SEND_PATH;
    body = encodeSendMessageRequest(group.groupId, benchText(scheduledUs, run.spec.phase, cfg.textBytes), `b${run.spec.phase}-${counter++}`);
  } else {
    path = LIST_PATH;
    const head = cfg.groupHeads?.[group.groupId] ?? 0;
    if (cfg.listAnchor === "deep" && head > cfg.listLimit + 1) {
      // A page ending anywhere below the newest page.
      const before = 2 + Math.floor(Math.random() * (head - cfg.listLimit - 1));
      body = encodeListMessagesRequest(group.groupId, cfg.listLimit, { beforeSeq: before });
    } else {
      body = encodeListMessagesRequest(group.groupId, cfg.listLimit);
    }
  }
  run.issued++;
  const issuedUs = nowUs();
  run.lag.recordValue(Math.max(1, Math.round(issuedUs - scheduledUs)));
  p.call(path, token, body, cfg.timeoutMs, (r: UnaryResult) => {
    const end = nowUs();
    run.completed++;
    run.lastResponseUs = end;
    run.hist.recordValue(Math.max(1, Math.round(end - scheduledUs)));
    if (r.code === 0 && r.payload) {
      run.ok++;
      if (cfg.op === "send") {
        const { seq } = decodeSendMessageResponse(r.payload);
        if (seq > (heads[group.groupId] ?? 0)) heads[group.groupId] = seq;
        run.expected += group.tokens.length;
      } else {
        run.listed += decodeListMessagesResponse(r.payload).messages;
      }
    } else {
      const code = String(r.code);
      run.errors[code] = (run.errors[code] ?? 0) + 1;
      firstError ??= `code ${code}: ${r.message}`;
    }
    checkDone();
  });
}

let runs: PhaseRun[] = [];
let reported = new Set<PhaseRun>();

function checkDone(): void {
  for (const run of runs) {
    if (run.done && !reported.has(run)) {
      reported.add(run);
      send({ type: "phaseDone", stats: run.stats() });
    }
  }
  if (runs.length > 0 && reported.size === runs.length) {
    runs = [];
    reported = new Set();
    send({ type: "done", heads: { ...heads }, firstError });
  }
}

/** runPhases schedules the phases back to back from startAtMs (wall clock). */
function runPhases(phases: SenderPhase[], startAtMs: number): void {
  let startUs = startAtMs * 1000;
  runs = phases.map((spec) => {
    const r = new PhaseRun(spec, startUs);
    startUs += spec.durationMs * 1000;
    return r;
  });
  reported = new Set();
  let current = 0;
  const MAX_PER_TICK = 5000;
  const tick = () => {
    const now = nowUs();
    let budget = MAX_PER_TICK;
    while (current < runs.length && budget > 0) {
      const run = runs[current] as PhaseRun;
      if (now < run.startUs) break;
      const interval = 1e6 / run.spec.rate;
      const due = Math.min(run.total, Math.floor((now - run.startUs) / interval) + 1);
      while (run.issued + run.skipped < due && budget > 0) {
        issue(run, run.startUs + (run.issued + run.skipped) * interval);
        budget--;
      }
      if (run.issued + run.skipped >= run.total && now >= run.startUs + run.spec.durationMs * 1000) {
        run.scheduleDone = true;
        current++;
        continue;
      }
      break;
    }
    checkDone();
    if (current < runs.length) {
      const run = runs[current] as PhaseRun;
      const waitMs = Math.max(0, (run.startUs - nowUs()) / 1000);
      if (budget === 0) setImmediate(tick);
      else setTimeout(tick, waitMs > 2 ? waitMs - 1 : 1);
    }
  };
  const firstWait = Math.max(0, startAtMs - (performance.timeOrigin + performance.now()));
  setTimeout(tick, firstWait);
}

process.on("message", (msg: ToSender) => {
  try {
    switch (msg.type) {
      case "init":
        init = msg;
        groups = msg.groups;
        if (groups.length === 0) throw new Error("no groups");
        pool = new UnaryPool(msg.url, msg.sessions);
        send({ type: "ready" });
        return;
      case "run":
        runPhases(msg.phases, msg.startAtMs);
        return;
      case "close":
        pool?.close();
        send({ type: "closed" });
        setTimeout(() => process.exit(0), 200).unref();
        return;
    }
  } catch (e) {
    send({ type: "error", message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  }
});
