import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import type { Device } from "../../core/model.js";
import type { PushContent, PushOutcome } from "../../core/ports.js";
import { type FcmReceiver, fcmError, makeServiceAccount, startFcmReceiver } from "../../../test/support/push-receivers/fcm-receiver.js";
import { FCM_SCOPE, createFcmSender } from "./fcm-sender.js";
import { MAX_PUSH_BYTES, webPushTopic } from "./push-payload.js";

const account = makeServiceAccount();

function device(token: string): Device {
  return { id: "dev-1", userId: "user-1", kind: "fcm", token, p256dh: "", auth: "", topic: "", createdAt: 0 };
}

function content(over: Partial<PushContent> = {}): PushContent {
  return {
    groupId: "0b7e3f5c-6a52-4c1e-9a43-5d8f1e2a7c10",
    groupName: "Climbing crew",
    newestSeq: 42,
    count: 4,
    latestSender: "carol",
    preview: "who has the rope?",
    badge: 9,
    collapseKey: "g:0b7e3f5c-6a52-4c1e-9a43-5d8f1e2a7c10",
    ...over,
  };
}

function assertKind<K extends PushOutcome["kind"]>(got: PushOutcome, kind: K): Extract<PushOutcome, { kind: K }> {
  assert.equal(got.kind, kind, `expected ${kind}, got ${JSON.stringify(got)}`);
  return got as Extract<PushOutcome, { kind: K }>;
}

function senderFor(rx: FcmReceiver, over: { projectId?: string; privateKey?: string } = {}) {
  return createFcmSender({
    projectId: over.projectId ?? account.projectId,
    clientEmail: account.clientEmail,
    privateKey: over.privateKey ?? account.privateKeyPem,
    tokenUrl: rx.tokenUrl,
    baseUrl: rx.url,
    ca: rx.ca,
    timeoutMs: 2000,
  });
}

