/**
 * Subscriber worker: a load-generator process holding many live Subscribe
 * streams (each with its own HTTP/2 connection by default, or each its own
 * WebSocket with `--transport websocket`), reading them with the lean reader. For every message event it checks the seq against
 * the stream's cursor for that group (duplicates, gaps) and records the
 * send→receive latency (the send time is in the text) into one HDR
 * histogram per phase. Driven by the parent over IPC (lib/protocol.ts).
 */
import type http2 from "node:http2";
import { monitorEventLoopDelay } from "node:perf_hooks";
import * as hdr from "hdr-histogram-js";
import { turnOffPretenuring } from "../services/server/gc-tuning.js";
import { type LeanStream, type LeanSubscribeOptions, connectSession, leanSubscribe, leanWsSubscribe } from "./lib/lean-reader.js";
import { type FromWorker, type PhaseStats, type StreamSpec, type ToWorker, type WorkerTotals, emptyTotals } from "./lib/protocol.js";
import { type LeanItem, type Stamp, nowUs, readStamp } from "./lib/wire-lite.js";

// The same young-generation behaviour as the server (see gc-tuning.ts): the readers' and the sender's own stalls count in
// the latencies they measure.
turnOffPretenuring();

function send(msg: FromWorker): void {
  process.send?.(msg);
}

if (!process.send) {
  process.stderr.write("subscriber-worker must be started by bench/run.ts (it needs an IPC channel)\n");
  process.exit(2);
}
// The parent is gone: stop at once.
process.on("disconnect", () => process.exit(0));

function newHistogram(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
}

const histograms = new Map<number, hdr.Histogram>();
/** This worker's own event-loop delay since its streams opened or the last collect (reported with it). */
const loopDelay = monitorEventLoopDelay({ resolution: 1 });
loopDelay.enable();
const phaseCounts = new Map<number, number>();
const perSecond = new Map<number, [number, number]>();
const totals: WorkerTotals = emptyTotals();

/** Sub is one stream's state. */
class Sub {
  /** Last seq seen per group (the stream's cursor). */
  readonly cursors = new Map<string, number>();
  ready = false;
  failed = false;
  closing = false;
  reconnects = 0;
  stream: LeanStream | undefined;
  session: http2.ClientHttp2Session | undefined;
  constructor(readonly spec: StreamSpec) {}
}

let recvUs = 0;
let recvSecond = 0;
let secondSlot: [number, number] = [0, 0];
const stamp: Stamp = { sendTimeUs: 0, phase: 0 };
let lastPhase = -1;
let lastHist: hdr.Histogram | undefined;

function onChunk(): void {
  recvUs = nowUs();
  const s = Math.floor(recvUs / 1e6);
  if (s !== recvSecond) {
    recvSecond = s;
    let slot = perSecond.get(s);
    if (!slot) {
      slot = [0, 0];
      perSecond.set(s, slot);
    }
    secondSlot = slot;
  }
}

