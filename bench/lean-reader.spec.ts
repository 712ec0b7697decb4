/**
 * The bench's lean Subscribe reader (bench/lib/lean-reader.ts) and its
 * hand-written protobuf codec (bench/lib/wire-lite.ts) against the real
 * thing: a real server, the same user subscribed with @grpc/grpc-js and with
 * the lean reader, every event compared (kind, group, seq, text) in order;
 * and each hand-written encoder/decoder against @bufbuild/protobuf.
 */
import assert from "node:assert/strict";
import type http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  ListMessagesRequestSchema,
  ListMessagesResponseSchema,
  SendMessageRequestSchema,
  SendMessageResponseSchema,
} from "../gen/chat/v1/message_service_pb.js";
import { SubscribeRequestSchema, SubscribeResponseSchema, StreamService, type SubscribeResponse } from "../gen/chat/v1/stream_service_pb.js";
import { grpcJsClient } from "../test/support/grpc-js-client.js";
import { grpcJsSubscribe } from "../test/support/stream-reader.js";
import { type TestServer, registerUser, startTestServer } from "../test/support/test-server.js";
import { FrameParser, connectSession, leanSubscribe, leanWsSubscribe, type StreamEnd } from "./lib/lean-reader.js";
import {
  LeanItem,
  type Stamp,
  benchText,
  decodeListMessagesResponse,
  decodeSendMessageResponse,
  decodeSubscribeResponse,
  encodeListMessagesRequest,
  encodeSendMessageRequest,
  encodeSubscribeRequest,
  grpcFrame,
  readStamp,
} from "./lib/wire-lite.js";

/** Seen is one stream item reduced to what both readers must agree on. */
interface Seen {
  kind: string;
  groupId: string;
  seq: number;
  text: string | undefined;
  eventKind: string;
}

const EVENT_FIELDS: Record<number, string> = { 10: "message", 11: "memberAdded", 12: "memberRemoved", 13: "memberRoleChanged", 14: "groupRenamed" };

function fromGrpcJs(item: SubscribeResponse): Seen | undefined {
  const p = item.payload;
  switch (p.case) {
    case "event":
      return {
        kind: "event",
        groupId: p.value.groupId,
        seq: Number(p.value.seq),
        text: p.value.kind.case === "message" ? p.value.kind.value.text : undefined,
        eventKind: p.value.kind.case ?? "",
      };
    case "ready":
      return { kind: "ready", groupId: p.value.groups.map((g) => `${g.groupId}@${g.seq}/${g.headSeq}/${g.epoch}`).join(","), seq: 0, text: undefined, eventKind: "" };
    case "groupJoined":
      return { kind: "groupJoined", groupId: p.value.groupId, seq: 0, text: undefined, eventKind: "" };
    case "cursorReset":
      return { kind: "cursorReset", groupId: p.value.groupId, seq: Number(p.value.firstAvailableSeq), text: undefined, eventKind: "" };
    default:
      return undefined; // heartbeats are timing-dependent: not compared
  }
}

function fromLean(item: LeanItem): Seen | undefined {
  switch (item.kind) {
    case "event":
      return { kind: "event", groupId: item.groupId, seq: item.seq, text: item.text(), eventKind: EVENT_FIELDS[item.eventField] ?? "" };
    case "ready":
      return { kind: "ready", groupId: item.positions.map((g) => `${g.groupId}@${g.seq}/${g.headSeq}/${g.epoch}`).join(","), seq: 0, text: undefined, eventKind: "" };
    case "groupJoined":
      return { kind: "groupJoined", groupId: item.groupId, seq: 0, text: undefined, eventKind: "" };
    case "cursorReset":
      return { kind: "cursorReset", groupId: item.groupId, seq: item.firstAvailableSeq, text: undefined, eventKind: "" };
    default:
      return undefined;
  }
}

/** LeanCollector subscribes with the lean reader and keeps what it sees. */
class LeanCollector {
  readonly seen: Seen[] = [];
  ended: StreamEnd | undefined;
  private readonly stream;

