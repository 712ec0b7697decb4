/**
 * The Web Push receiver refuses what a push service refuses: these requests
 * are built with web-push and then broken one rule at a time, so a sender
 * spec that finds `rejections` empty means the sender kept every rule.
 */
import assert from "node:assert/strict";
import * as https from "node:https";
import { after, before, describe, it } from "node:test";
import { SignJWT, importJWK } from "jose";
import webpush from "web-push";
import { type ReceiverSubscription, type WebPushReceiver, makeSubscriptionKeys, makeVapidKeys, startWebPushReceiver } from "./web-push-receiver.js";

const vapid = makeVapidKeys();

async function post(rx: WebPushReceiver, url: string, headers: Record<string, string | number>, body: Buffer | null): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method: "POST", headers, ca: rx.ca }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end(body ?? undefined);
  });
}

function details(sub: ReceiverSubscription, payload = "hello", over: Partial<webpush.RequestOptions> = {}) {
  const d = webpush.generateRequestDetails({ endpoint: sub.endpoint, keys: { p256dh: sub.p256dh, auth: sub.auth } }, payload, {
    vapidDetails: vapid,
    TTL: 60,
    contentEncoding: "aes128gcm",
    ...over,
  });
  return { headers: { ...d.headers } as Record<string, string | number>, body: d.body };
}

/** vapidHeader signs a VAPID JWT with the test's key and claims of our choosing. */
async function vapidHeader(claims: { aud: string; exp: number; sub: string }): Promise<string> {
  const pub = Buffer.from(vapid.publicKey, "base64url");
  const key = await importJWK(
    {
      kty: "EC",
      crv: "P-256",
      d: vapid.privateKey,
      x: pub.subarray(1, 33).toString("base64url"),
      y: pub.subarray(33).toString("base64url"),
    },
    "ES256",
  );
  const jwt = await new SignJWT(claims).setProtectedHeader({ alg: "ES256", typ: "JWT" }).sign(key);
  return `vapid t=${jwt}, k=${vapid.publicKey}`;
}

describe("Web Push receiver checks", () => {
  let rx: WebPushReceiver;
  before(async () => {
    rx = await startWebPushReceiver();
  });
  after(async () => rx.close());

  const expectRefusal = async (status: number, reason: RegExp, send: () => Promise<number>) => {
    const pushes = rx.pushes.length;
    assert.equal(await send(), status);
    assert.equal(rx.pushes.length, pushes, "not accepted");
    assert.match(rx.rejections.at(-1)?.reason ?? "", reason);
  };

  it("accepts a well-formed push and decrypts it", async () => {
    const sub = rx.subscribe();
    const d = details(sub, '{"hi":1}', { topic: "abc", urgency: "high" });
    assert.equal(await post(rx, sub.endpoint, d.headers, d.body), 201);
    assert.deepEqual(rx.rejections, []);
    assert.deepEqual(rx.pushes.at(-1)?.json, { hi: 1 });
    assert.equal(rx.pushes.at(-1)?.topic, "abc");
    assert.equal(rx.pushes.at(-1)?.urgency, "high");
  });

  it("refuses a VAPID token for another audience, expired, too far ahead, or with a bad subject", async () => {
    const sub = rx.subscribe();
    const now = Math.floor(Date.now() / 1000);
    const cases: Array<[{ aud: string; exp: number; sub: string }, RegExp]> = [
      [{ aud: "https://push.example.com", exp: now + 600, sub: vapid.subject }, /aud/],
      [{ aud: rx.url, exp: now - 10, sub: vapid.subject }, /exp/],
      [{ aud: rx.url, exp: now + 48 * 3600, sub: vapid.subject }, /24 h/],
      [{ aud: rx.url, exp: now + 600, sub: "ftp://example.com" }, /sub/],
    ];
    for (const [claims, reason] of cases) {
      const d = details(sub);
      d.headers.Authorization = await vapidHeader(claims);
      await expectRefusal(401, reason, () => post(rx, sub.endpoint, d.headers, d.body));
    }
    const d = details(sub);
    d.headers.Authorization = String(d.headers.Authorization).replace(/k=.*/, `k=${makeVapidKeys().publicKey}`);
    await expectRefusal(401, /signature/, () => post(rx, sub.endpoint, d.headers, d.body));
    const noAuth = details(sub);
    delete noAuth.headers.Authorization;
    await expectRefusal(401, /vapid/, () => post(rx, sub.endpoint, noAuth.headers, noAuth.body));
  });

  it("refuses a push without TTL, with a bad Topic, in aesgcm, or too big", async () => {
    const sub = rx.subscribe();
    const noTtl = details(sub);
    delete noTtl.headers.TTL;
    await expectRefusal(400, /TTL/, () => post(rx, sub.endpoint, noTtl.headers, noTtl.body));
    const badTopic = details(sub);
    badTopic.headers.Topic = "not:valid";
    await expectRefusal(400, /Topic/, () => post(rx, sub.endpoint, badTopic.headers, badTopic.body));
    const legacy = details(sub, "hello", { contentEncoding: "aesgcm" });
    await expectRefusal(401, /vapid/i, () => post(rx, sub.endpoint, legacy.headers, legacy.body));
    const mislabelled = details(sub);
    mislabelled.headers["Content-Encoding"] = "aesgcm";
    await expectRefusal(400, /Content-Encoding/, () => post(rx, sub.endpoint, mislabelled.headers, mislabelled.body));
    const big = details(sub, "x".repeat(5000));
    await expectRefusal(413, /over 4096/, () => post(rx, sub.endpoint, big.headers, big.body));
  });

  it("refuses a body encrypted for other keys", async () => {
    const sub = rx.subscribe();
    const other = makeSubscriptionKeys();
    const d = details({ ...sub, p256dh: other.p256dh, auth: other.auth });
    await expectRefusal(400, /decrypt/, () => post(rx, sub.endpoint, d.headers, d.body));
  });

  it("answers 404 for an unknown endpoint and 410 for an unsubscribed one", async () => {
    const sub = rx.subscribe();
    const d = details(sub);
    await expectRefusal(404, /no subscription/, () => post(rx, `${rx.url}/push/unknown`, d.headers, d.body));
    rx.unsubscribe(sub);
    await expectRefusal(410, /unsubscribed/, () => post(rx, sub.endpoint, d.headers, d.body));
  });
});
