/**
 * Prometheus metrics of one app (one process serves one app; tests start
 * several in one process, so every app has its own Registry and nothing here
 * is module-global). startApp creates an AppMetrics and hands its parts to
 * what records: the StreamHub gets `hub` (a HubMetrics, so the stream code
 * knows nothing of Prometheus), the RPC layer `sendResult`. The one-port
 * server answers `GET /metrics` with `scrape()`.
 *
 * The delivery path writes one pre-encoded frame to many streams, so nothing
 * on it touches prom-client: the hub's reports (once per event and fan-out
 * batch) add to plain numbers and to a histogram that takes n observations
 * of one value in one step; the Prometheus counters read those numbers when
 * scraped.
 */
import type http from "node:http";
import type http2 from "node:http2";
import type { Code } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { Counter, Gauge, Histogram, type Metric, Registry, collectDefaultMetrics } from "prom-client";
import type { PushKind } from "../core/model.js";
import type { CursorResetReason, HubMetrics } from "../delivery/hub-metrics.js";
import type { NotifierObserver } from "../notifier/notifier.js";
import type { PushFailReason } from "../notifier/push-delivery.js";
import type { SkipReason } from "../notifier/push-plan.js";

/** METRICS_PATH is where each process serves its metrics (GET, Prometheus text format, no authentication). */
export const METRICS_PATH = "/metrics";

/** LATENCY_BUCKETS are the histogram buckets (seconds) of the latency metrics: 0.5 ms to 2.5 s. */
export const LATENCY_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/**
 * PUSH_LATENCY_BUCKETS are the buckets (seconds) of chat_push_latency_seconds:
 * a push waits for its coalescing window (NOTIFY_WINDOW, 2 s by default) and
 * its retries, so they reach further than LATENCY_BUCKETS.
 */
export const PUSH_LATENCY_BUCKETS: readonly number[] = [0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 15, 30, 60];

/** SendVia says where a send came in: the unary SendMessage RPC or a send_message item on a Connect stream. */
export type SendVia = "rpc" | "stream";

/** MetricsOptions configures {@link AppMetrics}. */
export interface MetricsOptions {
  /** defaultMetrics adds prom-client's process and Node.js metrics (CPU, memory, event loop lag, GC, handles); default true. */
  readonly defaultMetrics?: boolean;
}

/** AppMetrics is one app's registry and the metric objects the app's parts record into. */
export class AppMetrics {
  readonly registry = new Registry();
  /** hub is what the StreamHub reports to. */
  readonly hub: HubMetrics;
  /** notifier is what the notifier (push worker) reports to. */
  readonly notifier: NotifierObserver;
  private readonly sends: Counter<"code" | "via">;
  private readonly historyPages: Counter<"source">;
  private readonly storeCommits: WeightedHistogram;
  private readonly sendAppends: WeightedHistogram;
  private activeStreams: () => number = () => 0;
  private sendsInFlight: () => number = () => 0;
  private sendsShed: () => number = () => 0;
  private notifyPending: () => number = () => 0;

