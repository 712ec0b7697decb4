/**
 * Prometheus metrics at GET /metrics: scraped over real HTTP from a running
 * server while real clients send and stream. Counts only, no timings.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type ConnectRequest, type ConnectResponse, StreamService } from "../../gen/chat/v1/stream_service_pb.js";
import { rejectsWith } from "../support/assertions.js";
import { type Scrape, parse, scrape } from "../support/metrics-scrape.js";
import { StreamReader, subscribe } from "../support/stream-reader.js";
import { type Clients, type TestServer, bearer, clientsFor, registerUser, startTestServer } from "../support/test-server.js";

/** waitForMetric polls /metrics until `pred` holds (bounded: about 5 s). */
async function waitForMetric(server: TestServer, pred: (s: Scrape) => boolean, what: string): Promise<Scrape> {
  for (let i = 0; i < 250; i++) {
    const s = await scrape(server);
    if (pred(s)) return s;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** BidiStream is a StreamService/Connect call (gRPC over HTTP/2: the fast path) that a test pushes requests into. */
class BidiStream {
  readonly responses: ConnectResponse[] = [];
  private readonly outbox: ConnectRequest[] = [];
  private wake: (() => void) | undefined;
  private readonly abort = new AbortController();

  constructor(baseUrl: string, c: Clients) {
    const streams = createClient(StreamService, createGrpcTransport({ baseUrl, interceptors: [bearer(() => c.token)] }));
    const outbox = this.outbox;
    const self = this;
    async function* requests(): AsyncGenerator<ConnectRequest> {
      for (;;) {
        const next = outbox.shift();
        if (next) yield next;
        else await new Promise<void>((r) => (self.wake = r));
      }
    }
    this.push({ $typeName: "chat.v1.ConnectRequest", requestId: "sub", payload: { case: "subscribe", value: { $typeName: "chat.v1.SubscribeRequest", cursors: [] } } });
    void (async () => {
      for await (const r of streams.connect(requests(), { signal: this.abort.signal })) this.responses.push(r);
    })().catch(() => {});
  }

  push(r: ConnectRequest): void {
    this.outbox.push(r);
    this.wake?.();
  }

  send(requestId: string, groupId: string, text: string): void {
    this.push({
      $typeName: "chat.v1.ConnectRequest",
      requestId,
      payload: { case: "sendMessage", value: { $typeName: "chat.v1.SendMessageRequest", groupId, text, clientMessageId: requestId } },
    });
  }

  count(pred: (r: ConnectResponse) => boolean): number {
    return this.responses.filter(pred).length;
  }

  async waitFor(pred: () => boolean, what: string): Promise<void> {
    for (let i = 0; i < 250 && !pred(); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(pred(), `timed out waiting for ${what}`);
  }

  close(): void {
    this.abort.abort();
  }
}

const isReady = (r: ConnectResponse) => r.payload.case === "item" && r.payload.value.payload.case === "ready";
const isEvent = (r: ConnectResponse) => r.payload.case === "item" && r.payload.value.payload.case === "event";
const isSendResult = (r: ConnectResponse) => r.payload.case === "sendResult";

describe("metrics", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it("serves Prometheus text at GET /metrics over HTTP/1.1 and HTTP/2, with process metrics, and refuses other methods", async () => {
    const res = await fetch(`${server.baseUrl}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const name of [
      "chat_delivery_latency_seconds",
      "chat_bus_lag_seconds",
      "chat_bus_events_received_total",
      "chat_stream_events_delivered_total",
      "chat_streams_active",
      "chat_stream_buffer_overflows_total",
      "chat_stream_cursor_resets_total",
      "chat_sends_total",
      "chat_sends_in_flight",
      "chat_sends_shed_total",
      "process_cpu_user_seconds_total",
      "nodejs_eventloop_lag_seconds",
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, "m"), `${name} is exposed`);
    }
    const s = parse(text);
    assert.equal(s.get("chat_delivery_latency_seconds_bucket", { le: "+Inf" }), s.get("chat_delivery_latency_seconds_count"));

    // HTTP/2 (h2c with prior knowledge), as a scraper configured for it would ask.
    const session = http2.connect(server.baseUrl);
    try {
      const { status, type, body } = await new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
        const req = session.request({ ":method": "GET", ":path": "/metrics" });
        let status = 0;
        let type = "";
        let body = "";
        req.on("response", (h) => {
          status = Number(h[":status"]);
          type = String(h["content-type"]);
        });
        req.setEncoding("utf8");
        req.on("data", (d: string) => (body += d));
        req.on("end", () => resolve({ status, type, body }));
        req.on("error", reject);
        req.end();
      });
      assert.equal(status, 200);
      assert.match(type, /^text\/plain; version=0\.0\.4/);
      assert.match(body, /^chat_streams_active \d+$/m);
    } finally {
      session.close();
    }

    const post = await fetch(`${server.baseUrl}/metrics`, { method: "POST", body: "x" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET");
  });

  it("counts sends by code, open streams, live deliveries per stream with their latency, replays and cursor resets", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "met");
    const bob = await registerUser(server.baseUrl, "connect", "met");
    const { group } = await alice.groups.createGroup({ name: "metrics", memberUsernames: [bob.username] });
    assert.ok(group);
    const gid = group.groupId;
    const aliceWeb = clientsFor(server.baseUrl, "grpc-web");
    aliceWeb.token = alice.token;
    const before = await scrape(server);
    assert.equal(before.get("chat_streams_active"), 0);

    // Four streams over four code paths: gRPC and gRPC-Web Subscribe (fast path), Connect-JSON Subscribe
    // (connect-node), and a bidirectional Connect stream over gRPC (fast path) that also carries sends.
    const readers: StreamReader[] = [subscribe(alice), subscribe(aliceWeb), subscribe(bob)];
    const bidi = new BidiStream(server.baseUrl, bob);
    await Promise.all(readers.map((r) => r.waitReady()));
    await bidi.waitFor(() => bidi.count(isReady) === 1, "ready on the bidirectional stream");
    assert.equal((await scrape(server)).get("chat_streams_active"), 4);

    const sent = await alice.messages.sendMessage({ groupId: gid, text: "hello", clientMessageId: "m1" });
    await rejectsWith(bob.messages.sendMessage({ groupId: gid, text: "", clientMessageId: "m2" }), Code.InvalidArgument);
    await rejectsWith(clientsFor(server.baseUrl).messages.sendMessage({ groupId: gid, text: "hi", clientMessageId: "m3" }), Code.Unauthenticated);
    bidi.send("s1", gid, "over the stream");
    bidi.send("s2", gid, "   ");
    await bidi.waitFor(() => bidi.count(isSendResult) === 2, "two send results");
    await Promise.all(readers.map((r) => r.waitForEvents(gid, 2)));
    await bidi.waitFor(() => bidi.count(isEvent) === 2, "two events on the bidirectional stream");

    const during = await scrape(server);
    const delta = (name: string, labels: Record<string, string> = {}) => during.get(name, labels) - before.get(name, labels);
    assert.equal(delta("chat_sends_total", { code: "OK", via: "rpc" }), 1);
    assert.equal(delta("chat_sends_total", { code: "INVALID_ARGUMENT", via: "rpc" }), 1);
    assert.equal(delta("chat_sends_total", { code: "UNAUTHENTICATED", via: "rpc" }), 1);
    assert.equal(delta("chat_sends_total", { code: "OK", via: "stream" }), 1);
    assert.equal(delta("chat_sends_total", { code: "INVALID_ARGUMENT", via: "stream" }), 1);
    // The two stored messages went through one or two group commits of the embedded store; refused sends never did.
    const commits = delta("chat_store_commit_seconds_count");
    assert.ok(commits >= 1 && commits <= 2, `store commits: ${commits}`);
    assert.ok(delta("chat_store_commit_seconds_sum") > 0);
    // One append timed per accepted send (the refused ones never reached the store).
    assert.equal(delta("chat_send_append_seconds_count"), 2);
    assert.equal(delta("chat_send_append_seconds_bucket", { le: "+Inf" }), 2);
    assert.ok(delta("chat_send_append_seconds_sum") > 0);
    // Two events, each received once from the bus and written to all four streams.
    assert.equal(delta("chat_bus_events_received_total"), 2);
    assert.equal(delta("chat_bus_lag_seconds_count"), 2);
    assert.equal(delta("chat_stream_events_delivered_total", { path: "live" }), 8);
    assert.equal(delta("chat_stream_events_delivered_total", { path: "replay" }), 0);
    assert.equal(delta("chat_delivery_latency_seconds_count"), 8);
    assert.equal(delta("chat_delivery_latency_seconds_bucket", { le: "+Inf" }), 8);
    assert.ok(delta("chat_delivery_latency_seconds_sum") >= 0);
    let previous = 0;
    for (const le of ["0.0005", "0.001", "0.01", "0.1", "1", "2.5", "+Inf"]) {
      const v = during.get("chat_delivery_latency_seconds_bucket", { le });
      assert.ok(v >= previous, "buckets are cumulative");
      previous = v;
    }
    assert.equal(during.get("chat_streams_active"), 4);

    for (const r of readers) r.close();
    bidi.close();
    await waitForMetric(server, (s) => s.get("chat_streams_active") === 0, "every stream to close");

    // Missed while offline, then replayed from the cursor: counted as replay, not as live latency.
    await alice.messages.sendMessage({ groupId: gid, text: "missed 1", clientMessageId: "m4" });
    await alice.messages.sendMessage({ groupId: gid, text: "missed 2", clientMessageId: "m5" });
    const offline = await scrape(server);
    const resumed = subscribe(alice, [{ groupId: gid, seq: sent.message?.seq ?? 0n }]);
    // A cursor past the head cannot be honoured: the stream says so with a CursorReset.
    const ahead = subscribe(bob, [{ groupId: gid, seq: 1000n }]);
    await resumed.waitForEvents(gid, 3);
    await ahead.waitFor((r) => r.items.some((i) => i.payload.case === "cursorReset"), 5000, "a cursor reset");
    const replayed = await scrape(server);
    const since = (name: string, labels: Record<string, string> = {}) => replayed.get(name, labels) - offline.get(name, labels);
    assert.equal(since("chat_stream_events_delivered_total", { path: "replay" }), 3);
    assert.equal(since("chat_stream_events_delivered_total", { path: "live" }), 0);
    assert.equal(since("chat_delivery_latency_seconds_count"), 0);
    assert.equal(since("chat_stream_cursor_resets_total", { reason: "ahead" }), 1);
    assert.equal(replayed.get("chat_streams_active"), 2);
    resumed.close();
    ahead.close();
    await waitForMetric(server, (s) => s.get("chat_streams_active") === 0, "the resumed streams to close");
  });
});
