/**
 * Connect over WebSocket (services/wire/ws-connect.ts, docs/websocket.md):
 * one socket carries the stream's items and the client's sends and acks,
 * with the semantics of Connect over gRPC (the same ConnectStream): sends
 * answered in order with their request_id, durable and idempotent on
 * client_message_id (DESIGN invariant 2), delivered once at their seq to
 * every member's stream (invariant 3), refused for non-members (invariant
 * 4), replies counted against the stream's buffer cap (invariant 5),
 * per-request errors that leave the stream open, and the endings of
 * Subscribe over WebSocket (close 4000 + gRPC status).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type MessageInitShape, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import WebSocket from "ws";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  ConnectResponseSchema,
  type SendResult,
  type StreamError,
  StreamService,
  type SubscribeResponse,
} from "../../gen/chat/v1/stream_service_pb.js";
import { freePort, range } from "../support/helpers.js";
import { seqs, wsSubscribe } from "../support/stream-reader.js";
import { type TestServer, bearer, registerUser, startTestServer } from "../support/test-server.js";

const CONNECT_PATH = "/chat.v1.StreamService/Connect";

/** WsConnect is a client of Connect over WebSocket as the contract describes it: binary ConnectRequests out, ConnectResponses in. */
class WsConnect {
  readonly ws: WebSocket;
  /** items are the stream items (ConnectResponse.item), in order. */
  readonly items: SubscribeResponse[] = [];
  /** replies are the answers to requests (send_result, ack_error), in order. */
  readonly replies: ConnectResponse[] = [];
  opened = false;
  closed: { code: number; reason: string } | undefined;
  private waiters: (() => void)[] = [];
  /** unsent are the messages written before the socket opened, sent (in order) once it is. */
  private readonly unsent: (Buffer | string)[] = [];