describe("FCM sender against the loopback FCM receiver and token endpoint (https, test CA)", () => {
  let rx: FcmReceiver;
  let sender: ReturnType<typeof createFcmSender>;
  before(async () => {
    rx = await startFcmReceiver(account);
    sender = senderFor(rx);
  });
  after(async () => {
    await sender.close();
    await rx.close();
  });

  it("exchanges a service-account assertion for a token and sends a message FCM accepts", async () => {
    const token = rx.addToken();
    const c = content();
    assertKind(await sender.send(device(token), c), "sent");
    assert.deepEqual(rx.rejections, []);
    const grant = rx.grants.at(-1);
    assert.ok(grant);
    assert.equal(grant.claims.iss, account.clientEmail);
    assert.equal(grant.claims.aud, rx.tokenUrl);
    assert.equal(grant.claims.scope, FCM_SCOPE);
    assert.ok(grant.claims.exp - grant.claims.iat <= 3600);
    const push = rx.pushes.at(-1);
    assert.ok(push);
    assert.equal(push.accessToken, grant.accessToken);
    const m = push.message;
    assert.equal(m.token, token);
    assert.deepEqual(m.notification, { title: "Climbing crew", body: "4 new messages in Climbing crew\ncarol: who has the rope?" });
    assert.deepEqual(m.data, { group_id: c.groupId, newest_seq: "42", count: "4", badge: "9", sender: "carol" });
    assert.equal(m.android?.collapse_key, c.collapseKey);
    assert.equal(m.android?.notification?.tag, c.collapseKey);
    assert.equal(m.apns?.headers?.["apns-collapse-id"], c.collapseKey);
    assert.equal(m.apns?.payload?.aps?.badge, 9);
    assert.equal(m.webpush?.headers?.Topic, webPushTopic(c.collapseKey));
  });

  it("caches the access token across sends, and one token request serves concurrent sends", async () => {
    const fresh = senderFor(rx);
    try {
      const token = rx.addToken();
      const grantsBefore = rx.grants.length;
      const pushesBefore = rx.pushes.length;
      const outcomes = await Promise.all(Array.from({ length: 5 }, (_, i) => fresh.send(device(token), content({ newestSeq: 100 + i }))));
      for (const o of outcomes) assertKind(o, "sent");
      assertKind(await fresh.send(device(token), content()), "sent");
      assert.equal(rx.grants.length, grantsBefore + 1);
      const used = new Set(rx.pushes.slice(pushesBefore).map((p) => p.accessToken));
      assert.equal(rx.pushes.length, pushesBefore + 6);
      assert.deepEqual([...used], [rx.grants.at(-1)?.accessToken]);
    } finally {
      await fresh.close();
    }
  });

  it("401 drops the cached token (retry) and the next send fetches a new one", async () => {
    const token = rx.addToken();
    assertKind(await sender.send(device(token), content()), "sent");
    const grantsBefore = rx.grants.length;
    rx.revokeAccessTokens();
    assert.match(assertKind(await sender.send(device(token), content()), "retry").reason, /401/);
    assertKind(await sender.send(device(token), content()), "sent");
    assert.equal(rx.grants.length, grantsBefore + 1);
    assert.equal(rx.pushes.at(-1)?.accessToken, rx.grants.at(-1)?.accessToken);
    rx.rejections.length = 0;
  });

  it("an UNREGISTERED token (404) and a token FCM does not know (400 INVALID_ARGUMENT on message.token) are invalid", async () => {
    const gone = rx.addToken();
    rx.removeToken(gone);
    assert.match(assertKind(await sender.send(device(gone), content()), "invalid").reason, /UNREGISTERED/);
    assert.match(assertKind(await sender.send(device("bogus-token"), content()), "invalid").reason, /registration token/);
    rx.rejections.length = 0;
  });

  it("429 with Retry-After is retry with afterMs; 500 and 503 are retry", async () => {
    const token = rx.addToken();
    rx.failNext(429, { "retry-after": "12" }, fcmError(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"));
    assert.equal(assertKind(await sender.send(device(token), content()), "retry").afterMs, 12_000);
    rx.failNext(500, {}, fcmError(500, "INTERNAL", "INTERNAL"));
    assert.equal(assertKind(await sender.send(device(token), content()), "retry").afterMs, undefined);
    rx.failNext(503, { "retry-after": "3" }, fcmError(503, "UNAVAILABLE", "UNAVAILABLE"));
    assert.equal(assertKind(await sender.send(device(token), content()), "retry").afterMs, 3000);
    assertKind(await sender.send(device(token), content()), "sent");
  });

  it("a 404 without UNREGISTERED and a 403 SENDER_ID_MISMATCH are failed, not invalid", async () => {
    const token = rx.addToken();
    rx.failNext(404, {}, fcmError(404, "NOT_FOUND", undefined, "Requested entity was not found."));
    assertKind(await sender.send(device(token), content()), "failed");
    const otherProject = senderFor(rx, { projectId: "someone-elses-project" });
    try {
      assert.match(assertKind(await otherProject.send(device(token), content()), "failed").reason, /SENDER_ID_MISMATCH/);
    } finally {
      await otherProject.close();
    }
    rx.rejections.length = 0;
  });

  it("the token endpoint: 503 is retry, a refused assertion (wrong key) is failed", async () => {
    const token = rx.addToken();
    const fresh = senderFor(rx);
    const impostor = senderFor(rx, { privateKey: makeServiceAccount().privateKeyPem });
    try {
      rx.failTokenNext(503, { "retry-after": "5" }, { error: "temporarily_unavailable" });
      assert.equal(assertKind(await fresh.send(device(token), content()), "retry").afterMs, 5000);
      assertKind(await fresh.send(device(token), content()), "sent");
      const sendsBefore = rx.sendRequests;
      assert.match(assertKind(await impostor.send(device(token), content()), "failed").reason, /token endpoint answered 400/);
      assert.match(rx.rejections.at(-1)?.reason ?? "", /assertion rejected/);
      assert.equal(rx.sendRequests, sendsBefore, "no send without a token");
      rx.rejections.length = 0;
    } finally {
      await fresh.close();
      await impostor.close();
    }
  });

  it("keeps the request ≤ 4 KB with a huge preview", async () => {
    const token = rx.addToken();
    assertKind(await sender.send(device(token), content({ preview: "ж".repeat(10_000) })), "sent");
    assert.deepEqual(rx.rejections, []);
    const push = rx.pushes.at(-1);
    assert.ok(push);
    assert.ok(push.bodyBytes <= MAX_PUSH_BYTES, `${push.bodyBytes} bytes`);
    assert.ok(push.message.notification?.body?.endsWith("ж…"));
  });

  it("fetches a new token when the cached one is about to expire", async () => {
    const shortLived = await startFcmReceiver(account, { tokenTtlSeconds: 1 });
    const s = senderFor(shortLived);
    try {
      const token = shortLived.addToken();
      assertKind(await s.send(device(token), content()), "sent");
      await sleep(1100);
      assertKind(await s.send(device(token), content()), "sent");
      assert.equal(shortLived.grants.length, 2);
      assert.deepEqual(shortLived.rejections, []);
    } finally {
      await s.close();
      await shortLived.close();
    }
  });

  it("an unreachable FCM is retry", async () => {
    const gone = await startFcmReceiver(account);
    const s = senderFor(gone);
    await gone.close();
    try {
      assert.match(assertKind(await s.send(device("t"), content()), "retry").reason, /ECONNREFUSED/);
    } finally {
      await s.close();
    }
  });
});
