import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Device } from "../../core/model.js";
import type { PushContent, PushOutcome } from "../../core/ports.js";
import {
  type ReceiverSubscription,
  type WebPushReceiver,
  makeVapidKeys,
  startWebPushReceiver,
} from "../../../test/support/push-receivers/web-push-receiver.js";
import { MAX_PUSH_BYTES, MAX_WEB_PUSH_PLAINTEXT, webPushTopic } from "./push-payload.js";
import { type WebPushMessage, createWebPushSender } from "./web-push-sender.js";

const vapid = makeVapidKeys();

function deviceFor(sub: { endpoint: string; p256dh: string; auth: string }, id = "dev-1"): Device {
  return { id, userId: "user-1", kind: "web_push", token: sub.endpoint, p256dh: sub.p256dh, auth: sub.auth, topic: "", createdAt: 0 };
}

function content(over: Partial<PushContent> = {}): PushContent {
  return {
    groupId: "0b7e3f5c-6a52-4c1e-9a43-5d8f1e2a7c10",
    groupName: "Climbing crew",
    newestSeq: 42,
    count: 3,
    latestSender: "alice",
    preview: "see you at 6?",
    badge: 7,
    collapseKey: "g:0b7e3f5c-6a52-4c1e-9a43-5d8f1e2a7c10",
    ...over,
  };
}

function assertKind<K extends PushOutcome["kind"]>(got: PushOutcome, kind: K): Extract<PushOutcome, { kind: K }> {
  assert.equal(got.kind, kind, `expected ${kind}, got ${JSON.stringify(got)}`);
  return got as Extract<PushOutcome, { kind: K }>;
}

