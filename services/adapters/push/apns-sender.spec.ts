import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Device } from "../../core/model.js";
import type { PushContent, PushOutcome } from "../../core/ports.js";
import { type ApnsReceiver, makeApnsSigningKey, startApnsReceiver } from "../../../test/support/push-receivers/apns-receiver.js";
import { type ApnsPayload, createApnsSender } from "./apns-sender.js";
import { MAX_PUSH_BYTES } from "./push-payload.js";

const TOPIC = "com.example.chat";
const key = makeApnsSigningKey();

function device(token: string, topic = TOPIC): Device {
  return { id: "dev-1", userId: "user-1", kind: "apns", token, p256dh: "", auth: "", topic, createdAt: 0 };
}

function content(over: Partial<PushContent> = {}): PushContent {
  return {
    groupId: "0b7e3f5c-6a52-4c1e-9a43-5d8f1e2a7c10",
    groupName: "Climbing crew",
    newestSeq: 42,
    count: 2,
    latestSender: "bob",
    preview: "on my way",
    badge: 5,
    collapseKey: "g:0b7e3f5c-6a52-4c1e-9a43-5d8f1e2a7c10",
    ...over,
  };
}

function assertKind<K extends PushOutcome["kind"]>(got: PushOutcome, kind: K): Extract<PushOutcome, { kind: K }> {
  assert.equal(got.kind, kind, `expected ${kind}, got ${JSON.stringify(got)}`);
  return got as Extract<PushOutcome, { kind: K }>;
}

