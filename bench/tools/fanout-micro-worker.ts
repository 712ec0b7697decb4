/**
 * Subscriber process of fanout-micro.ts: holds many live Subscribe streams
 * (one HTTP/2 connection each by default) read with the bench's lean reader,
 * and counts what arrives. Every stream is in one group; a seq at or below
 * the stream's cursor is a duplicate, a jump over it a gap. Driven over IPC.
 */
import type http2 from "node:http2";
import net from "node:net";
import * as hdr from "hdr-histogram-js";
import { FrameParser, type StreamEnd, connectSession, leanSubscribe, leanWsSubscribe } from "../lib/lean-reader.js";
import { LeanItem, type Stamp, decodeSubscribeResponse, nowUs, readStamp } from "../lib/wire-lite.js";

export interface MicroSub {
  readonly token: string;
  readonly groupId: string;
  /** The server of the sub's stack. */
  readonly url: string;
  /** h2: Subscribe over HTTP/2; ws: Subscribe over WebSocket; tcp: a bare TCP connection (token + newline, then gRPC frames). */
  readonly transport: "h2" | "ws" | "tcp";
}

export type ToMicroWorker =
  | { readonly type: "open"; readonly subs: readonly MicroSub[]; readonly streamsPerConnection: number; readonly concurrency: number }
  | { readonly type: "stats"; readonly histograms?: boolean }
  | { readonly type: "close" };

export interface MicroStats {
  ready: number;
  events: number;
  heartbeats: number;
  other: number;
  duplicates: number;
  gaps: number;
  ended: number;
  endCodes: Record<string, number>;
  /** This process's CPU (user, system) in µs since it started. */
  cpuUser: number;
  cpuSystem: number;
  /** With `histograms`: publish→receive latency (µs) by the phase tag in the text, hdr-histogram-js compressed base64. */
  histograms?: Record<string, string>;
}

export type FromMicroWorker = { readonly type: "opened"; readonly stats: MicroStats } | { readonly type: "stats"; readonly stats: MicroStats };

const stats: MicroStats = { ready: 0, events: 0, heartbeats: 0, other: 0, duplicates: 0, gaps: 0, ended: 0, endCodes: {}, cpuUser: 0, cpuSystem: 0 };
const sessions: http2.ClientHttp2Session[] = [];
const sockets: net.Socket[] = [];

const latency = new Map<number, hdr.Histogram>();
const stamp: Stamp = { sendTimeUs: 0, phase: 0 };

function snapshot(histograms = false): MicroStats {
  const cpu = process.cpuUsage();
  const out: MicroStats = { ...stats, endCodes: { ...stats.endCodes }, cpuUser: cpu.user, cpuSystem: cpu.system };
  if (histograms) out.histograms = Object.fromEntries([...latency].map(([tag, h]) => [String(tag), hdr.encodeIntoCompressedBase64(h)]));
  return out;
}

function reply(msg: FromMicroWorker): void {
  process.send?.(msg);
}

if (!process.send) {
  process.stderr.write("fanout-micro-worker is started by bench/tools/fanout-micro.ts\n");
  process.exit(2);
}
process.on("disconnect", () => process.exit(0));

/** counter returns the item handler of one stream: ready, then events checked against the stream's cursor. */
function counter(sub: MicroSub, onReady: () => void): (item: LeanItem) => void {
  let cursor = -1;
  return (item) => {
        switch (item.kind) {
          case "ready": {
            const pos = item.positions.find((p) => p.groupId === sub.groupId);
            cursor = pos ? pos.seq : 0;
            stats.ready++;
            onReady();
            return;
          }
          case "event": {
            const seq = item.seq;
            if (seq <= cursor) stats.duplicates++;
            else {
              if (seq > cursor + 1) stats.gaps += seq - cursor - 1;
              cursor = seq;
            }
            stats.events++;
            if (item.textStart >= 0 && readStamp(item.buf, item.textStart, item.textEnd, stamp)) {
              let h = latency.get(stamp.phase);
              if (!h) {
                h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
                latency.set(stamp.phase, h);
              }
              h.recordValue(Math.max(1, Math.round(nowUs() - stamp.sendTimeUs)));
            }
            return;
          }
          case "heartbeat":
            stats.heartbeats++;
            return;
          default:
            stats.other++;
        }
      };
}

function openOne(session: http2.ClientHttp2Session | undefined, sub: MicroSub): Promise<void> {
  return new Promise((resolve) => {
    let ready = false;
    const options = {
      token: sub.token,
      onItem: counter(sub, () => {
        ready = true;
        resolve();
      }),
      onEnd: (end: StreamEnd) => {
        stats.ended++;
        const key = String(end.code);
        stats.endCodes[key] = (stats.endCodes[key] ?? 0) + 1;
        if (!ready) resolve();
      },
    };
    if (session) leanSubscribe({ session, ...options });
    else leanWsSubscribe({ url: sub.url, ...options });
  });
}

/** openTcp opens the floor's stream: a bare TCP connection that sends its token and a newline, then reads gRPC frames. */
function openTcp(url: string, sub: MicroSub): Promise<void> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port), noDelay: true });
    sockets.push(socket);
    const item = new LeanItem();
    const onItem = counter(sub, resolve);
    const parser = new FrameParser((buf, start, end) => onItem(decodeSubscribeResponse(buf, start, end, item)));
    socket.on("data", (chunk: Buffer) => parser.push(chunk));
    socket.on("error", () => {});
    socket.on("close", () => {
      stats.ended++;
      resolve();
    });
    socket.write(`${sub.token}\n`);
  });
}

async function open(subs: readonly MicroSub[], perConnection: number, concurrency: number): Promise<void> {
  // Batches of up to perConnection streams of one server share a connection (tcp, ws: one each).
  const batches: MicroSub[][] = [];
  const byServer = new Map<string, MicroSub[]>();
  for (const sub of subs) {
    const key = `${sub.transport} ${sub.url}`;
    let open = byServer.get(key);
    if (!open || open.length >= (sub.transport === "h2" ? perConnection : 1)) {
      open = [];
      byServer.set(key, open);
      batches.push(open);
    }
    open.push(sub);
  }
  let next = 0;
  const lane = async () => {
    while (next < batches.length) {
      const batch = batches[next++] as MicroSub[];
      const first = batch[0] as MicroSub;
      if (first.transport === "tcp") {
        await openTcp(first.url, first);
        continue;
      }
      if (first.transport === "ws") {
        await openOne(undefined, first);
        continue;
      }
      const session = await connectSession(first.url);
      sessions.push(session);
      await Promise.all(batch.map((s) => openOne(session, s)));
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
}

process.on("message", (msg: ToMicroWorker) => {
  switch (msg.type) {
    case "open":
      open(msg.subs, msg.streamsPerConnection, msg.concurrency).then(
        () => reply({ type: "opened", stats: snapshot() }),
        (err: unknown) => {
          process.stderr.write(`open failed: ${String(err)}\n`);
          process.exit(1);
        },
      );
      return;
    case "stats":
      reply({ type: "stats", stats: snapshot(msg.histograms === true) });
      return;
    case "close":
      for (const s of sessions) s.destroy();
      for (const s of sockets) s.destroy();
      process.exit(0);
  }
});