  constructor(port: number, token: string | undefined, opts: { via?: "header" | "protocol" } = {}) {
    const protocols = ["chat.v1.proto", ...(token && opts.via === "protocol" ? [`bearer.${token}`] : [])];
    const headers: Record<string, string> = token && opts.via !== "protocol" ? { authorization: `Bearer ${token}` } : {};
    this.ws = new WebSocket(`ws://127.0.0.1:${port}${CONNECT_PATH}`, protocols, { headers, perMessageDeflate: false });
    this.ws.on("open", () => {
      this.opened = true;
      for (const m of this.unsent.splice(0)) this.ws.send(m);
      this.wake();
    });
    this.ws.on("message", (data) => {
      const r = fromBinary(ConnectResponseSchema, data as Buffer);
      if (r.payload.case === "item") this.items.push(r.payload.value);
      else this.replies.push(r);
      this.wake();
    });
    this.ws.on("error", () => {});
    this.ws.on("close", (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
  }

  /** request sends one ConnectRequest. */
  request(init: MessageInitShape<typeof ConnectRequestSchema>): void {
    this.raw(Buffer.from(toBinary(ConnectRequestSchema, create(ConnectRequestSchema, init))));
  }

  /** raw sends one message as is (binary for a Buffer, text for a string), once the socket is open. */
  raw(message: Buffer | string): void {
    if (this.opened) this.ws.send(message);
    else this.unsent.push(message);
  }

  subscribe(cursors: { groupId: string; seq: bigint }[] = []): void {
    this.request({ requestId: "subscribe", payload: { case: "subscribe", value: { cursors } } });
  }

  send(requestId: string, groupId: string, text: string, clientMessageId = requestId): void {
    this.request({ requestId, payload: { case: "sendMessage", value: { groupId, text, clientMessageId } } });
  }

  ack(requestId: string, groupId: string, seq: number): void {
    this.request({ requestId, payload: { case: "ack", value: { groupId, seq: BigInt(seq) } } });
  }

  /** reply is the answer to `requestId`, if it came. */
  reply(requestId: string): ConnectResponse | undefined {
    return this.replies.find((r) => r.requestId === requestId);
  }

  /** result is the send_result of `requestId` (throws if the answer is anything else). */
  result(requestId: string): SendResult["outcome"] {
    const r = this.reply(requestId);
    assert.equal(r?.payload.case, "sendResult", `${requestId}: ${r?.payload.case}`);
    return (r?.payload.value as SendResult).outcome;
  }

  eventsOf(groupId: string) {
    return this.items.flatMap((i) => (i.payload.case === "event" && i.payload.value.groupId === groupId ? [i.payload.value] : []));
  }

  async waitFor(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (this.closed && !pred()) throw new Error(`closed ${this.closed.code} "${this.closed.reason}" before ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what} (items ${this.items.length}, replies ${this.replies.length})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  waitReady(): Promise<void> {
    return this.waitFor(() => this.items.some((i) => i.payload.case === "ready"), "ready");
  }

  waitReplies(n: number): Promise<void> {
    return this.waitFor(() => this.replies.length >= n, `${n} replies`);
  }

  /** waitClosed resolves with the close code and reason. */
  async waitClosed(ms = 10_000): Promise<{ code: number; reason: string }> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("timed out waiting for the close");
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.closed;
  }

  close(): void {
    this.ws.close(1000);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/** grpcConnectReplies runs Connect over gRPC (the fast path) with `requests` after `subscribe` and returns the replies to them. */
async function grpcConnectReplies(baseUrl: string, token: string | undefined, requests: MessageInitShape<typeof ConnectRequestSchema>[]): Promise<ConnectResponse[]> {
  const client = createClient(StreamService, createGrpcTransport({ baseUrl, interceptors: [bearer(() => token)] }));
  let release = () => {};
  const held = new Promise<void>((r) => (release = r));
  async function* input(): AsyncGenerator<ConnectRequest> {
    yield create(ConnectRequestSchema, { requestId: "subscribe", payload: { case: "subscribe", value: {} } });
    for (const r of requests) yield create(ConnectRequestSchema, r);
    await held;
  }
  const replies: ConnectResponse[] = [];
  try {
    for await (const r of client.connect(input())) {
      if (r.payload.case !== "item") replies.push(r);
      if (replies.length === requests.length) break;
    }
  } finally {
    release();
  }
  return replies;
}

/** errorOf is a send_result's or ack_error's StreamError. */
function errorOf(r: ConnectResponse | undefined): StreamError | undefined {
  if (r?.payload.case === "ackError") return r.payload.value;
  if (r?.payload.case === "sendResult" && r.payload.value.outcome.case === "error") return r.payload.value.outcome.value;
  return undefined;
}

describe("Connect over WebSocket", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it("answers pipelined sends in order with their request_id and seq; members' streams get exactly those messages; retries store nothing", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "wca");
    const bob = await registerUser(server.baseUrl, "grpc", "wcb");
    const { group } = await alice.groups.createGroup({ name: "ws-connect", memberUsernames: [bob.username] });
    assert.ok(group && bob.token);
    const gid = group.groupId;
    const head = Number(group.headSeq);
    const bobStream = wsSubscribe(server.port, bob.token);
    // The opening message may be larger than MAX_REQUEST_BYTES (64 KiB here): 2,000 cursors, as a client in many groups sends.
    const cursors = Array.from({ length: 2000 }, () => ({ groupId: gid, seq: BigInt(head) }));
    const conn = new WsConnect(server.port, alice.token, { via: "protocol" });
    conn.subscribe(cursors);
    await Promise.all([conn.waitReady(), bobStream.waitReady()]);
    assert.equal(conn.ws.protocol, "chat.v1.proto");

    const n = 40;
    const ids = range(1, n).map((i) => `r${i}`);
    for (const id of ids) conn.send(id, gid, `text of ${id}`, `client-${id}`); // all at once, none awaited
    await conn.waitReplies(n);
    assert.deepEqual(
      conn.replies.map((r) => r.requestId),
      ids,
      "answered in order, each with its request_id",
    );
    const stored = ids.map((id) => {
      const outcome = conn.result(id);
      assert.equal(outcome.case, "response", `${id}: ${JSON.stringify(errorOf(conn.reply(id)))}`);
      const message = outcome.case === "response" ? outcome.value.message : undefined;
      assert.ok(message && outcome.case === "response");
      assert.equal(outcome.value.duplicate, false);
      assert.equal(message.text, `text of ${id}`);
      assert.equal(message.clientMessageId, `client-${id}`);
      return message;
    });
    assert.deepEqual(
      stored.map((m) => Number(m.seq)),
      range(head + 1, head + n),
      "dense seqs in request order",
    );

    // Both streams (bob's Subscribe, alice's own Connect) carry exactly those messages at those seqs.
    await Promise.all([bobStream.waitForEvents(gid, n, 10_000), conn.waitFor(() => conn.eventsOf(gid).length >= n, `${n} events`)]);
    for (const events of [bobStream.eventsOf(gid), conn.eventsOf(gid)]) {
      assert.deepEqual(seqs(events), range(head + 1, head + n));
      for (const [i, e] of events.entries()) {
        assert.equal(e.kind.case, "message");
        const m = e.kind.case === "message" ? e.kind.value : undefined;
        assert.equal(m?.messageId, stored[i]?.messageId, `seq ${e.seq}: the message stored there`);
        assert.equal(m?.text, stored[i]?.text);
      }
    }

    // A retry with the same client_message_id returns the original message; the next send takes the next seq.
    conn.send("retry", gid, "text of r7", "client-r7");
    conn.send("after", gid, "after the retry", "client-after");
    await conn.waitReplies(n + 2);
    const retry = conn.result("retry");
    assert.ok(retry.case === "response" && retry.value.duplicate, "a duplicate");
    assert.equal(retry.value.message?.messageId, stored[6]?.messageId);
    assert.equal(Number(retry.value.message?.seq), head + 7);
    const next = conn.result("after");
    assert.ok(next.case === "response");
    assert.equal(Number(next.value.message?.seq), head + n + 1, "nothing was stored for the retry");
    await bobStream.waitForEvents(gid, n + 1, 10_000);
    assert.deepEqual(seqs(bobStream.eventsOf(gid)), range(head + 1, head + n + 1));
    const last = bobStream.eventsOf(gid).at(-1)?.kind;
    assert.ok(last?.case === "message" && last.value.messageId === next.value.message?.messageId, "the new message, at the next seq");
    assert.equal(conn.closed, undefined, "the stream is still open");
    conn.close();
    bobStream.close();
    const end = await conn.waitClosed();
    assert.equal(end.code, 1000, "a client's own close is a clean end");
  });

  it("two members pipelining at once: a third member's stream gets, at each seq, the message whose answer carried that seq", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "wra");
    const bob = await registerUser(server.baseUrl, "grpc", "wrb");
    const carol = await registerUser(server.baseUrl, "grpc", "wrc");
    const { group } = await alice.groups.createGroup({ name: "ws-race", memberUsernames: [bob.username, carol.username] });
    assert.ok(group && carol.token);
    const gid = group.groupId;
    const head = Number(group.headSeq);
    const watcher = wsSubscribe(server.port, carol.token);
    const senders = [new WsConnect(server.port, alice.token), new WsConnect(server.port, bob.token)];
    for (const c of senders) c.subscribe();
    await Promise.all([watcher.waitReady(), ...senders.map((c) => c.waitReady())]);
    const n = 30;
    for (let i = 1; i <= n; i++) for (const [k, c] of senders.entries()) c.send(`s${k}-${i}`, gid, `sender ${k} message ${i}`);
    await Promise.all(senders.map((c) => c.waitReplies(n)));
    const bySeq = new Map<number, { messageId: string; text: string }>();
    for (const c of senders) {
      for (const r of c.replies) {
        const o = (r.payload.value as SendResult).outcome;
        assert.equal(o.case, "response", r.requestId);
        const m = o.case === "response" ? o.value.message : undefined;
        assert.ok(m);
        assert.ok(!bySeq.has(Number(m.seq)), `seq ${m.seq} answered once`);
        bySeq.set(Number(m.seq), { messageId: m.messageId, text: m.text });
      }
    }
    assert.deepEqual(
      [...bySeq.keys()].sort((a, b) => a - b),
      range(head + 1, head + 2 * n),
      "dense seqs",
    );
    await watcher.waitForEvents(gid, 2 * n, 10_000);
    assert.deepEqual(seqs(watcher.eventsOf(gid)), range(head + 1, head + 2 * n));
    for (const e of watcher.eventsOf(gid)) {
      const m = e.kind.case === "message" ? e.kind.value : undefined;
      assert.deepEqual({ messageId: m?.messageId, text: m?.text }, bySeq.get(Number(e.seq)), `seq ${e.seq}`);
    }
    for (const c of senders) c.close();
    watcher.close();
  });

  it("records acks (no answer) and answers a bad ack with ack_error, as gRPC Connect does; the stream goes on", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "wack");
    const { group } = await alice.groups.createGroup({ name: "ws-ack" });
    assert.ok(group);
    const gid = group.groupId;
    const conn = new WsConnect(server.port, alice.token);
    conn.subscribe();
    await conn.waitReady();
    for (const id of ["m1", "m2", "m3"]) conn.send(id, gid, id);
    await conn.waitReplies(3);
    const top = Number((conn.result("m3") as { value: { message: { seq: bigint } } }).value.message.seq);
    conn.ack("good", gid, top - 1);
    conn.ack("bad", gid, 1_000_000);
    conn.ack("nogroup", "", 1);
    // Answers come in request order: once "bad" and "nogroup" are answered, "good" was served, and got no answer.
    await conn.waitReplies(5);
    assert.deepEqual(
      conn.replies.slice(3).map((r) => [r.requestId, r.payload.case]),
      [
        ["bad", "ackError"],
        ["nogroup", "ackError"],
      ],
      "a good ack gets no answer",
    );
    const { groups } = await alice.groups.listGroups({});
    assert.equal(Number(groups.find((g) => g.groupId === gid)?.ackedSeq), top - 1, "the ack was recorded");
    const grpc = await grpcConnectReplies(server.baseUrl, alice.token, [
      { requestId: "bad", payload: { case: "ack", value: { groupId: gid, seq: 1_000_000n } } },
      { requestId: "nogroup", payload: { case: "ack", value: { groupId: "", seq: 1n } } },
    ]);
    for (const [i, id] of ["bad", "nogroup"].entries()) {
      const ws = errorOf(conn.reply(id));
      assert.equal(ws?.code, "invalid_argument", `${id}: ${ws?.message}`);
      assert.deepEqual([ws?.code, ws?.message], [errorOf(grpc[i])?.code, errorOf(grpc[i])?.message], `${id}: as over gRPC`);
    }
    assert.match(errorOf(conn.reply("bad"))?.message ?? "", /beyond the group's newest event/);
    assert.equal(conn.closed, undefined);
    conn.close();
  });

  it("refuses a non-member's send with the error gRPC Connect gives; the stream goes on", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "wnma");
    const carol = await registerUser(server.baseUrl, "grpc", "wnmc");
    const { group } = await alice.groups.createGroup({ name: "ws-private" });
    const { group: own } = await carol.groups.createGroup({ name: "ws-carol" });
    assert.ok(group && own);
    const aliceStream = wsSubscribe(server.port, alice.token);
    await aliceStream.waitReady();
    const conn = new WsConnect(server.port, carol.token);
    conn.subscribe();
    await conn.waitReady();
    conn.send("intrude", group.groupId, "not mine");
    conn.send("own", own.groupId, "mine");
    await conn.waitReplies(2);
    const refused = errorOf(conn.reply("intrude"));
    assert.ok(refused, "an error result");
    const [grpc] = await grpcConnectReplies(server.baseUrl, carol.token, [
      { requestId: "intrude", payload: { case: "sendMessage", value: { groupId: group.groupId, text: "not mine", clientMessageId: "x" } } },
    ]);
    assert.deepEqual([refused.code, refused.message], [errorOf(grpc)?.code, errorOf(grpc)?.message], "the same code and message as over gRPC");
    assert.ok(["not_found", "permission_denied"].includes(refused.code), refused.code);
    const own1 = conn.result("own");
    assert.equal(own1.case, "response", "the stream goes on");
    // Nothing reached the group: alice's next message there takes the next seq after the group's creation.
    const { message } = await alice.messages.sendMessage({ groupId: group.groupId, text: "alice", clientMessageId: "a1" });
    assert.equal(Number(message?.seq), Number(group.headSeq) + 1);
    await aliceStream.waitForEvents(group.groupId, 1);
    assert.deepEqual(
      aliceStream.eventsOf(group.groupId).map((e) => (e.kind.value as { text?: string }).text),
      ["alice"],
    );
    conn.close();
    aliceStream.close();
  });

  it("serves a pipeline far larger than the requests it holds (64 KiB) completely and in order", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "wpipe");
    const { group } = await alice.groups.createGroup({ name: "ws-pipe" });
    assert.ok(group);
    const conn = new WsConnect(server.port, alice.token);
    conn.subscribe();
    const n = 100; // ~300 KB of requests, sent at once: the server pauses reading while it holds more than 64 KiB
    const ids = range(1, n).map((i) => `p${i}`);
    for (const id of ids) conn.send(id, group.groupId, `${id} ${"x".repeat(3000)}`);
    await conn.waitReplies(n);
    assert.deepEqual(
      conn.replies.map((r) => r.requestId),
      ids,
    );
    assert.deepEqual(
      ids.map((id) => {
        const o = conn.result(id);
        return o.case === "response" ? Number(o.value.message?.seq) : o.case;
      }),
      range(Number(group.headSeq) + 1, Number(group.headSeq) + n),
    );
    conn.close();
  });

  it("counts replies against the stream's buffer cap: a client that sends but does not read is ended with 4008", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "wcap");
    const conn = new WsConnect(server.port, alice.token);
    conn.subscribe();
    await conn.waitReady();
    const openBefore = server.app.hub.size;
    conn.ws.pause(); // reads nothing more
    // Each refused ack echoes its 16 KB request_id: ~6.4 MB of replies and no events, far more than the 1 MiB cap
    // plus the socket buffers.
    const big = "r".repeat(16_000);
    for (let i = 0; i < 400; i++) conn.ack(`${big}${i}`, "", 1);
    const deadline = Date.now() + 20_000;
    while (server.app.hub.size !== openBefore - 1) {
      assert.ok(Date.now() < deadline, "the server dropped the stream");
      await new Promise((r) => setTimeout(r, 20));
    }
    conn.ws.resume();
    const end = await conn.waitClosed(15_000);
    assert.equal(end.code, 4008, end.reason);
    assert.ok(conn.replies.length < 400, `${conn.replies.length} replies: not all were sent`);
    assert.ok(conn.replies.every((r, i) => r.requestId === `${big}${i}` && r.payload.case === "ackError"), "the replies it got are a prefix, in order");
  });

  it("refuses the handshake with 401 without a valid token: nothing is upgraded", async () => {
    for (const [token, via] of [
      [undefined, "header"],
      ["not-a-jwt", "header"],
      ["not-a-jwt", "protocol"],
    ] as const) {
      const got = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const protocols = ["chat.v1.proto", ...(token && via === "protocol" ? [`bearer.${token}`] : [])];
        const headers: Record<string, string> = token && via === "header" ? { authorization: `Bearer ${token}` } : {};
        const ws = new WebSocket(`ws://127.0.0.1:${server.port}${CONNECT_PATH}`, protocols, { headers });
        ws.on("unexpected-response", (_req, res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => (body += d));
          res.on("end", () => {
            resolve({ status: res.statusCode ?? 0, body });
            ws.terminate();
          });
        });
        ws.on("open", () => reject(new Error(`upgraded with ${token ?? "no token"} via ${via}`)));
        ws.on("error", () => {});
      });
      assert.equal(got.status, 401, `${token ?? "no token"} via ${via}`);
      assert.ok(got.body.trim().length > 0, "the body says why");
      if (token) assert.ok(!got.body.includes(token), "the token is not echoed");
    }
  });

  it("ends with 4003 INVALID_ARGUMENT or 4008 RESOURCE_EXHAUSTED for bad client messages, with an actionable reason", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "wbad");
    const { group } = await alice.groups.createGroup({ name: "ws-bad" });
    assert.ok(group);
    const gid = group.groupId;
    const sendReq = (text: string) =>
      toBinary(ConnectRequestSchema, create(ConnectRequestSchema, { requestId: "big", payload: { case: "sendMessage", value: { groupId: gid, text, clientMessageId: "big" } } }));
    const cases: [string, (c: WsConnect) => void, number, RegExp][] = [
      ["a first message without subscribe", (c) => c.send("s1", gid, "hi"), 4003, /first ConnectRequest must carry `subscribe`/],
      ["an empty first message", (c) => c.raw(Buffer.alloc(0)), 4003, /first ConnectRequest must carry `subscribe`/],
      ["a text message", (c) => c.raw("{}"), 4003, /binary/],
      ["a text message after subscribe", (c) => (c.subscribe(), c.raw("{}")), 4003, /binary/],
      ["bytes that are no protobuf", (c) => c.raw(Buffer.from([0xff, 0xff, 0xff])), 4003, /not a valid chat\.v1\.ConnectRequest/],
      ["garbage after subscribe", (c) => (c.subscribe(), c.raw(Buffer.from([0x0a, 0x05, 0x01]))), 4003, /not a valid chat\.v1\.ConnectRequest/],
      ["a second subscribe", (c) => (c.subscribe(), c.subscribe(), c.send("s2", gid, "x")), 0, /./],
      ["a send over MAX_REQUEST_BYTES", (c) => (c.subscribe(), c.raw(Buffer.from(sendReq("x".repeat(70_000))))), 4008, /larger than 65536 bytes/],
    ];
    for (const [what, act, code, reason] of cases) {
      const c = new WsConnect(server.port, alice.token);
      await c.waitFor(() => c.opened, "open");
      act(c);
      if (code === 0) {
        // A second subscribe is a per-request error (FAILED_PRECONDITION), not the end: the send after it is served.
        await c.waitReplies(2);
        assert.equal(c.replies[0]?.requestId, "subscribe");
        assert.equal(errorOf(c.replies[0])?.code, "failed_precondition", what);
        assert.equal(c.result("s2").case, "response", what);
        c.close();
        continue;
      }
      const end = await c.waitClosed();
      assert.equal(end.code, code, `${what}: ${end.code} ${end.reason}`);
      assert.match(end.reason, reason, what);
    }
    // The same oversized send over gRPC Connect ends that stream with the same status and message.
    const client = createClient(StreamService, createGrpcTransport({ baseUrl: server.baseUrl, interceptors: [bearer(() => alice.token)] }));
    async function* big(): AsyncGenerator<ConnectRequest> {
      yield create(ConnectRequestSchema, { requestId: "subscribe", payload: { case: "subscribe", value: {} } });
      yield fromBinary(ConnectRequestSchema, sendReq("x".repeat(70_000)));
    }
    const grpcErr = await (async () => {
      try {
        for await (const _ of client.connect(big())) {
          /* items until the end */
        }
      } catch (e) {
        return e as { code: number; rawMessage: string };
      }
      return undefined;
    })();
    assert.equal(grpcErr?.code, 8, "RESOURCE_EXHAUSTED over gRPC too");
    assert.match(grpcErr?.rawMessage ?? "", /larger than 65536 bytes/);
  });
});