describe("Web Push sender against the loopback Web Push receiver (https, test CA)", () => {
  let rx: WebPushReceiver;
  let sender: ReturnType<typeof createWebPushSender>;
  before(async () => {
    rx = await startWebPushReceiver();
    sender = createWebPushSender({ vapid, allowPrivate: true, ca: rx.ca, timeoutMs: 2000, ttlSeconds: 3600 });
  });
  after(async () => {
    await sender.close();
    await rx.close();
  });

  it("delivers a push the receiver verifies (VAPID) and decrypts (aes128gcm), with TTL, Urgency and Topic", async () => {
    const sub = rx.subscribe({ applicationServerKey: vapid.publicKey });
    const c = content();
    assertKind(await sender.send(deviceFor(sub), c), "sent");
    assert.deepEqual(rx.rejections, []);
    const push = rx.pushes.at(-1);
    assert.ok(push);
    assert.equal(push.subscriptionId, sub.id);
    assert.equal(push.ttl, 3600);
    assert.equal(push.urgency, "normal");
    const topic = webPushTopic(c.collapseKey);
    assert.ok(topic !== undefined && topic !== c.collapseKey, "a collapse key with ':' is turned into a valid Topic");
    assert.equal(push.topic, topic);
    assert.equal(push.vapid.sub, vapid.subject);
    assert.equal(push.vapid.aud, rx.url);
    assert.equal(push.vapid.k, vapid.publicKey);
    const msg = push.json as WebPushMessage;
    assert.deepEqual(msg, {
      title: "Climbing crew",
      body: "3 new messages in Climbing crew\nalice: see you at 6?",
      group_id: c.groupId,
      newest_seq: 42,
      count: 3,
      badge: 7,
      tag: c.collapseKey,
    });
  });

  it("uses a collapse key that is already a valid Topic as it is", async () => {
    const sub = rx.subscribe();
    assertKind(await sender.send(deviceFor(sub), content({ collapseKey: "grp_0b7e3f5c", count: 1 })), "sent");
    const push = rx.pushes.at(-1);
    assert.equal(push?.topic, "grp_0b7e3f5c");
    assert.equal((push?.json as WebPushMessage).body, "alice: see you at 6?");
  });

  it("cuts a huge preview so the plaintext fits one record (≤ 3993 bytes) and the body ≤ 4096", async () => {
    const sub = rx.subscribe();
    const preview = "🧗 ".repeat(5000);
    assertKind(await sender.send(deviceFor(sub), content({ preview })), "sent");
    assert.deepEqual(rx.rejections, []);
    const push = rx.pushes.at(-1);
    assert.ok(push);
    assert.ok(Buffer.byteLength(push.plaintext) <= MAX_WEB_PUSH_PLAINTEXT, `${Buffer.byteLength(push.plaintext)} bytes`);
    assert.ok(push.bodyBytes <= MAX_PUSH_BYTES);
    const body = (push.json as WebPushMessage).body;
    assert.ok(body.endsWith("…"));
    assert.ok(body.length > 1000, "the preview is cut, not dropped");
    assert.doesNotMatch(body, /\p{Cs}/u, "no split surrogate pair");
    assert.ok(body.startsWith("3 new messages in Climbing crew\nalice: 🧗 🧗"));
  });

  it("an unsubscribed endpoint (410) and an unknown one (404) are invalid", async () => {
    const sub = rx.subscribe();
    rx.unsubscribe(sub);
    assert.match(assertKind(await sender.send(deviceFor(sub), content()), "invalid").reason, /410/);
    const unknown = { ...rx.subscribe(), endpoint: `${rx.url}/push/nosuchsubscription` };
    assert.match(assertKind(await sender.send(deviceFor(unknown), content()), "invalid").reason, /404/);
  });

  it("429 with Retry-After in seconds or as an HTTP date is retry with afterMs", async () => {
    const sub = rx.subscribe();
    rx.failNext(429, { "retry-after": "7" });
    assert.equal(assertKind(await sender.send(deviceFor(sub), content()), "retry").afterMs, 7000);
    rx.failNext(503, { "retry-after": new Date(Date.now() + 20_000).toUTCString() });
    const afterMs = assertKind(await sender.send(deviceFor(sub), content()), "retry").afterMs;
    assert.ok(afterMs !== undefined && afterMs > 15_000 && afterMs <= 20_000, `afterMs ${afterMs}`);
    const before = rx.pushes.length;
    assertKind(await sender.send(deviceFor(sub), content()), "sent");
    assert.equal(rx.pushes.length, before + 1);
  });

  it("500 is retry without afterMs; 413 and 400 are failed", async () => {
    const sub = rx.subscribe();
    rx.failNext(500);
    const retry = assertKind(await sender.send(deviceFor(sub), content()), "retry");
    assert.equal(retry.afterMs, undefined);
    rx.failNext(413, {}, "too big");
    assert.match(assertKind(await sender.send(deviceFor(sub), content()), "failed").reason, /413: too big/);
    rx.failNext(400);
    assertKind(await sender.send(deviceFor(sub), content()), "failed");
  });

  it("a push signed with another VAPID key than the subscription's is refused (403: failed)", async () => {
    const sub = rx.subscribe({ applicationServerKey: makeVapidKeys().publicKey });
    assert.match(assertKind(await sender.send(deviceFor(sub), content()), "failed").reason, /403/);
    assert.equal(rx.rejections.at(-1)?.status, 403);
    rx.rejections.length = 0;
  });

  it("does not follow a redirect (3xx is failed; the target gets nothing)", async () => {
    const target = await startWebPushReceiver();
    try {
      const sub = rx.subscribe();
      const elsewhere = target.subscribe();
      rx.failNext(307, { location: elsewhere.endpoint });
      assert.match(assertKind(await sender.send(deviceFor(sub), content()), "failed").reason, /redirect/);
      assert.equal(target.requests.length, 0);
    } finally {
      await target.close();
    }
  });

  it("a service that does not answer in time is retry", async () => {
    const sub = rx.subscribe();
    rx.stallNext();
    const quick = createWebPushSender({ vapid, allowPrivate: true, ca: rx.ca, timeoutMs: 300, ttlSeconds: 60 });
    try {
      assert.match(assertKind(await quick.send(deviceFor(sub), content()), "retry").reason, /within 300 ms/);
    } finally {
      await quick.close();
    }
  });

  it("a refused connection is retry", async () => {
    const gone = await startWebPushReceiver();
    const sub = gone.subscribe();
    await gone.close();
    assert.match(assertKind(await sender.send(deviceFor(sub), content()), "retry").reason, /ECONNREFUSED/);
  });

  it("throws at creation, not per device, for unusable VAPID settings", () => {
    const base = { allowPrivate: true, timeoutMs: 1000, ttlSeconds: 60 };
    assert.throws(() => createWebPushSender({ ...base, vapid: { ...vapid, subject: "not-a-contact" } }), /subject/i);
    assert.throws(() => createWebPushSender({ ...base, vapid: { ...vapid, privateKey: "c2hvcnQ" } }), /private key/i);
  });

  it("keys that cannot be encrypted for are invalid; a device of another kind is failed", async () => {
    const sub = rx.subscribe();
    const before = rx.requests.length;
    assertKind(await sender.send({ ...deviceFor(sub), p256dh: Buffer.alloc(64, 4).toString("base64url") }, content()), "invalid");
    assertKind(await sender.send({ ...deviceFor(sub), auth: "c2hvcnQ" }, content()), "invalid");
    const notOnCurve = Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 1)]).toString("base64url");
    assertKind(await sender.send({ ...deviceFor(sub), p256dh: notOnCurve }, content()), "invalid");
    assertKind(await sender.send({ ...deviceFor(sub), kind: "fcm" }, content()), "failed");
    assert.equal(rx.requests.length, before, "nothing was sent");
  });

  it("connects to the address it resolved the name to, resolving once (no second lookup)", async () => {
    const sub = rx.subscribe({ host: "push.example.test" });
    const lookups: string[] = [];
    const named = createWebPushSender({
      vapid,
      allowPrivate: true,
      ca: rx.ca,
      timeoutMs: 2000,
      ttlSeconds: 60,
      resolve: async (host) => {
        lookups.push(host);
        return ["127.0.0.1"];
      },
    });
    try {
      assertKind(await named.send(deviceFor(sub), content()), "sent");
      assert.deepEqual(lookups, ["push.example.test"]);
      assert.equal(rx.pushes.at(-1)?.vapid.aud, `https://push.example.test:${rx.port}`);
    } finally {
      await named.close();
    }
  });
});