describe("APNs sender against the loopback APNs receiver (HTTP/2 over TLS, test CA)", () => {
  let rx: ApnsReceiver;
  let sender: ReturnType<typeof createApnsSender>;
  const senderFor = (r: ApnsReceiver, over: { privateKey?: string; timeoutMs?: number } = {}) =>
    createApnsSender({
      url: r.url,
      keyId: key.keyId,
      teamId: key.teamId,
      privateKey: over.privateKey ?? key.privateKeyPem,
      ca: r.ca,
      timeoutMs: over.timeoutMs ?? 2000,
      ttlSeconds: 600,
    });
  before(async () => {
    rx = await startApnsReceiver(key);
    sender = senderFor(rx);
  });
  after(async () => {
    await sender.close();
    await rx.close();
  });

  it("delivers a push whose provider token, headers and JSON the receiver accepts", async () => {
    const token = rx.addDevice(TOPIC);
    const c = content();
    const sentAt = Math.floor(Date.now() / 1000);
    assertKind(await sender.send(device(token), c), "sent");
    assert.deepEqual(rx.rejections, []);
    const push = rx.pushes.at(-1);
    assert.ok(push);
    assert.equal(push.deviceToken, token);
    assert.equal(push.topic, TOPIC);
    assert.equal(push.pushType, "alert");
    assert.equal(push.priority, "10");
    assert.equal(push.collapseId, c.collapseKey);
    const expiration = Number(push.expiration);
    assert.ok(expiration >= sentAt + 600 && expiration <= sentAt + 660, `apns-expiration ${push.expiration}`);
    assert.deepEqual(push.payload as unknown as ApnsPayload, {
      aps: {
        alert: { title: "Climbing crew", body: "2 new messages in Climbing crew\nbob: on my way" },
        badge: 5,
        sound: "default",
        "thread-id": c.groupId,
      },
      group_id: c.groupId,
      newest_seq: 42,
    });
  });

  it("reuses one HTTP/2 session and one provider token across pushes", async () => {
    const token = rx.addDevice(TOPIC);
    const before = rx.pushes.length;
    for (let i = 0; i < 3; i++) assertKind(await sender.send(device(token), content({ newestSeq: 50 + i })), "sent");
    const jwts = new Set(rx.pushes.slice(before).map((p) => p.providerToken));
    assert.equal(rx.pushes.length, before + 3);
    assert.equal(jwts.size, 1);
    assert.equal(rx.connections, 1);
  });

  it("concurrent first sends share one new session and one provider token", async () => {
    const token = rx.addDevice(TOPIC);
    const fresh = senderFor(rx);
    try {
      const connections = rx.connections;
      const before = rx.pushes.length;
      const outcomes = await Promise.all(Array.from({ length: 8 }, (_, i) => fresh.send(device(token), content({ newestSeq: 200 + i }))));
      for (const o of outcomes) assertKind(o, "sent");
      assert.equal(rx.connections, connections + 1);
      assert.equal(new Set(rx.pushes.slice(before).map((p) => p.providerToken)).size, 1);
      assert.equal(rx.pushes.length, before + 8);
    } finally {
      await fresh.close();
    }
  });

  it("a removed device (410), an unknown token and a token of another app (400) are invalid", async () => {
    const gone = rx.addDevice(TOPIC);
    rx.removeDevice(gone);
    assert.match(assertKind(await sender.send(device(gone), content()), "invalid").reason, /410 Unregistered/);
    const unknown = "ab".repeat(32);
    assert.match(assertKind(await sender.send(device(unknown), content()), "invalid").reason, /400 BadDeviceToken/);
    const other = rx.addDevice("com.example.other");
    assert.match(assertKind(await sender.send(device(other), content()), "invalid").reason, /DeviceTokenNotForTopic/);
    rx.rejections.length = 0;
  });

  it("a token that is not hex is invalid without a request; a device without topic is failed", async () => {
    const before = rx.requests.length;
    assertKind(await sender.send(device("not/hex"), content()), "invalid");
    assertKind(await sender.send(device(rx.addDevice(TOPIC), ""), content()), "failed");
    assert.equal(rx.requests.length, before);
  });

  it("429 with Retry-After is retry with afterMs; 500 and 503 are retry; 400 BadTopic is failed", async () => {
    const token = rx.addDevice(TOPIC);
    rx.failNext(429, { "retry-after": "30" }, { reason: "TooManyRequests" });
    assert.equal(assertKind(await sender.send(device(token), content()), "retry").afterMs, 30_000);
    rx.failNext(500, {}, { reason: "InternalServerError" });
    assert.equal(assertKind(await sender.send(device(token), content()), "retry").afterMs, undefined);
    rx.failNext(503, {}, { reason: "ServiceUnavailable" });
    assertKind(await sender.send(device(token), content()), "retry");
    rx.failNext(400, {}, { reason: "BadTopic" });
    assert.match(assertKind(await sender.send(device(token), content()), "failed").reason, /BadTopic/);
    assertKind(await sender.send(device(token), content()), "sent");
  });

  it("403 ExpiredProviderToken is retry, and the next push carries a newly signed token", async () => {
    const token = rx.addDevice(TOPIC);
    assertKind(await sender.send(device(token), content()), "sent");
    const first = rx.pushes.at(-1)?.providerToken;
    rx.failNext(403, {}, { reason: "ExpiredProviderToken" });
    assertKind(await sender.send(device(token), content()), "retry");
    assertKind(await sender.send(device(token), content()), "sent");
    const second = rx.pushes.at(-1)?.providerToken;
    assert.ok(first !== undefined && second !== undefined);
    assert.notEqual(second, first);
  });

  it("a token signed with another key is refused by the receiver (403 InvalidProviderToken: retry)", async () => {
    const token = rx.addDevice(TOPIC);
    const impostor = senderFor(rx, { privateKey: makeApnsSigningKey().privateKeyPem });
    try {
      assert.match(assertKind(await impostor.send(device(token), content()), "retry").reason, /InvalidProviderToken/);
      assert.equal(rx.rejections.at(-1)?.reason, "InvalidProviderToken");
      rx.rejections.length = 0;
    } finally {
      await impostor.close();
    }
  });

  it("keeps the payload ≤ 4 KB with a huge preview and turns a long collapse key into ≤ 64 bytes", async () => {
    const token = rx.addDevice(TOPIC);
    const longKey = `collapse-${"x".repeat(100)}`;
    assertKind(await sender.send(device(token), content({ preview: "ü".repeat(20_000), collapseKey: longKey })), "sent");
    assert.deepEqual(rx.rejections, []);
    const push = rx.pushes.at(-1);
    assert.ok(push);
    assert.ok(push.bodyBytes <= MAX_PUSH_BYTES, `${push.bodyBytes} bytes`);
    assert.ok(push.bodyBytes > MAX_PUSH_BYTES - 100, "the preview is cut close to the limit, not dropped");
    const body = (push.payload as unknown as ApnsPayload).aps.alert.body;
    assert.ok(body.endsWith("ü…"));
    assert.ok(push.collapseId !== undefined && push.collapseId !== longKey && Buffer.byteLength(push.collapseId) <= 64);
  });

  it("opens a new session after the service closed the old one", async () => {
    const token = rx.addDevice(TOPIC);
    assertKind(await sender.send(device(token), content()), "sent");
    const before = rx.connections;
    rx.dropConnections();
    // The first send may still meet the closing session (retry); a bounded second one must go through.
    let got: PushOutcome = { kind: "failed", reason: "not tried" };
    for (let i = 0; i < 3 && got.kind !== "sent"; i++) got = await sender.send(device(token), content());
    assertKind(got, "sent");
    assert.equal(rx.connections, before + 1);
  });

  it("an answer that does not come in time is retry; a refused connection is retry", async () => {
    const token = rx.addDevice(TOPIC);
    const quick = senderFor(rx, { timeoutMs: 300 });
    try {
      rx.stallNext();
      assert.match(assertKind(await quick.send(device(token), content()), "retry").reason, /within 300 ms/);
    } finally {
      await quick.close();
    }
    const gone = await startApnsReceiver(key);
    const url = gone.url;
    await gone.close();
    const lost = createApnsSender({ url, keyId: key.keyId, teamId: key.teamId, privateKey: key.privateKeyPem, ca: rx.ca, timeoutMs: 2000 });
    try {
      assert.match(assertKind(await lost.send(device(token), content()), "retry").reason, /ECONNREFUSED/);
    } finally {
      await lost.close();
    }
  });
});