  constructor(options: MetricsOptions = {}) {
    const registers = [this.registry];
    const deliveryLatency = new WeightedHistogram(
      "chat_delivery_latency_seconds",
      "Time from a group event's `at` (set when its seq is assigned, before it is made durable) to its write to a client " +
        "stream on this process, one observation per stream written (a live event written to 20 local streams is 20 " +
        "observations). Live deliveries from the bus only: events replayed from the store (resume, gap repair, join) " +
        'are excluded, as their age is how long the client was away; they count in chat_stream_events_delivered_total{path="replay"}. ' +
        "Clamped at 0 across processes whose clocks differ.",
      LATENCY_BUCKETS,
      this.registry,
    );
    const busLag = new WeightedHistogram(
      "chat_bus_lag_seconds",
      "Time from a group event's `at` to its receipt from the event bus by this process's stream hub, one observation per event " +
        "(it includes making the event durable and publishing it). Clamped at 0 across processes whose clocks differ.",
      LATENCY_BUCKETS,
      this.registry,
    );
    this.storeCommits = new WeightedHistogram(
      "chat_store_commit_seconds",
      "Embedded store (SQLite) only: duration of each group commit of sent messages, one transaction including its WAL " +
        "fsync, run on the event loop. Every stream and call of the process waits while it runs, so a slow disk shows " +
        "here first. Not reported with the Cassandra store.",
      LATENCY_BUCKETS,
      this.registry,
    );
    this.sendAppends = new WeightedHistogram(
      "chat_send_append_seconds",
      "Duration of each accepted send's append on this process: the store's membership check and the message made " +
        "durable (embedded: the SQLite group commit; production: the timeline's publish, its linger and the log's " +
        "quorum), failed appends included. SendMessage's time beyond it is the call itself, the rate limit and the fanout.",
      LATENCY_BUCKETS,
      this.registry,
    );
    const recorder = new HubRecorder(deliveryLatency, busLag);
    this.hub = recorder;

    new Counter({
      name: "chat_bus_events_received_total",
      help: "Group events received from the event bus by this process's stream hub: one per event per process, however many local streams it goes to.",
      registers,
      collect() {
        this.reset();
        this.inc(recorder.busEvents);
      },
    });
    new Counter({
      name: "chat_stream_events_delivered_total",
      help:
        "Group events written to client streams on this process, one per stream (an event written to 20 streams counts 20). " +
        "path=live: as it arrived from the bus; path=replay: read back from the store (resume after a reconnect, gap repair, a group joined mid-stream).",
      labelNames: ["path"] as const,
      registers,
      collect() {
        this.reset();
        this.inc({ path: "live" }, recorder.liveDeliveries);
        this.inc({ path: "replay" }, recorder.replayDeliveries);
      },
    });
    const activeStreams = () => this.activeStreams();
    new Gauge({
      name: "chat_streams_active",
      help: "Client streams (StreamService Subscribe and Connect, all protocols) open on this process.",
      registers,
      collect() {
        this.set(activeStreams());
      },
    });
    new Counter({
      name: "chat_stream_buffer_overflows_total",
      help: "Client streams ended with RESOURCE_EXHAUSTED because the client read too slowly and the stream's buffer passed STREAM_BUFFER_BYTES.",
      registers,
      collect() {
        this.reset();
        this.inc(recorder.bufferOverflows);
      },
    });
    new Counter({
      name: "chat_stream_cursor_resets_total",
      help:
        "CursorReset items written to client streams: reason=epoch (the cursor is from another timeline incarnation), " +
        "ahead (past the group's head), expired (the events after it are past retention).",
      labelNames: ["reason"] as const,
      registers,
      collect() {
        this.reset();
        for (const [reason, n] of Object.entries(recorder.cursorResets)) this.inc({ reason }, n);
      },
    });
    const sendsInFlight = () => this.sendsInFlight();
    new Gauge({
      name: "chat_sends_in_flight",
      help:
        "Sends this process is working on (accepted, not yet answered). At SEND_MAX_IN_FLIGHT further sends are refused with " +
        'RESOURCE_EXHAUSTED (counted in chat_sends_total{code="RESOURCE_EXHAUSTED"}).',
      registers,
      collect() {
        this.set(sendsInFlight());
      },
    });
    const sendsShed = () => this.sendsShed();
    new Counter({
      name: "chat_sends_shed_total",
      help:
        "Sends refused because SEND_MAX_IN_FLIGHT sends were in progress on this process (overload, as opposed to a user's " +
        'rate limit; both are also in chat_sends_total{code="RESOURCE_EXHAUSTED"}).',
      registers,
      collect() {
        this.reset();
        this.inc(sendsShed());
      },
    });
    this.sends = new Counter({
      name: "chat_sends_total",
      help:
        "SendMessage results by gRPC status code (OK, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNAUTHENTICATED, ...). " +
        "via=rpc: the unary MessageService/SendMessage RPC; via=stream: send_message items on a StreamService/Connect stream. " +
        "A retry answered with the original message counts as OK. A send answered DEADLINE_EXCEEDED may still have been stored " +
        "after its deadline (a retry with the same client_message_id then returns it as OK).",
      labelNames: ["code", "via"] as const,
      registers,
    });
    this.historyPages = new Counter({
      name: "chat_history_pages_total",
      help:
        "ListMessages pages served, by where they came from: source=cache (the recent-messages cache proved the page complete) " +
        "or store (a cache miss, or the cache was unreachable).",
      labelNames: ["source"] as const,
      registers,
    });
    this.notifier = new PushRecorder(registers);
    const notifyPending = () => this.notifyPending();
    new Gauge({
      name: "chat_notify_groups_pending",
      help:
        "Groups this process's notifier holds events of: an open coalescing window (NOTIFY_WINDOW) or a flush in progress. " +
        "Their events are acknowledged to the feed only when the flush ends, so a notifier that dies gets them again.",
      registers,
      collect() {
        this.set(notifyPending());
      },
    });
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** countStreamsWith sets where chat_streams_active reads the number of open streams (at scrape time). */
  countStreamsWith(count: () => number): void {
    this.activeStreams = count;
  }

  /** countNotifierWith sets where chat_notify_groups_pending reads the notifier's pending groups (at scrape time). */
  countNotifierWith(pending: () => number): void {
    this.notifyPending = pending;
  }

  /** storeCommit records one group commit of the embedded store that took `seconds`. */
  storeCommit(seconds: number): void {
    this.storeCommits.observe(seconds, 1);
  }

  /** sendAppend records one send's append that took `seconds`. */
  sendAppend(seconds: number): void {
    this.sendAppends.observe(seconds, 1);
  }

  /** countSendsWith sets where chat_sends_in_flight and chat_sends_shed_total read their numbers (at scrape time). */
  countSendsWith(counts: { inFlight: () => number; shed: () => number }): void {
    this.sendsInFlight = counts.inFlight;
    this.sendsShed = counts.shed;
  }

  /** sendResult records the outcome of one send: undefined for OK, else the status code the client got. */
  sendResult(via: SendVia, code: Code | undefined): void {
    this.sends.inc({ code: code === undefined ? "OK" : codeToString(code).toUpperCase(), via });
  }

  /** historyPage records where one ListMessages page came from. */
  historyPage(source: "cache" | "store"): void {
    this.historyPages.inc({ source });
  }

  /** contentType is the Content-Type of scrape()'s text. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** scrape renders every metric in the Prometheus text format. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  /**
   * close forgets every metric, so that nothing the registry's collectors
   * reach (the hub, via chat_streams_active) stays referenced by prom-client's
   * process-wide observers (GC, event loop) after the app stopped.
   */
  close(): void {
    this.activeStreams = () => 0;
    this.sendsInFlight = () => 0;
    this.sendsShed = () => 0;
    this.notifyPending = () => 0;
    this.registry.clear();
  }
}

/** HubRecorder adds the hub's reports to plain numbers and weighted histograms: a few additions per call. */
class HubRecorder implements HubMetrics {
  busEvents = 0;
  liveDeliveries = 0;
  replayDeliveries = 0;
  bufferOverflows = 0;
  readonly cursorResets: Record<CursorResetReason, number> = { epoch: 0, ahead: 0, expired: 0 };

