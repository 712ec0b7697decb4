import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type http from "node:http";
import { after, before, describe, it } from "node:test";
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { ConnectResponseSchema, SubscribeResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { type HubFixture, createHubFixture } from "../../test/support/hub-fixture.js";
import type { MemoryEventBus } from "../adapters/memory/memory-bus.js";
import { ChatError } from "../core/errors.js";
import { newId } from "../core/ids.js";
import type { GroupEvent } from "../core/model.js";
import type { Store } from "../core/ports.js";
import { type OutboundItem, eventItem, heartbeatItem } from "../delivery/outbound.js";
import type { StreamHub } from "../delivery/stream-hub.js";
import { FrameReader, FrameWriter, type WireProtocol } from "./framing.js";

/** FakeResponse records what a FrameWriter writes, as an HTTP response that never buffers. */
class FakeResponse extends EventEmitter {
  readonly chunks: Buffer[] = [];
  headers: Record<string, string> | undefined;
  trailers: Record<string, string> | undefined;
  destroyed = false;
  writableEnded = false;
  writableLength = 0;
  writableNeedDrain = false;
  writeHead(_status: number, headers: Record<string, string>): this {
    this.headers = headers;
    return this;
  }
  write(chunk: Buffer | string): boolean {
    this.chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    return true;
  }
  addTrailers(t: Record<string, string>): void {
    this.trailers = t;
  }
  end(chunk?: Buffer | string): this {
    if (chunk) this.chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    this.writableEnded = true;
    return this;
  }
}

function writer(protocol: WireProtocol): { res: FakeResponse; sink: FrameWriter } {
  const res = new FakeResponse();
  const sink = new FrameWriter(protocol, res as unknown as http.ServerResponse);
  sink.start();
  return { res, sink };
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("FrameWriter", () => {
  let fixture: HubFixture;
  let store: Store;
  let bus: MemoryEventBus;
  let hub: StreamHub;
  before(() => {
    fixture = createHubFixture({ catchUpBatch: 100 });
    ({ store, bus, hub } = fixture);
  });
  after(() => fixture.close());

  it("writes the very same frame Buffer to every recipient, whatever the protocol", async () => {
    const owner = { id: newId(), username: "fw" };
    const { groupId } = await store.createGroup({ id: newId(), name: "g", epoch: newId(), createdAt: Date.now(), owner });
    const writers = (["grpc", "grpc-web", "connect", "grpc"] as const).map(writer);
    const principal = { userId: owner.id, username: owner.username, sessionId: newId(), expiresAt: Date.now() + 60_000 };
    for (const w of writers) await hub.open(principal, new Map(), w.sink);
    const id = newId();
    const { event } = await store.appendMessage({ id, groupId, sender: owner, text: "hi", clientMessageId: id, sentAt: Date.now() });
    await bus.publishEvent(event);
    await nextTurn(); // the hub's items go out once per loop turn
    const frames = writers.map((w) => w.res.chunks.at(-1));
    assert.ok(frames[0] && frames[0].length > 5);
    for (const f of frames) assert.equal(f, frames[0], "one Buffer object for all");
    assert.equal(frames[0]?.readUInt8(0), 0, "uncompressed message frame");
    assert.equal(frames[0]?.readUInt32BE(1), (frames[0]?.length ?? 0) - 5);
  });

  it("hands a turn's items to the response in one write, in order, counting them as buffered meanwhile", async () => {
    const { res, sink } = writer("grpc");
    const items = [1, 2, 3].map((i) => heartbeatItem(1_700_000_000_000 + i));
    const before = res.chunks.length;
    for (const item of items) sink.write(item);
    assert.equal(res.chunks.length, before, "nothing written yet");
    const bytes = items.reduce((n, i) => n + i.grpcFrame.length, 0);
    assert.equal(sink.bufferedBytes, bytes, "queued items count against the buffer cap");
    await nextTurn();
    assert.equal(res.chunks.length, before + 1, "one write");
    assert.deepEqual(res.chunks.at(-1), Buffer.concat(items.map((i) => i.grpcFrame)));
    assert.equal(sink.bufferedBytes, 0);

    // A frame of the handler's own goes out at once, after what was queued; so does the end.
    sink.write(items[0] as OutboundItem);
    sink.writeFrame(Buffer.from("reply"));
    assert.deepEqual(res.chunks.slice(-2), [items[0]?.grpcFrame, Buffer.from("reply")]);
    sink.write(items[1] as OutboundItem);
    sink.finish(undefined);
    assert.equal(res.chunks.at(-1), items[1]?.grpcFrame, "queued items are written before the end");
    assert.deepEqual(res.trailers, { "grpc-status": "0" });
    sink.write(items[2] as OutboundItem);
    await nextTurn();
    assert.equal(res.chunks.at(-1), items[1]?.grpcFrame, "nothing after the end");
  });

  it("ends each protocol its own way", () => {
    const slow = () => new ChatError("ResourceExhausted", "too slow: 100%");
    const grpc = writer("grpc");
    grpc.sink.finish(undefined);
    assert.deepEqual(grpc.res.trailers, { "grpc-status": "0" });
    const grpcFailed = writer("grpc");
    grpcFailed.sink.end(slow());
    assert.deepEqual(grpcFailed.res.trailers, { "grpc-status": "8", "grpc-message": "too slow: 100%25" });

    const web = writer("grpc-web");
    web.sink.end(slow());
    const trailer = web.res.chunks.at(-1);
    assert.equal(trailer?.readUInt8(0), 0x80, "gRPC-Web trailer frame");
    assert.equal(trailer?.subarray(5).toString("latin1"), "grpc-status: 8\r\ngrpc-message: too slow: 100%25\r\n");

    // grpc-web-text: every write is base64 on its own (padded); the trailer frame too.
    const text = writer("grpc-web-text");
    assert.equal(text.res.headers?.["content-type"], "application/grpc-web-text+proto");
    text.sink.writeFrame(Buffer.from([0, 0, 0, 0, 1, 42]));
    text.sink.end(slow());
    const [message, textTrailer] = text.res.chunks.map((c) => Buffer.from(c.toString(), "base64"));
    assert.deepEqual(message, Buffer.from([0, 0, 0, 0, 1, 42]));
    assert.equal(text.res.chunks[0]?.toString(), "AAAAAAEq");
    assert.equal(textTrailer?.readUInt8(0), 0x80);
    assert.equal(textTrailer?.subarray(5).toString("latin1"), "grpc-status: 8\r\ngrpc-message: too slow: 100%25\r\n");

    const connect = writer("connect");
    connect.sink.finish(undefined);
    const endFrame = connect.res.chunks.at(-1);
    assert.equal(endFrame?.readUInt8(0), 0x02, "Connect end-of-stream frame");
    assert.equal(endFrame?.subarray(5).toString(), "{}");
    const connectFailed = writer("connect");
    connectFailed.sink.end(slow());
    assert.deepEqual(JSON.parse(connectFailed.res.chunks.at(-1)?.subarray(5).toString() ?? ""), {
      error: { code: "resource_exhausted", message: "too slow: 100%" },
    });
    // A retry hint reaches Connect clients too, as the end-of-stream message's metadata.
    const connectLimited = writer("connect");
    connectLimited.sink.end(new ChatError("ResourceExhausted", "slow down", { retryAfterMs: 1500 }));
    assert.deepEqual(JSON.parse(connectLimited.res.chunks.at(-1)?.subarray(5).toString() ?? ""), {
      error: { code: "resource_exhausted", message: "slow down" },
      metadata: { "retry-after": ["2"] },
    });
  });
});

describe("OutboundItem.connectFrame", () => {
  it("is the item wrapped as a framed ConnectResponse, built once", () => {
    const item = heartbeatItem(1_700_000_000_000);
    const frame = item.connectFrame;
    assert.equal(item.connectFrame, frame, "memoized: the same Buffer every time");
    assert.equal(frame.readUInt32BE(1), frame.length - 5);
    const decoded = fromBinary(ConnectResponseSchema, frame.subarray(5));
    assert.equal(decoded.payload.case, "item");
    assert.ok(decoded.payload.case === "item");
    assert.ok(equals(SubscribeResponseSchema, decoded.payload.value, item.message));
  });

  it("is byte for byte what protobuf-es writes, for items whose length takes one varint byte or several", () => {
    const items = [heartbeatItem(1_700_000_000_000), eventItem(textEvent(200)), eventItem(textEvent(20_000))];
    for (const item of items) {
      const expected = toBinary(ConnectResponseSchema, create(ConnectResponseSchema, { payload: { case: "item", value: item.message } }));
      assert.deepEqual(new Uint8Array(item.connectFrame), encodeEnvelope(0, expected));
    }
  });
});

/** textEvent is a message event whose text takes `bytes` bytes. */
function textEvent(bytes: number): GroupEvent {
  const sender = { id: newId(), username: "sender" };
  const groupId = newId();
  const message = { id: newId(), groupId, seq: 7, sender, text: "x".repeat(bytes), sentAt: 1_700_000_000_123, clientMessageId: "c1" };
  return { groupId, seq: 7, at: message.sentAt, actor: sender, body: { type: "message", message } };
}

describe("FrameReader", () => {
  const frameOf = (payload: string, flags = 0) => {
    const body = Buffer.from(payload);
    const f = Buffer.alloc(5 + body.length);
    f.writeUInt8(flags, 0);
    f.writeUInt32BE(body.length, 1);
    body.copy(f, 5);
    return f;
  };

  it("cuts frames across arbitrary chunk boundaries", () => {
    const reader = new FrameReader(1024);
    const wire = Buffer.concat([frameOf("one"), frameOf(""), frameOf("three")]);
    const got: string[] = [];
    for (let i = 0; i < wire.length; i += 2) got.push(...reader.push(wire.subarray(i, i + 2)).map((f) => f.payload.toString()));
    assert.deepEqual(got, ["one", "", "three"]);
    assert.equal(reader.leftover, 0);
    reader.push(frameOf("partial").subarray(0, 7));
    assert.equal(reader.leftover, 7);
  });

  it("refuses an oversized frame before buffering it, and compressed frames", () => {
    assert.throws(() => new FrameReader(4).push(frameOf("12345").subarray(0, 5)), (e: ChatError) => e.kind === "ResourceExhausted");
    assert.throws(() => new FrameReader(64).push(frameOf("x", 1)), /compressed/);
  });
});