function onItem(sub: Sub, item: LeanItem): void {
  switch (item.kind) {
    case "event": {
      const last = sub.cursors.get(item.groupId);
      if (last === undefined) {
        // An event of a group the stream did not announce (e.g. a join): start from it.
        sub.cursors.set(item.groupId, item.seq);
      } else if (item.seq <= last) {
        totals.duplicates++;
        return;
      } else {
        if (item.seq > last + 1) totals.gapSeqs += item.seq - last - 1;
        sub.cursors.set(item.groupId, item.seq);
      }
      if (item.eventField !== 10) {
        totals.otherEvents++;
        return;
      }
      totals.messageEvents++;
      if (!readStamp(item.buf, item.textStart, item.textEnd, stamp)) return;
      let lat = Math.round(recvUs - stamp.sendTimeUs);
      if (lat < 1) lat = 1;
      if (stamp.phase !== lastPhase || !lastHist) {
        lastPhase = stamp.phase;
        lastHist = histograms.get(stamp.phase);
        if (!lastHist) {
          lastHist = newHistogram();
          histograms.set(stamp.phase, lastHist);
        }
      }
      lastHist.recordValue(lat);
      phaseCounts.set(stamp.phase, (phaseCounts.get(stamp.phase) ?? 0) + 1);
      secondSlot[0]++;
      if (lat > secondSlot[1]) secondSlot[1] = lat;
      return;
    }
    case "ready":
      for (const p of item.positions) {
        // On a reconnect the server starts where our cursor is; keep ours.
        if (!sub.cursors.has(p.groupId)) sub.cursors.set(p.groupId, p.seq);
      }
      if (!sub.ready) {
        sub.ready = true;
        totals.ready++;
      }
      return;
    case "heartbeat":
      totals.heartbeats++;
      return;
    case "cursorReset": {
      totals.cursorResets++;
      const last = sub.cursors.get(item.groupId) ?? 0;
      if (item.firstAvailableSeq - 1 > last) totals.resetSeqs += item.firstAvailableSeq - 1 - last;
      sub.cursors.set(item.groupId, item.firstAvailableSeq - 1);
      return;
    }
    case "groupJoined":
    case "empty":
      return;
  }
}

let options: Extract<ToWorker, { type: "open" }> | undefined;
const subs: Sub[] = [];
/** Sessions shared by several streams (streamsPerSession > 1), by url. */
const shared = new Map<string, { session: http2.ClientHttp2Session; users: number }>();

async function sessionFor(sub: Sub): Promise<http2.ClientHttp2Session> {
  const per = options?.streamsPerSession ?? 1;
  if (per <= 1) return connectSession(sub.spec.url);
  const key = `${sub.spec.url}#${Math.floor(sub.spec.id / per)}`;
  const s = shared.get(key);
  if (s && !s.session.closed && !s.session.destroyed) return s.session;
  const session = await connectSession(sub.spec.url);
  shared.set(key, { session, users: 0 });
  return session;
}

async function start(sub: Sub): Promise<void> {
  const cursors = [...sub.cursors].map(([groupId, seq]) => ({ groupId, seq }));
  const common: Omit<LeanSubscribeOptions, "session"> = {
    token: sub.spec.token,
    cursors,
    onChunk,
    onItem: (item) => onItem(sub, item),
    onEnd: (end) => {
      sub.stream = undefined;
      if (sub.closing) return;
      const code = String(end.code);
      totals.ends[code] = (totals.ends[code] ?? 0) + 1;
      if (totals.endMessages.length < 10) totals.endMessages.push(`stream ${sub.spec.id}: code ${code}: ${end.message}`);
      // Reconnect with our cursors, as a real client would (bounded).
      if (sub.reconnects < (options?.maxReconnects ?? 0) && (end.code === -1 || end.code === 14 || end.code === 8 || end.code === 4)) {
        sub.reconnects++;
        totals.reconnects++;
        const delay = 100 + Math.random() * 400;
        setTimeout(() => {
          if (sub.closing) return;
          if (sub.session && (sub.session.closed || sub.session.destroyed)) sub.session = undefined;
          start(sub).catch((e: unknown) => {
            sub.failed = true;
            if (totals.endMessages.length < 10) totals.endMessages.push(`stream ${sub.spec.id}: reconnect failed: ${String(e)}`);
          });
        }, delay);
      }
    },
  };
  if (options?.transport === "websocket") {
    sub.stream = leanWsSubscribe({ url: sub.spec.url, ...common });
    return;
  }
  const session = sub.session && !sub.session.closed && !sub.session.destroyed ? sub.session : await sessionFor(sub);
  sub.session = session;
  sub.stream = leanSubscribe({ session, ...common });
}