  constructor(
    private readonly deliveryLatency: WeightedHistogram,
    private readonly busLag: WeightedHistogram,
  ) {}

  busEvent(lagMs: number): void {
    this.busEvents++;
    this.busLag.observe(lagMs / 1000, 1);
  }

  liveDelivered(streams: number, latencyMs: number): void {
    this.liveDeliveries += streams;
    this.deliveryLatency.observe(latencyMs / 1000, streams);
  }

  replayDelivered(events: number): void {
    this.replayDeliveries += events;
  }

  bufferOverflow(): void {
    this.bufferOverflows++;
  }

  cursorReset(reason: CursorResetReason): void {
    this.cursorResets[reason]++;
  }
}

/** PushRecorder turns the notifier's reports into Prometheus metrics (a few per push: pushes are far rarer than deliveries). */
class PushRecorder implements NotifierObserver {
  private readonly sent: Counter<"provider">;
  private readonly failed: Counter<"provider" | "reason">;
  private readonly retried: Counter<"provider">;
  private readonly removed: Counter<"provider">;
  private readonly latency: Histogram<"provider">;
  private readonly skipped: Counter<"reason">;
  private readonly flushes: Counter<"result">;

  constructor(registers: Registry[]) {
    this.sent = new Counter({
      name: "chat_pushes_sent_total",
      help: "Pushes the push service accepted, by provider (web_push, fcm, apns): one per device.",
      labelNames: ["provider"] as const,
      registers,
    });
    this.failed = new Counter({
      name: "chat_pushes_failed_total",
      help:
        "Pushes that will not reach their device, by provider and reason: rejected (the service refused it for good), gave_up " +
        "(PUSH_MAX_ATTEMPTS or PUSH_RETRY_WINDOW ran out on 429/5xx/network errors), invalid_token (the device is gone; it was " +
        "removed), not_configured (this server has no credentials for the device's provider).",
      labelNames: ["provider", "reason"] as const,
      registers,
    });
    this.retried = new Counter({
      name: "chat_push_retries_total",
      help: "Push attempts that failed with 429, 5xx or a network error and were scheduled again (backoff with jitter, or the service's Retry-After), by provider.",
      labelNames: ["provider"] as const,
      registers,
    });
    this.removed = new Counter({
      name: "chat_push_devices_removed_total",
      help: "Devices removed because their push service said they are gone (Web Push 404/410, FCM UNREGISTERED, APNs 410/BadDeviceToken/Unregistered), by provider.",
      labelNames: ["provider"] as const,
      registers,
    });
    this.latency = new Histogram({
      name: "chat_push_latency_seconds",
      help:
        "Time from the newest message a push tells of (its event `at`) to the push service's acceptance, by provider: the rest of " +
        "the coalescing window (NOTIFY_WINDOW), the store reads, the retries and the send. Clamped at 0 across processes whose clocks differ.",
      labelNames: ["provider"] as const,
      buckets: [...PUSH_LATENCY_BUCKETS],
      registers,
    });
    this.skipped = new Counter({
      name: "chat_push_skipped_total",
      help:
        "Members a window's flush sent no push, by reason: muted (setting none or muted), online (a live stream delivered the " +
        "messages), read (read marker at or past the newest message), replied (wrote the newest message), own (only they wrote), " +
        "no_device (no registered device).",
      labelNames: ["reason"] as const,
      registers,
    });
    this.flushes = new Counter({
      name: "chat_notify_flushes_total",
      help:
        "Coalescing windows the notifier closed and decided, by result: ok, or error (a store read or push claim failed; the " +
        "window's events are handed out again).",
      labelNames: ["result"] as const,
      registers,
    });
  }