  /** `via` is an HTTP/2 session (Subscribe over gRPC) or the server's base URL (Subscribe over WebSocket). */
  constructor(via: http2.ClientHttp2Session | string, token: string, cursors: { groupId: string; seq: number }[] = []) {
    const options = {
      token,
      cursors,
      onItem: (item: LeanItem) => {
        const s = fromLean(item);
        if (s) this.seen.push(s);
      },
      onEnd: (end: StreamEnd) => {
        this.ended = end;
      },
    };
    this.stream = typeof via === "string" ? leanWsSubscribe({ url: via, ...options }) : leanSubscribe({ session: via, ...options });
  }

  close(): void {
    this.stream.close();
  }
}

async function until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("bench lean reader", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  for (const transport of ["grpc", "websocket"] as const) it(`sees the same items, in the same order, as a grpc-js client (live and resumed; ${transport})`, async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "lean");
    const bob = await registerUser(server.baseUrl, "grpc", "leanb");
    const carol = await registerUser(server.baseUrl, "grpc", "leanc");
    const { group: g1 } = await alice.groups.createGroup({ name: "one", memberUsernames: [bob.username] });
    const { group: g2 } = await bob.groups.createGroup({ name: "two", memberUsernames: [alice.username] });
    assert.ok(g1 && g2 && alice.token);

    const grpcJs = grpcJsClient(server.port, StreamService);
    const reference = grpcJsSubscribe(grpcJs, alice.token);
    const session = transport === "grpc" ? await connectSession(server.baseUrl) : server.baseUrl;
    const lean = new LeanCollector(session, alice.token);
    await reference.waitReady();
    await until(() => lean.seen.some((s) => s.kind === "ready"), "lean ready");

    // Every kind of event, texts of every shape: bench stamps, multi-byte UTF-8, long (multi-chunk) ones.
    const texts = [
      benchText(1_712_345_678_901_234, 3, 100),
      "héllo wörld ✓ 🎉",
      "y".repeat(3000),
      benchText(1, 0, 10),
      "plain",
    ];
    for (let i = 0; i < 40; i++) {
      const sender = i % 2 === 0 ? alice : bob;
      const group = i % 3 === 0 ? g2 : g1;
      await sender.messages.sendMessage({ groupId: group.groupId, text: texts[i % texts.length] ?? "", clientMessageId: `m${i}` });
      if (i === 10) await alice.groups.addMember({ groupId: g1.groupId, user: { case: "username", value: carol.username } });
      if (i === 20) await bob.groups.updateGroup({ groupId: g2.groupId, name: "renamed" });
      if (i === 30) await alice.groups.removeMember({ groupId: g1.groupId, userId: carol.userId });
    }
    // A group alice joins while both streams are open: GroupJoined, then its events.
    const { group: g3 } = await carol.groups.createGroup({ name: "three", memberUsernames: [] });
    assert.ok(g3);
    await carol.groups.addMember({ groupId: g3.groupId, user: { case: "username", value: alice.username } });
    await carol.messages.sendMessage({ groupId: g3.groupId, text: "welcome", clientMessageId: "w1" });

    const expectedEvents = 40 + 1 + 1 + 1 + 2; // messages, add, rename, remove; g3: alice added, welcome
    const refSeen = () => reference.items.map(fromGrpcJs).filter((s): s is Seen => s !== undefined);
    await until(() => refSeen().filter((s) => s.kind === "event").length >= expectedEvents, "grpc-js events");
    await until(() => lean.seen.filter((s) => s.kind === "event").length >= expectedEvents, "lean events");
    await new Promise((r) => setTimeout(r, 100)); // nothing more may arrive
    assert.deepEqual(lean.seen, refSeen());
    assert.ok(lean.seen.some((s) => s.kind === "groupJoined"));
    assert.ok(lean.seen.some((s) => s.eventKind === "groupRenamed"));
    assert.equal(lean.seen.filter((s) => s.text === texts[2]).length, refSeen().filter((s) => s.text === texts[2]).length);

    // Resume: both readers with the same cursors replay the same events from the store.
    const cursors = [
      { groupId: g1.groupId, seq: 5 },
      { groupId: g2.groupId, seq: 1 },
      { groupId: g3.groupId, seq: 0 },
    ];
    const reference2 = grpcJsSubscribe(
      grpcJs,
      alice.token,
      cursors.map((c) => ({ groupId: c.groupId, seq: BigInt(c.seq) })),
    );
    const lean2 = new LeanCollector(session, alice.token, cursors);
    const refSeen2 = () => reference2.items.map(fromGrpcJs).filter((s): s is Seen => s !== undefined);
    const headOf = (gid: string) => Math.max(0, ...lean.seen.filter((s) => s.kind === "event" && s.groupId === gid).map((s) => s.seq));
    const heads = [g1, g2, g3].map((g) => headOf(g.groupId));
    const replayed = (heads[0] ?? 0) - 5 + (heads[1] ?? 0) - 1 + (heads[2] ?? 0);
    await until(() => refSeen2().filter((s) => s.kind === "event").length >= replayed, "grpc-js replay");
    await until(() => lean2.seen.filter((s) => s.kind === "event").length >= replayed, "lean replay");
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(lean2.seen, refSeen2());

    // A rejected call ends with the server's status.
    const bad = new LeanCollector(session, "not-a-token");
    await until(() => bad.ended !== undefined, "rejected stream end");
    assert.equal(bad.ended?.code, 16); // UNAUTHENTICATED

    // A client cancel ends the lean stream and frees the server's stream.
    for (const s of [lean, lean2]) s.close();
    reference.close();
    reference2.close();
    await until(() => lean.ended !== undefined && lean2.ended !== undefined, "lean end");
    await until(() => server.app.hub.size === 0, "server streams closed");
    if (typeof session !== "string") session.close();
    grpcJs.close();
  });

  it("FrameParser reassembles frames split at every byte", () => {
    const payloads = [Buffer.from("a"), Buffer.alloc(0), Buffer.from("hello world"), Buffer.alloc(70_000, 7)];
    const wire = Buffer.concat(payloads.map((p) => grpcFrame(p)));
    for (const step of [1, 2, 3, 5, 7, 4096, wire.length]) {
      const got: Buffer[] = [];
      const parser = new FrameParser((buf, start, end) => got.push(Buffer.from(buf.subarray(start, end))));
      for (let i = 0; i < wire.length; i += step) parser.push(wire.subarray(i, i + step));
      assert.deepEqual(got, payloads, `chunks of ${step}`);
      assert.equal(parser.leftover, 0);
    }
  });

  it("hand-written codecs agree with @bufbuild/protobuf", () => {
    // SubscribeRequest
    const cursors = [
      { groupId: "g-1", seq: 0 },
      { groupId: "g-2", seq: 300, epoch: "ep" },
      { groupId: "g-3", seq: 2 ** 40 + 5 },
    ];
    const req = fromBinary(SubscribeRequestSchema, encodeSubscribeRequest(cursors));
    assert.deepEqual(
      req.cursors.map((c) => ({ groupId: c.groupId, seq: Number(c.seq), epoch: c.epoch })),
      cursors.map((c) => ({ groupId: c.groupId, seq: c.seq, epoch: c.epoch ?? "" })),
    );
    // SendMessageRequest
    const send = fromBinary(SendMessageRequestSchema, encodeSendMessageRequest("gid", "tëxt ✓", "cm-1"));
    assert.deepEqual([send.groupId, send.text, send.clientMessageId], ["gid", "tëxt ✓", "cm-1"]);
    // ListMessagesRequest
    const list = fromBinary(ListMessagesRequestSchema, encodeListMessagesRequest("gid", 50, { beforeSeq: 1234 }));
    assert.deepEqual([list.groupId, list.limit, list.anchor.case, list.anchor.value], ["gid", 50, "beforeSeq", 1234n]);
    const newest = fromBinary(ListMessagesRequestSchema, encodeListMessagesRequest("gid", 50));
    assert.equal(newest.anchor.case, undefined);
    // SendMessageResponse
    const resBytes = toBinary(
      SendMessageResponseSchema,
      create(SendMessageResponseSchema, {
        message: { messageId: "m", groupId: "g", seq: 987_654_321n, text: "x", sender: { userId: "u", username: "n" }, sentAt: timestampFromMs(Date.now()) },
        duplicate: true,
      }),
    );
    assert.deepEqual(decodeSendMessageResponse(Buffer.from(resBytes)), { seq: 987_654_321, duplicate: true });
    // ListMessagesResponse
    const listBytes = toBinary(
      ListMessagesResponseSchema,
      create(ListMessagesResponseSchema, {
        messages: [10n, 11n, 12n].map((seq) => ({ messageId: `m${seq}`, groupId: "g", seq, text: "t", sentAt: timestampFromMs(0) })),
        hasMore: true,
        headSeq: 40n,
        firstRetainedSeq: 1n,
      }),
    );
    assert.deepEqual(decodeListMessagesResponse(Buffer.from(listBytes)), { messages: 3, firstSeq: 10, lastSeq: 12, hasMore: true, headSeq: 40 });
    // SubscribeResponse: an event with a message, at an offset inside a larger buffer
    const ev = toBinary(
      SubscribeResponseSchema,
      create(SubscribeResponseSchema, {
        payload: {
          case: "event",
          value: {
            groupId: "grp",
            seq: 77n,
            occurredAt: timestampFromMs(5),
            actor: { userId: "u", username: "n" },
            kind: { case: "message", value: { messageId: "m", groupId: "grp", seq: 77n, text: "ümlaut", clientMessageId: "c" } },
          },
        },
      }),
    );
    const padded = Buffer.concat([Buffer.from("junk"), ev, Buffer.from("more")]);
    const item = decodeSubscribeResponse(padded, 4, 4 + ev.length, new LeanItem());
    assert.deepEqual([item.kind, item.groupId, item.seq, item.eventField, item.text()], ["event", "grp", 77, 10, "ümlaut"]);
    // A message with empty text (proto3 omits it) still decodes as a message with "".
    const emptyText = toBinary(
      SubscribeResponseSchema,
      create(SubscribeResponseSchema, { payload: { case: "event", value: { groupId: "g", seq: 1n, kind: { case: "message", value: { seq: 1n } } } } }),
    );
    assert.equal(decodeSubscribeResponse(Buffer.from(emptyText), 0, emptyText.length, new LeanItem()).text(), "");
    // Heartbeat
    const hb = toBinary(SubscribeResponseSchema, create(SubscribeResponseSchema, { payload: { case: "heartbeat", value: { serverTime: timestampFromMs(1) } } }));
    assert.equal(decodeSubscribeResponse(Buffer.from(hb), 0, hb.length, new LeanItem()).kind, "heartbeat");
    // ReadMarker (field 6), with a seq past 2^32 so a 32-bit varint read would show
    const rm = toBinary(SubscribeResponseSchema, create(SubscribeResponseSchema, { payload: { case: "readMarker", value: { groupId: "grp-r", seq: 5_000_000_123n } } }));
    const marker = decodeSubscribeResponse(Buffer.from(rm), 0, rm.length, new LeanItem());
    assert.deepEqual([marker.kind, marker.groupId, marker.seq], ["readMarker", "grp-r", 5_000_000_123]);
  });

  it("bench texts carry their send time and phase", () => {
    const t = 1_712_345_678_901_234;
    for (const size of [1, 20, 100, 4096]) {
      const text = benchText(t, 12, size);
      assert.equal(text.length, Math.max(size, `${t} 12 `.length));
      const out: Stamp = { sendTimeUs: 0, phase: -1 };
      const buf = Buffer.from(text);
      assert.ok(readStamp(buf, 0, buf.length, out));
      assert.deepEqual(out, { sendTimeUs: t, phase: 12 });
    }
    const out: Stamp = { sendTimeUs: 0, phase: -1 };
    for (const text of ["", "hello", "123", "123 ", "12a 3 ", " 1 2"]) {
      const buf = Buffer.from(text);
      assert.equal(readStamp(buf, 0, buf.length, out), false, text);
    }
  });
});