async function open(cmd: Extract<ToWorker, { type: "open" }>): Promise<void> {
  options = cmd;
  const t0 = performance.now();
  // Opens add streams: each call opens only its own.
  const batch = cmd.streams.map((spec) => new Sub(spec));
  subs.push(...batch);
  totals.streams = subs.length;
  const readyBefore = totals.ready;
  const failedBefore = totals.failedToOpen;
  const errors: string[] = [];
  let next = 0;
  let opened = 0;
  const progress = setInterval(() => send({ type: "progress", opened, ready: totals.ready, failed: totals.failedToOpen }), 2000);
  const deadline = Date.now() + cmd.openTimeoutMs;
  const worker = async () => {
    while (next < batch.length && Date.now() < deadline) {
      const sub = batch[next++] as Sub;
      try {
        await start(sub);
        opened++;
        // Wait (bounded) for StreamReady before opening more, so the server is not flooded with set-ups.
        for (let i = 0; i < 3000 && !sub.ready && sub.stream && Date.now() < deadline; i++) await new Promise((r) => setTimeout(r, 5));
      } catch (e) {
        sub.failed = true;
        totals.failedToOpen++;
        if (errors.length < 10) errors.push(`stream ${sub.spec.id}: ${String(e)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, cmd.connectConcurrency) }, worker));
  // Streams that were opened but are not ready yet get until the deadline.
  const done = () => totals.ready - readyBefore + (totals.failedToOpen - failedBefore) >= batch.length;
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  clearInterval(progress);
  const ready = totals.ready - readyBefore;
  loopDelay.reset(); // measure the traffic, not the opening
  send({ type: "opened", ready, failed: batch.length - ready, errors, openSeconds: (performance.now() - t0) / 1000 });
}

async function collect(cmd: Extract<ToWorker, { type: "collect" }>): Promise<void> {
  const t0 = Date.now();
  const behind = () => {
    let streams = 0;
    let seqs = 0;
    for (const sub of subs) {
      let b = 0;
      for (const g of sub.spec.groups) {
        const head = cmd.heads[g];
        if (head === undefined) continue;
        const cur = sub.cursors.get(g) ?? 0;
        if (cur < head) b += head - cur;
      }
      if (b > 0) {
        streams++;
        seqs += b;
      }
    }
    return { streams, seqs };
  };
  let state = behind();
  while (state.streams > 0 && Date.now() - t0 < cmd.waitMs) {
    await new Promise((r) => setTimeout(r, 20));
    state = behind();
  }
  totals.behindStreams = state.streams;
  totals.behindSeqs = state.seqs;
  const phases: Record<number, PhaseStats> = {};
  for (const p of cmd.phases) {
    const h = histograms.get(p);
    phases[p] = { deliveries: phaseCounts.get(p) ?? 0, histogram: h ? hdr.encodeIntoCompressedBase64(h) : "" };
    histograms.delete(p);
    phaseCounts.delete(p);
    if (lastPhase === p) lastHist = undefined;
  }
  totals.perSecond = Object.fromEntries([...perSecond].map(([s, v]) => [String(s), v]));
  const ms = (ns: number) => Math.round(ns / 1e4) / 100;
  const delay = { p50: ms(loopDelay.percentile(50)), p99: ms(loopDelay.percentile(99)), max: ms(loopDelay.max) };
  loopDelay.reset();
  send({ type: "collected", phases, totals, waitedMs: Date.now() - t0, loopDelay: delay });
}

function closeAll(): void {
  for (const sub of subs) {
    sub.closing = true;
    sub.stream?.close();
  }
  for (const sub of subs) sub.session?.close();
  for (const s of shared.values()) s.session.close();
}

process.on("message", (msg: ToWorker) => {
  const run = async () => {
    switch (msg.type) {
      case "open":
        await open(msg);
        return;
      case "collect":
        await collect(msg);
        return;
      case "snapshot": {
        let deliveries = 0;
        for (const n of phaseCounts.values()) deliveries += n;
        send({ type: "snapshot", deliveries, ready: totals.ready });
        return;
      }
      case "close":
        closeAll();
        send({ type: "closed" });
        setTimeout(() => process.exit(0), 200).unref();
        return;
    }
  };
  run().catch((e: unknown) => send({ type: "error", message: e instanceof Error ? (e.stack ?? e.message) : String(e) }));
});
