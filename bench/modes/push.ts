/**
 * push: the notifier under load. Every member of --groups × --members is
 * offline (no stream) with one Web Push device on a loopback push service
 * (test/support/push-receivers: TLS with the test certificate, VAPID checked,
 * every payload decrypted, as a browser's push service and browser would).
 * One sender writes --rate messages/s to random groups for --duration s;
 * the notifier coalesces each group's messages per window (NOTIFY_WINDOW,
 * 2 s by default; --server-env NOTIFY_WINDOW=… changes it) and pushes to
 * every member but the newest message's sender.
 *
 * Reported: pushes per second accepted by the push service over the measured
 * phase (and how many messages × recipients each push stood for), message →
 * push latency measured end to end (the newest message's scheduled send time,
 * carried in its text and so in the push's preview, to the push's arrival at
 * the service, stamped by a 5 ms poll) and the server's own histogram
 * (chat_push_latency_seconds), duplicates per (device, group, newest seq)
 * (must be 0), and server CPU. --target embedded only (the production layout
 * of bench/lib/servers.ts has no notify process).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as hdr from "hdr-histogram-js";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { NotificationService } from "../../gen/chat/v1/notification_service_pb.js";
import { testCertificate } from "../../test/support/push-receivers/test-certs.js";
import { type WebPushReceiver, makeVapidKeys, startWebPushReceiver } from "../../test/support/push-receivers/web-push-receiver.js";
import type { Bench } from "../lib/bench.js";
import { type Metrics, scrapeMetrics } from "../lib/server-metrics.js";
import { runPool } from "../lib/setup.js";
import { fmt, gridTable, lineChart, percentileCurve, summarize, writeResults } from "../lib/report.js";
import { nowUs } from "../lib/wire-lite.js";
import { cpuRows, header, latencyText, populateShape, senderGroups, senderInit, table } from "./common.js";

/** Arrival is one push as the bench saw it arrive. */
interface Arrival {
  readonly subscriptionId: string;
  readonly groupId: string;
  readonly newestSeq: number;
  readonly count: number;
  /** The newest message's scheduled send time (µs), from the preview; undefined if the preview was cut before it. */
  readonly sentUs: number | undefined;
  /** When the poll first saw it (µs). */
  readonly seenUs: number;
}