  pushSent(kind: PushKind, latencyMs: number): void {
    this.sent.inc({ provider: kind });
    this.latency.observe({ provider: kind }, Math.max(0, latencyMs) / 1000);
  }

  pushRetried(kind: PushKind): void {
    this.retried.inc({ provider: kind });
  }

  pushFailed(kind: PushKind, reason: PushFailReason): void {
    this.failed.inc({ provider: kind, reason });
  }

  deviceRemoved(kind: PushKind): void {
    this.removed.inc({ provider: kind });
  }

  memberSkipped(reason: SkipReason, members: number): void {
    this.skipped.inc({ reason }, members);
  }

  flushed(result: "ok" | "error"): void {
    this.flushes.inc({ result });
  }
}

/**
 * WeightedHistogram is a Prometheus histogram without labels that records
 * `n` observations of one value in one step (prom-client's Histogram
 * records one per call, each hashing its labels): the hub writes one event
 * to many streams at one instant. Negative values count as 0. It renders
 * like prom-client's Histogram (`_bucket` with `le`, `_sum`, `_count`), and
 * implements the part of prom-client's metric interface that a Registry
 * uses (get, reset; registered under its name).
 */
export class WeightedHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  /** counts[i] is the number of observations in bucket i alone; the last is above every bound (+Inf). */
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    this.counts = new Float64Array(bounds.length + 1);
    // A Registry needs only name, get() and reset() of a metric; its type names the four built-in classes.
    registry.registerMetric(this as unknown as Metric);
  }

  /** observe records `n` observations of `value` (seconds). */
  observe(value: number, n: number): void {
    const v = value > 0 ? value : 0;
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && v > (bounds[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + n;
    this.sum += v * n;
    this.count += n;
  }

  async get() {
    const values: { value: number; labels: Record<string, string | number>; metricName: string }[] = [];
    let cumulative = 0;
    this.bounds.forEach((le, i) => {
      cumulative += this.counts[i] as number;
      values.push({ metricName: `${this.name}_bucket`, labels: { le }, value: cumulative });
    });
    values.push({ metricName: `${this.name}_bucket`, labels: { le: "+Inf" }, value: this.count });
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.sum });
    values.push({ metricName: `${this.name}_count`, labels: {}, value: this.count });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

/** isMetricsRequest tells whether a request is for {@link METRICS_PATH} (a query string is ignored). */
export function isMetricsRequest(url: string | undefined): boolean {
  return url === METRICS_PATH || (url !== undefined && url.startsWith(`${METRICS_PATH}?`));
}

/**
 * serveMetrics answers a request for {@link METRICS_PATH}: GET gets every
 * metric in the registry's format (text/plain; version=0.0.4), anything else
 * 405. No authentication: the port is internal, and the edge (Envoy) does not
 * route this path (docs/production.md).
 */
export function serveMetrics(
  metrics: AppMetrics,
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
  onError: (err: unknown) => void,
): void {
  if (req.method !== "GET") {
    res.writeHead(405, { allow: "GET", "content-type": "text/plain" });
    res.end("method not allowed\n");
    return;
  }
  metrics.scrape().then(
    (body) => {
      if (res.destroyed) return;
      res.writeHead(200, { "content-type": metrics.contentType, "cache-control": "no-store" });
      res.end(body);
    },
    (err: unknown) => {
      onError(err);
      if (res.destroyed) return;
      res.writeHead(500, { "content-type": "text/plain" });
      res.end("could not collect the metrics\n");
    },
  );
}
