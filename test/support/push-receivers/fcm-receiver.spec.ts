/**
 * The FCM receiver refuses what Google's token endpoint and FCM v1 refuse:
 * requests are built by hand and broken one rule at a time, so a sender spec
 * that finds `rejections` empty means the sender kept every rule.
 */
import assert from "node:assert/strict";
import * as https from "node:https";
import { after, before, describe, it } from "node:test";
import { SignJWT, importPKCS8 } from "jose";
import { type FcmReceiver, makeServiceAccount, startFcmReceiver } from "./fcm-receiver.js";

const account = makeServiceAccount();
const SCOPE = "https://www.googleapis.com/auth/firebase.messaging";

describe("FCM receiver checks", () => {
  let rx: FcmReceiver;
  before(async () => {
    rx = await startFcmReceiver(account);
  });
  after(async () => rx.close());

  async function post(path: string, headers: Record<string, string>, body: string): Promise<{ status: number; json: Record<string, unknown> }> {
    return new Promise((resolve, reject) => {
      const req = https.request(`${rx.url}${path}`, { method: "POST", headers, ca: rx.ca }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          text += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  async function assertion(over: { iss?: string; aud?: string; scope?: string; lifetime?: number; pem?: string } = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ scope: over.scope ?? SCOPE })
      .setProtectedHeader({ alg: "RS256", typ: "JWT" })
      .setIssuer(over.iss ?? account.clientEmail)
      .setAudience(over.aud ?? rx.tokenUrl)
      .setIssuedAt(now)
      .setExpirationTime(now + (over.lifetime ?? 3600))
      .sign(await importPKCS8(over.pem ?? account.privateKeyPem, "RS256"));
  }

  const form = (grantType: string, jwt: string) =>
    new URLSearchParams({ grant_type: grantType, assertion: jwt }).toString();
  const FORM = { "content-type": "application/x-www-form-urlencoded" };
  const BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer";

  async function accessToken(): Promise<string> {
    const got = await post("/token", FORM, form(BEARER, await assertion()));
    assert.equal(got.status, 200);
    return String(got.json.access_token);
  }

  it("issues a token for a valid assertion and refuses broken ones", async () => {
    const ok = await post("/token", FORM, form(BEARER, await assertion()));
    assert.equal(ok.status, 200);
    assert.equal(ok.json.token_type, "Bearer");
    assert.equal(ok.json.expires_in, 3600);
    const cases: Array<[string, string]> = [
      ["client_credentials", await assertion()],
      [BEARER, await assertion({ iss: "someone@else.iam.gserviceaccount.com" })],
      [BEARER, await assertion({ aud: "https://oauth2.googleapis.com/token" })],
      [BEARER, await assertion({ scope: "https://www.googleapis.com/auth/cloud-platform.read-only" })],
      [BEARER, await assertion({ lifetime: 7200 })],
      [BEARER, await assertion({ pem: makeServiceAccount().privateKeyPem })],
    ];
    const grants = rx.grants.length;
    for (const [grantType, jwt] of cases) {
      assert.equal((await post("/token", FORM, form(grantType, jwt))).status, 400, `${grantType} ${jwt.slice(-10)}`);
    }
    assert.equal(rx.grants.length, grants);
  });

  it("sends only with a live bearer token and a well-formed message", async () => {
    const token = rx.addToken();
    const bearer = await accessToken();
    const good = { message: { token, notification: { title: "t", body: "b" }, data: { a: "1" } } };
    const send = (auth: string, body: unknown) =>
      post(`/v1/projects/${account.projectId}/messages:send`, { authorization: auth, "content-type": "application/json" }, JSON.stringify(body));
    const ok = await send(`Bearer ${bearer}`, good);
    assert.equal(ok.status, 200);
    assert.match(String(ok.json.name), new RegExp(`^projects/${account.projectId}/messages/`));
    assert.equal((await send("Bearer ya29.made-up", good)).status, 401);
    const bad: Array<[unknown, RegExp]> = [
      [{ message: { ...good.message, priority: "high" } }, /Unknown name "priority"/],
      [{ message: { ...good.message, data: { n: 1 } } }, /values must be strings/],
      [{ message: { ...good.message, data: { "google.x": "1" } } }, /data payload key/],
      [{ message: { ...good.message, android: { collapse_key: 3 } } }, /collapse_key/],
      [{ message: { ...good.message, apns: { payload: { badge: 1 } } } }, /aps/],
      [{ message: { ...good.message, webpush: { headers: { Topic: "a:b" } } } }, /Topic/],
      [{ message: { ...good.message, data: { big: "x".repeat(5000) } } }, /too big/],
      [{ message: { ...good.message, token: "never-registered" } }, /registration token/],
    ];
    for (const [body, reason] of bad) {
      const got = await send(`Bearer ${bearer}`, body);
      assert.equal(got.status, 400);
      assert.match(String((got.json.error as { message: string }).message), reason);
    }
    rx.removeToken(token);
    const gone = await send(`Bearer ${bearer}`, good);
    assert.equal(gone.status, 404);
    assert.deepEqual((gone.json.error as { details: unknown[] }).details, [
      { "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode: "UNREGISTERED" },
    ]);
  });
});
