import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { Registry } from "prom-client";
import { type HubFixture, RecordingSink, createHubFixture } from "../../test/support/hub-fixture.js";
import { newId } from "../core/ids.js";
import { systemClock } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import { StreamHub } from "../delivery/stream-hub.js";
import { AppMetrics, WeightedHistogram, isMetricsRequest } from "./metrics.js";

/** lines returns the scrape's sample lines that start with `prefix`. */
async function lines(metrics: AppMetrics | Registry, prefix: string): Promise<string[]> {
  const text = metrics instanceof Registry ? await metrics.metrics() : await metrics.scrape();
  return text.split("\n").filter((l) => l.startsWith(prefix));
}

describe("WeightedHistogram", () => {
  it("records n observations of one value at once and renders like a Prometheus histogram", async () => {
    const registry = new Registry();
    const h = new WeightedHistogram("t_latency_seconds", "test", [0.001, 0.01, 0.1], registry);
    h.observe(0.005, 20); // one event written to 20 streams
    h.observe(0.001, 1); // on a bound: counted in that bucket (le)
    h.observe(-0.002, 1); // clock skew: counted as 0
    h.observe(5, 2); // above every bound: +Inf only
    assert.deepEqual(await lines(registry, "t_latency_seconds"), [
      't_latency_seconds_bucket{le="0.001"} 2',
      't_latency_seconds_bucket{le="0.01"} 22',
      't_latency_seconds_bucket{le="0.1"} 22',
      't_latency_seconds_bucket{le="+Inf"} 24',
      `t_latency_seconds_sum ${0.005 * 20 + 0.001 + 10}`,
      "t_latency_seconds_count 24",
    ]);
    assert.match(await registry.metrics(), /^# TYPE t_latency_seconds histogram$/m);
    registry.resetMetrics();
    assert.ok((await lines(registry, "t_latency_seconds_count")).includes("t_latency_seconds_count 0"));
  });
});

describe("AppMetrics", () => {
  let fixture: HubFixture;
  before(() => {
    fixture = createHubFixture();
  });
  after(() => fixture.close());

  it("names send results by gRPC code and where they came from", async () => {
    const metrics = new AppMetrics({ defaultMetrics: false });
    metrics.sendResult("rpc", undefined);
    metrics.sendResult("rpc", undefined);
    metrics.sendResult("rpc", Code.ResourceExhausted);
    metrics.sendResult("stream", Code.InvalidArgument);
    assert.deepEqual((await lines(metrics, "chat_sends_total")).sort(), [
      'chat_sends_total{code="INVALID_ARGUMENT",via="stream"} 1',
      'chat_sends_total{code="OK",via="rpc"} 2',
      'chat_sends_total{code="RESOURCE_EXHAUSTED",via="rpc"} 1',
    ]);
  });

  it("keeps each app's metrics in its own registry, default process metrics included", async () => {
    const a = new AppMetrics();
    const b = new AppMetrics();
    a.sendResult("rpc", undefined);
    assert.deepEqual(await lines(a, "chat_sends_total"), ['chat_sends_total{code="OK",via="rpc"} 1']);
    assert.deepEqual(await lines(b, "chat_sends_total"), []);
    assert.ok((await lines(b, "process_cpu_user_seconds_total")).length === 1);
    a.close();
    assert.equal(await a.scrape(), "\n");
    b.close();
  });

  it("counts what the hub reports: streams, bus events, live deliveries, buffer overflows and cursor resets", async () => {
    const { store, bus } = fixture;
    const metrics = new AppMetrics({ defaultMetrics: false });
    const hub = new StreamHub({
      store,
      bus,
      clock: systemClock,
      metrics: metrics.hub,
      settings: { heartbeatMs: 60_000, bufferMaxBytes: 1 << 20, catchUpBatch: 100 },
    });
    metrics.countStreamsWith(() => hub.size);
    try {
      const owner = { id: newId(), username: "metrics" };
      const { groupId } = await store.createGroup({ id: newId(), name: "g", epoch: newId(), createdAt: Date.now(), owner });
      const principal = (): Principal => ({ userId: owner.id, username: owner.username, sessionId: newId(), expiresAt: Date.now() + 3_600_000 });
      const fast = new RecordingSink();
      const slow = new RecordingSink();
      const stale = new RecordingSink();
      await hub.open(principal(), new Map(), fast);
      await hub.open(principal(), new Map(), slow);
      await hub.open(principal(), new Map([[groupId, { seq: 1, epoch: "another-epoch" }]]), stale);
      assert.deepEqual(await lines(metrics, "chat_streams_active"), ["chat_streams_active 3"]);
      // The stale cursor got a CursorReset and a replay of the retained history (seq 1); wait for it to go live.
      for (let i = 0; i < 250 && !stale.items.some((x) => x.message.payload.case === "event"); i++) await new Promise((r) => setTimeout(r, 10));

      slow.bufferedBytes = 2 << 20; // the client stopped reading
      const { event } = await store.appendMessage({ id: newId(), groupId, sender: owner, text: "t", clientMessageId: "c", sentAt: Date.now() });
      await bus.publishEvent(event);
      assert.equal(slow.ended?.error?.kind, "ResourceExhausted");
      assert.deepEqual(await lines(metrics, "chat_streams_active"), ["chat_streams_active 2"]);
      assert.deepEqual(await lines(metrics, "chat_bus_events_received_total"), ["chat_bus_events_received_total 1"]);
      assert.deepEqual(await lines(metrics, "chat_bus_lag_seconds_count"), ["chat_bus_lag_seconds_count 1"]);
      // Written to all three streams (the slow one before it was found over its cap); seq 1 was replayed.
      assert.deepEqual(await lines(metrics, "chat_stream_events_delivered_total"), [
        'chat_stream_events_delivered_total{path="live"} 3',
        'chat_stream_events_delivered_total{path="replay"} 1',
      ]);
      assert.deepEqual(await lines(metrics, "chat_delivery_latency_seconds_count"), ["chat_delivery_latency_seconds_count 3"]);
      assert.deepEqual(await lines(metrics, "chat_stream_buffer_overflows_total"), ["chat_stream_buffer_overflows_total 1"]);
      assert.deepEqual(await lines(metrics, 'chat_stream_cursor_resets_total{reason="epoch"}'), ['chat_stream_cursor_resets_total{reason="epoch"} 1']);
    } finally {
      hub.shutdown();
      metrics.close();
    }
  });

  it("counts the notifier's pushes per provider: sent with their latency, retried, failed by reason, devices removed, skips, flushes", async () => {
    const metrics = new AppMetrics({ defaultMetrics: false });
    const n = metrics.notifier;
    n.pushSent("web_push", 2_300);
    n.pushSent("web_push", -5); // clock skew: counted as 0
    n.pushSent("apns", 120);
    n.pushRetried("fcm");
    n.pushRetried("fcm");
    n.pushFailed("fcm", "gave_up");
    n.pushFailed("web_push", "invalid_token");
    n.deviceRemoved("web_push");
    n.pushFailed("apns", "not_configured");
    n.memberSkipped("online", 3);
    n.memberSkipped("muted", 1);
    n.flushed("ok");
    n.flushed("error");
    assert.deepEqual((await lines(metrics, "chat_pushes_sent_total")).sort(), [
      'chat_pushes_sent_total{provider="apns"} 1',
      'chat_pushes_sent_total{provider="web_push"} 2',
    ]);
    assert.deepEqual(await lines(metrics, "chat_push_retries_total"), ['chat_push_retries_total{provider="fcm"} 2']);
    assert.deepEqual((await lines(metrics, "chat_pushes_failed_total")).sort(), [
      'chat_pushes_failed_total{provider="apns",reason="not_configured"} 1',
      'chat_pushes_failed_total{provider="fcm",reason="gave_up"} 1',
      'chat_pushes_failed_total{provider="web_push",reason="invalid_token"} 1',
    ]);
    assert.deepEqual(await lines(metrics, "chat_push_devices_removed_total"), ['chat_push_devices_removed_total{provider="web_push"} 1']);
    assert.deepEqual((await lines(metrics, "chat_push_latency_seconds_count")).sort(), [
      'chat_push_latency_seconds_count{provider="apns"} 1',
      'chat_push_latency_seconds_count{provider="web_push"} 2',
    ]);
    assert.deepEqual(await lines(metrics, 'chat_push_latency_seconds_sum{provider="web_push"}'), ['chat_push_latency_seconds_sum{provider="web_push"} 2.3']);
    assert.ok((await lines(metrics, 'chat_push_latency_seconds_bucket{le="2.5",provider="web_push"}')).includes('chat_push_latency_seconds_bucket{le="2.5",provider="web_push"} 2'));
    assert.deepEqual((await lines(metrics, "chat_push_skipped_total")).sort(), ['chat_push_skipped_total{reason="muted"} 1', 'chat_push_skipped_total{reason="online"} 3']);
    assert.deepEqual((await lines(metrics, "chat_notify_flushes_total")).sort(), [
      'chat_notify_flushes_total{result="error"} 1',
      'chat_notify_flushes_total{result="ok"} 1',
    ]);
    metrics.close();
  });

  it("serves /metrics with or without a query string, nothing else", () => {
    assert.ok(isMetricsRequest("/metrics"));
    assert.ok(isMetricsRequest("/metrics?name[]=x"));
    assert.ok(!isMetricsRequest("/metricsx"));
    assert.ok(!isMetricsRequest("/metrics/"));
    assert.ok(!isMetricsRequest(undefined));
  });
});
