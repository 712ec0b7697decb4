/**
 * The APNs receiver refuses what APNs refuses: requests are built by hand over
 * HTTP/2 and broken one rule at a time, so a sender spec that finds
 * `rejections` empty means the sender kept every rule.
 */
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import { SignJWT, importPKCS8 } from "jose";
import { type ApnsReceiver, makeApnsSigningKey, startApnsReceiver } from "./apns-receiver.js";

const TOPIC = "com.example.chat";
const key = makeApnsSigningKey();

async function providerToken(over: { kid?: string; iss?: string; iat?: number; pem?: string } = {}): Promise<string> {
  const k = await importPKCS8(over.pem ?? key.privateKeyPem, "ES256");
  return new SignJWT({})
    .setProtectedHeader({ alg: "ES256", kid: over.kid ?? key.keyId })
    .setIssuer(over.iss ?? key.teamId)
    .setIssuedAt(over.iat ?? Math.floor(Date.now() / 1000))
    .sign(k);
}

describe("APNs receiver checks", () => {
  let rx: ApnsReceiver;
  let client: http2.ClientHttp2Session;
  before(async () => {
    rx = await startApnsReceiver(key);
    client = http2.connect(rx.url, { ca: rx.ca });
  });
  after(async () => {
    client.destroy();
    await rx.close();
  });

  async function push(headers: http2.OutgoingHttpHeaders, body: string): Promise<{ status: number; reason: string | undefined }> {
    return new Promise((resolve, reject) => {
      const req = client.request({ ":method": "POST", ...headers });
      let status = 0;
      let text = "";
      req.on("response", (h) => {
        status = Number(h[":status"]);
      });
      req.setEncoding("utf8");
      req.on("data", (c: string) => {
        text += c;
      });
      req.on("end", () => resolve({ status, reason: text === "" ? undefined : (JSON.parse(text) as { reason?: string }).reason }));
      req.on("error", reject);
      req.end(body);
    });
  }

  const payload = JSON.stringify({ aps: { alert: { title: "t", body: "b" }, badge: 1 } });
  async function valid(token: string): Promise<http2.OutgoingHttpHeaders> {
    return {
      ":path": `/3/device/${token}`,
      authorization: `bearer ${await providerToken()}`,
      "apns-topic": TOPIC,
      "apns-push-type": "alert",
      "apns-priority": "10",
    };
  }

  it("accepts a well-formed push", async () => {
    const token = rx.addDevice(TOPIC);
    assert.deepEqual(await push(await valid(token), payload), { status: 200, reason: undefined });
    assert.equal(rx.pushes.length, 1);
    assert.deepEqual(rx.rejections, []);
  });

  it("refuses provider tokens that are missing, signed by another key, with another kid or iss, or older than an hour", async () => {
    const token = rx.addDevice(TOPIC);
    const cases: Array<[string | undefined, string]> = [
      [undefined, "MissingProviderToken"],
      [await providerToken({ pem: makeApnsSigningKey().privateKeyPem }), "InvalidProviderToken"],
      [await providerToken({ kid: "ABCDEFGHIJ" }), "InvalidProviderToken"],
      [await providerToken({ iss: "OTHERTEAM1" }), "InvalidProviderToken"],
      [await providerToken({ iat: Math.floor(Date.now() / 1000) - 3700 }), "ExpiredProviderToken"],
    ];
    for (const [jwt, reason] of cases) {
      const headers = await valid(token);
      if (jwt === undefined) delete headers.authorization;
      else headers.authorization = `bearer ${jwt}`;
      assert.deepEqual(await push(headers, payload), { status: 403, reason });
    }
  });

  it("refuses bad headers, bad device tokens and bad payloads with APNs' reasons", async () => {
    const token = rx.addDevice(TOPIC);
    const cases: Array<[http2.OutgoingHttpHeaders, string, number, string]> = [
      [{ "apns-topic": undefined }, payload, 400, "MissingTopic"],
      [{ "apns-topic": "com.example.other" }, payload, 400, "DeviceTokenNotForTopic"],
      [{ "apns-push-type": "shout" }, payload, 400, "InvalidPushType"],
      [{ "apns-priority": "7" }, payload, 400, "BadPriority"],
      [{ "apns-collapse-id": "c".repeat(65) }, payload, 400, "BadCollapseId"],
      [{ "apns-expiration": "tomorrow" }, payload, 400, "BadExpirationDate"],
      [{ ":path": "/3/device/xyz" }, payload, 400, "BadDeviceToken"],
      [{ ":path": `/3/device/${"0".repeat(64)}` }, payload, 400, "BadDeviceToken"],
      [{}, JSON.stringify({ aps: { alert: "x".repeat(4100) } }), 413, "PayloadTooLarge"],
      [{}, "", 400, "PayloadEmpty"],
      [{}, "not json", 400, "BadPayload"],
      [{}, JSON.stringify({ alert: "no aps" }), 400, "BadPayload"],
      [{}, JSON.stringify({ aps: { badge: 1 } }), 400, "BadPayload"],
    ];
    for (const [over, body, status, reason] of cases) {
      const headers: http2.OutgoingHttpHeaders = { ...(await valid(token)), ...over };
      for (const [k, v] of Object.entries(over)) if (v === undefined) delete headers[k];
      assert.deepEqual(await push(headers, body), { status, reason }, `${JSON.stringify(over)} ${body.slice(0, 30)}`);
    }
    rx.removeDevice(token);
    assert.deepEqual(await push(await valid(token), payload), { status: 410, reason: "Unregistered" });
  });
});