describe("Connect over WebSocket: rate limits, token expiry, shutdown", () => {
  it("refuses a send over the user's rate with RESOURCE_EXHAUSTED and retry_after; the stream goes on", async () => {
    const limited = await startTestServer({ SEND_BURST: "1", SENDS_PER_SECOND: "1" });
    try {
      const bob = await registerUser(limited.baseUrl, "grpc", "wrl");
      const { group } = await bob.groups.createGroup({ name: "ws-limited" });
      assert.ok(group);
      const conn = new WsConnect(limited.port, bob.token);
      conn.subscribe();
      conn.send("one", group.groupId, "one");
      conn.send("two", group.groupId, "two"); // the burst of 1 is spent: refused
      await conn.waitReplies(2);
      assert.equal(conn.result("one").case, "response");
      const refused = errorOf(conn.reply("two"));
      assert.equal(refused?.code, "resource_exhausted");
      assert.match(refused?.message ?? "", /too many messages; retry in 1 s/);
      assert.ok(refused?.retryAfter, "retry_after is set");
      const ms = durationMs(refused.retryAfter);
      assert.ok(ms > 0 && ms <= 1000, `retry_after ${ms} ms`);
      // Retried as a client does, after each hint, the same send goes through on the same stream.
      let hint = ms;
      for (let attempt = 1; ; attempt++) {
        await new Promise((r) => setTimeout(r, hint));
        conn.send(`two-${attempt}`, group.groupId, "two", "two");
        await conn.waitReplies(2 + attempt);
        const outcome = conn.result(`two-${attempt}`);
        if (outcome.case === "response") break;
        assert.ok(attempt < 5 && outcome.case === "error" && outcome.value.retryAfter, `attempt ${attempt}: ${JSON.stringify(outcome.value)}`);
        hint = durationMs(outcome.value.retryAfter);
      }
      assert.equal(conn.closed, undefined);
      conn.close();
    } finally {
      await limited.stop();
    }
  });

  it("ends the stream with 4016 when its access token expires", async () => {
    const short = await startTestServer({ ACCESS_TOKEN_TTL: "2s" });
    try {
      const bob = await registerUser(short.baseUrl, "grpc", "wttl");
      const conn = new WsConnect(short.port, bob.token);
      conn.subscribe();
      await conn.waitReady();
      const end = await conn.waitClosed(8000);
      assert.equal(end.code, 4016, end.reason);
      assert.match(end.reason, /expired/);
    } finally {
      await short.stop();
    }
  });

  it("ends with 4014 (UNAVAILABLE) at shutdown; every send answered before it is stored", async () => {
    const server = await startTestServer({ SHUTDOWN_GRACE: "5s", PORT: String(await freePort()) });
    try {
      const alice = await registerUser(server.baseUrl, "grpc", "wsd");
      const { group } = await alice.groups.createGroup({ name: "ws-bye" });
      assert.ok(group);
      const conn = new WsConnect(server.port, alice.token);
      conn.subscribe();
      await conn.waitReady();
      for (let i = 1; i <= 50; i++) conn.send(`d${i}`, group.groupId, `d${i}`);
      await conn.waitReplies(1);
      const stopping = server.app.stop();
      const end = await conn.waitClosed();
      assert.equal(end.code, 4014, end.reason);
      await stopping;
      const answered = conn.replies.flatMap((r) => {
        const o = (r.payload.value as SendResult).outcome;
        return o.case === "response" && o.value.message ? [o.value.message] : [];
      });
      assert.ok(answered.length >= 1, "some sends were answered");
      await server.restart(); // same port and data directory
      const history = await alice.messages.listMessages({ groupId: group.groupId, limit: 200 });
      const stored = new Map(history.messages.map((m) => [m.messageId, Number(m.seq)]));
      for (const m of answered) assert.equal(stored.get(m.messageId), Number(m.seq), `answered send ${m.clientMessageId} is stored at its seq`);
    } finally {
      await server.stop();
    }
  });
});