export async function runPush(bench: Bench): Promise<number> {
  const o = bench.opts;
  if (o.target !== "embedded") throw new Error("push: only --target embedded (the production layout has no notify process)");
  const receiver = await startWebPushReceiver();
  const dir = await mkdtemp(join(tmpdir(), "chat-bench-push-"));
  try {
    return await run(bench, receiver, dir);
  } finally {
    await receiver.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function run(bench: Bench, receiver: WebPushReceiver, dir: string): Promise<number> {
  const o = bench.opts;
  const caFile = join(dir, "ca.pem");
  await writeFile(caFile, testCertificate().cert);
  const vapid = makeVapidKeys("mailto:bench@example.com");
  // The push settings join the server's environment (an explicit --server-env wins).
  Object.assign(o.serverEnv, {
    PUSH_ALLOW_PRIVATE_ENDPOINTS: "true",
    PUSH_CA_FILE: caFile,
    WEB_PUSH_VAPID_SUBJECT: vapid.subject,
    WEB_PUSH_VAPID_PUBLIC_KEY: vapid.publicKey,
    WEB_PUSH_VAPID_PRIVATE_KEY: vapid.privateKey,
    ...o.serverEnv,
  });
  const target = await bench.startTarget();
  const serverUrl = target.endpoints.message;
  const pop = await populateShape(bench);

  // One Web Push device per user, registered through the API.
  bench.log(`registering a Web Push device for each of ${pop.users.length} users`);
  const transport = createGrpcTransport({ baseUrl: serverUrl });
  const notifications = createClient(NotificationService, transport);
  const subscriptionOf = new Map<string, number>();
  await runPool(pop.users.length, 32, async (i) => {
    const u = pop.users[i];
    if (!u) return;
    const sub = receiver.subscribe();
    subscriptionOf.set(sub.id, i);
    await notifications.registerDevice(
      { target: { case: "webPush", value: { endpoint: sub.endpoint, p256dh: sub.p256dh, auth: sub.auth } } },
      { headers: { authorization: `Bearer ${u.token}` } },
    );
  });

  // Stamp each push when it arrives (the receiver keeps them in order).
  const arrivals: Arrival[] = [];
  const poll = setInterval(() => {
    const now = nowUs();
    for (let i = arrivals.length; i < receiver.pushes.length; i++) {
      const p = receiver.pushes[i];
      if (!p) continue;
      const j = p.json as { group_id?: string; newest_seq?: number; count?: number; body?: string };
      const preview = (j.body ?? "").split("\n").at(-1)?.split(": ").slice(1).join(": ") ?? "";
      const stamp = Number(preview.split(" ")[0]);
      arrivals.push({
        subscriptionId: p.subscriptionId,
        groupId: j.group_id ?? "",
        newestSeq: j.newest_seq ?? 0,
        count: j.count ?? 0,
        sentUs: Number.isFinite(stamp) && stamp > 1e15 ? stamp : undefined,
        seenUs: now,
      });
    }
  }, 5);

  try {
    const sender = await bench.startSender(senderInit(bench, target, senderGroups(pop)));
    if (o.warmup > 0) {
      bench.log(`warm-up: ${o.rate} msg/s for ${o.warmup} s`);
      await bench.runPhases(sender, [{ phase: 0, rate: o.rate, durationMs: o.warmup * 1000 }], { collect: false });
      await drained(bench, serverUrl);
    }
    const before = arrivals.length;
    const metricsBefore = (await scrapeMetrics([serverUrl]))[0];
    bench.log(`measuring: ${o.rate} msg/s to ${o.groups} groups of ${o.members} offline members for ${o.duration} s`);
    const startedUs = nowUs();
    const [r] = await bench.runPhases(sender, [{ phase: 1, rate: o.rate, durationMs: o.duration * 1000 }], { collect: false });
    if (!r) throw new Error("no phase result");
    const drainSeconds = await drained(bench, serverUrl);
    const endedUs = nowUs();
    const metricsAfter = (await scrapeMetrics([serverUrl]))[0];
    clearInterval(poll);

    const measured = arrivals.slice(before);
    const latency = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
    for (const a of measured) if (a.sentUs !== undefined && a.sentUs >= startedUs) latency.recordValue(Math.max(1, Math.round(a.seenUs - a.sentUs)));
    const e2e = summarize(latency);
    const keys = arrivals.map((a) => `${a.subscriptionId}/${a.groupId}/${a.newestSeq}`);
    const duplicates = keys.length - new Set(keys).size;
    const spanSeconds = (endedUs - startedUs) / 1e6;
    const pushesPerSecond = measured.length / Math.max(o.duration, spanSeconds - drainSeconds);
    const recipients = r.sender.ok * (o.members - 1);
    const server = pushMetrics(metricsBefore, metricsAfter);
    const errors = Object.values(r.sender.errors).reduce((a, b) => a + b, 0);

    const title = `push on ${target.kind}: ${o.groups} groups × ${o.members} offline members, one Web Push device each, ${fmt(o.rate)} msg/s for ${o.duration} s, NOTIFY_WINDOW ${o.serverEnv.NOTIFY_WINDOW ?? "2s"}`;
    process.stdout.write(`\n${title}\n`);
    const rows: [string, string][] = [
      ["messages sent", `${fmt(r.sender.ok)} ok${errors ? `, ${fmt(errors)} errors` : ""}${r.sender.skipped ? `, ${fmt(r.sender.skipped)} skipped` : ""}`],
      ["pushes received", `${fmt(measured.length)} (${fmt(pushesPerSecond, 1)}/s over the phase; drained ${fmt(drainSeconds, 1)} s after it)`],
      ["coalescing", `${fmt(recipients)} message × recipient pairs in ${fmt(measured.length)} pushes (${fmt(measured.length > 0 ? recipients / measured.length : 0, 1)} per push)`],
      ["message → push (end to end)", latencyText(e2e)],
      ["server: chat_push_latency_seconds", server.latencyText],
      ["server: pushes sent / failed / retried", `${fmt(server.sent)} / ${fmt(server.failed)} / ${fmt(server.retried)}`],
      ["duplicates (device, group, newest seq)", `${fmt(duplicates)}${duplicates === 0 ? " (none)" : " — NEVER-TWICE VIOLATED"}`],
      ["receiver rejections", `${fmt(receiver.rejections.length)}${receiver.rejections[0] ? ` (first: ${receiver.rejections[0].status} ${receiver.rejections[0].reason})` : ""}`],
      ...cpuRows(r.window),
    ];
    process.stdout.write(`${table(rows)}\n`);
    process.stdout.write(
      `${gridTable(
        ["pushes/s", "e2e p50 ms", "e2e p99 ms", "e2e max ms", "srv cores", "µs CPU/push"],
        [[fmt(pushesPerSecond, 1), fmt(e2e.p50, 1), fmt(e2e.p99, 1), fmt(e2e.max, 1), fmt(r.window.serverCores, 2), fmt(measured.length > 0 ? (r.window.serverCpuSeconds * 1e6) / measured.length : 0, 0)]],
      )}\n`,
    );
    const result = {
      ...header(bench, {
        groups: o.groups,
        members: o.members,
        users: pop.users.length,
        devices: pop.users.length,
        rate: o.rate,
        durationSeconds: o.duration,
        textBytes: o.textBytes,
        notifyWindow: o.serverEnv.NOTIFY_WINDOW ?? "2s (default)",
      }),
      results: {
        messages: r.sender.ok,
        sendErrors: r.sender.errors,
        pushes: measured.length,
        pushesPerSecond,
        drainSeconds,
        messageRecipientPairs: recipients,
        endToEndLatencyMs: e2e,
        server,
        duplicates,
        receiverRejections: receiver.rejections.length,
        window: r.window,
        serverMetrics: r.serverMetrics,
        curve: percentileCurve(latency),
      },
    };
    if (o.write) {
      const svg = lineChart({
        title: `message → push latency on ${target.kind} (Web Push, loopback)`,
        subtitle: `${fmt(pushesPerSecond, 1)} pushes/s; ${o.groups} groups × ${o.members} offline members; ${fmt(o.rate)} msg/s`,
        xLabel: "percentile",
        yLabel: "latency (ms, log scale)",
        xScale: "percentile",
        yScale: "log",
        series: [{ label: "newest message → push arrival", color: "#1f77b4", points: percentileCurve(latency), dots: true }],
        hlines: [],
      });
      const files = writeResults("push", target.kind, result, svg);
      process.stdout.write(`\nwrote ${files.json}${files.svg ? ` and ${files.svg}` : ""}\n`);
    }
    return duplicates > 0 || receiver.rejections.length > 0 || errors > 0 ? 3 : 0;
  } finally {
    clearInterval(poll);
  }
}

/** drained waits (at most 120 s) until the notifier holds no group: every window flushed and sent; returns the seconds it took. */
async function drained(bench: Bench, url: string): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const [m] = await scrapeMetrics([url]);
    if (m && (m.get("chat_notify_groups_pending") ?? 0) === 0 && Date.now() - t0 > 100) return (Date.now() - t0) / 1000;
    if (Date.now() - t0 > 120_000) {
      bench.log("  the notifier did not drain within 120 s");
      return (Date.now() - t0) / 1000;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** pushMetrics is the server's account of the phase: pushes sent, failed and retried, and its latency histogram's percentiles. */
function pushMetrics(before: Metrics | undefined, after: Metrics | undefined) {
  const sum = (m: Metrics | undefined, prefix: string) => {
    let n = 0;
    for (const [k, v] of m ?? []) if (k === prefix || k.startsWith(`${prefix}{`)) n += v;
    return n;
  };
  const delta = (name: string) => sum(after, name) - sum(before, name);
  // The histogram's buckets, summed over providers: cumulative counts per bound.
  const bounds = new Map<number, number>();
  for (const [k, v] of after ?? []) {
    const m = /^chat_push_latency_seconds_bucket\{(.*)\}$/.exec(k);
    const le = m?.[1] ? /le="([^"]+)"/.exec(m[1])?.[1] : undefined;
    if (le === undefined || le === "+Inf") continue;
    const was = before?.get(k) ?? 0;
    bounds.set(Number(le), (bounds.get(Number(le)) ?? 0) + v - was);
  }
  const count = delta("chat_push_latency_seconds_count");
  const at = (q: number) => {
    for (const [le, n] of [...bounds].sort((a, b) => a[0] - b[0])) if (n >= q * count) return le;
    return Number.POSITIVE_INFINITY;
  };
  return {
    sent: delta("chat_pushes_sent_total"),
    failed: delta("chat_pushes_failed_total"),
    retried: delta("chat_push_retries_total"),
    latencyCount: count,
    latencyP50AtMostSeconds: count > 0 ? at(0.5) : undefined,
    latencyP99AtMostSeconds: count > 0 ? at(0.99) : undefined,
    latencyText: count > 0 ? `p50 ≤ ${at(0.5)} s, p99 ≤ ${at(0.99)} s (bucket bounds; ${fmt(count)} pushes)` : "(no pushes)",
  };
}