describe("Web Push sender with the default policy (allowPrivate false)", () => {
  let rx: WebPushReceiver;
  let plain: WebPushReceiver;
  before(async () => {
    rx = await startWebPushReceiver();
    plain = await startWebPushReceiver({ tls: false });
  });
  after(async () => {
    await rx.close();
    await plain.close();
  });

  function strictSender(resolve?: (host: string) => Promise<readonly string[]>) {
    return createWebPushSender({ vapid, allowPrivate: false, ca: rx.ca, timeoutMs: 2000, ttlSeconds: 60, resolve });
  }

  async function refused(sender: ReturnType<typeof strictSender>, sub: ReceiverSubscription, reason: RegExp): Promise<void> {
    const got = assertKind(await sender.send(deviceFor(sub), content()), "failed");
    assert.match(got.reason, reason);
  }

  it("refuses http://127.0.0.1 and https://127.0.0.1 and https://localhost without sending", async () => {
    const sender = strictSender();
    try {
      await refused(sender, plain.subscribe(), /https:\/\//);
      await refused(sender, rx.subscribe(), /not a public address/);
      await refused(sender, rx.subscribe({ host: "localhost" }), /local name/);
      assert.equal(rx.requests.length + plain.requests.length, 0);
    } finally {
      await sender.close();
    }
  });

  it("refuses a public-looking name that resolves to 127.0.0.1, or to any non-public address among public ones", async () => {
    const answers: Record<string, string[]> = {
      "push.example.test": ["127.0.0.1"],
      "mixed.example.test": ["93.184.216.34", "127.0.0.1"],
      "v6.example.test": ["::ffff:127.0.0.1"],
    };
    const sender = strictSender(async (host) => answers[host] ?? []);
    try {
      await refused(sender, rx.subscribe({ host: "push.example.test" }), /resolves to 127\.0\.0\.1/);
      await refused(sender, rx.subscribe({ host: "mixed.example.test" }), /resolves to 127\.0\.0\.1/);
      await refused(sender, rx.subscribe({ host: "v6.example.test" }), /resolves to ::ffff:127\.0\.0\.1/);
      assert.equal(rx.requests.length, 0);
    } finally {
      await sender.close();
    }
  });
});
