/**
 * A Web Push service on loopback that checks what a push service checks and
 * decrypts what a browser decrypts: RFC 8030 (POST to the subscription's
 * endpoint, TTL, Topic, Urgency; 201 Created), RFC 8292 (VAPID: `vapid
 * t=<jwt>, k=<key>`, an ES256 JWT signed by k with aud = the endpoint's
 * origin, exp in the future and at most 24 h ahead, sub a mailto: or https:
 * URL) and RFC 8291 (Content-Encoding aes128gcm, one record of at most 4096
 * bytes, decrypted with the subscription's private key and auth secret).
 * Requests that break a rule are answered as a push service would (400, 401,
 * 403, 404, 410, 413) and listed in `rejections`; a test asserts it empty.
 */
import { type ECDH, createECDH, randomBytes, randomUUID } from "node:crypto";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { createRequire } from "node:module";
import { importJWK, jwtVerify } from "jose";
import webpush from "web-push";
import { ReplyScript } from "./reply-script.js";
import { testCertificate } from "./test-certs.js";

const ece = createRequire(import.meta.url)("http_ece") as {
  decrypt(body: Buffer, params: { version: "aes128gcm"; privateKey: ECDH; authSecret: string }): Buffer;
};

/** PushSubscriptionKeys is a browser's half of a subscription: the public key and auth secret it shares (base64url), and the private key it keeps. */
export interface PushSubscriptionKeys {
  readonly p256dh: string;
  readonly auth: string;
  readonly ecdh: ECDH;
}

/** makeSubscriptionKeys makes fresh subscription keys: a P-256 ECDH key pair and a 16-byte auth secret. */
export function makeSubscriptionKeys(): PushSubscriptionKeys {
  const ecdh = createECDH("prime256v1");
  ecdh.generateKeys();
  return { p256dh: ecdh.getPublicKey().toString("base64url"), auth: randomBytes(16).toString("base64url"), ecdh };
}

/** makeVapidKeys makes an application server's VAPID keys (base64url, as web-push prints them) with a mailto: subject. */
export function makeVapidKeys(subject = "mailto:push-test@example.com"): { subject: string; publicKey: string; privateKey: string } {
  return { subject, ...webpush.generateVAPIDKeys() };
}

/** ReceiverSubscription is a subscription at the receiver: its endpoint and keys (the test keeps the private half). */
export interface ReceiverSubscription extends PushSubscriptionKeys {
  readonly id: string;
  readonly endpoint: string;
}

/** WebPushDelivery is one accepted, verified and decrypted push. */
export interface WebPushDelivery {
  readonly subscriptionId: string;
  readonly endpoint: string;
  readonly ttl: number;
  readonly topic: string | undefined;
  readonly urgency: string | undefined;
  /** vapid holds the verified claims and the k parameter. */
  readonly vapid: { readonly sub: string; readonly aud: string; readonly exp: number; readonly k: string };
  /** bodyBytes is the encrypted body's size. */
  readonly bodyBytes: number;
  /** plaintext is the decrypted payload. */
  readonly plaintext: string;
  /** json is the plaintext parsed, or undefined if it is not JSON. */
  readonly json: unknown;
}

/** ReceivedRequest is any request that reached the receiver. */
export interface ReceivedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly bodyBytes: number;
}

/** Rejection is a request the receiver refused because it broke the protocol. */
export interface Rejection {
  readonly path: string;
  readonly status: number;
  readonly reason: string;
}

/** WebPushReceiver is a running receiver. */
export interface WebPushReceiver {
  /** url is the origin, e.g. https://127.0.0.1:40123. */
  readonly url: string;
  /** ca is the certificate to trust (undefined for plain http). */
  readonly ca: string | undefined;
  readonly port: number;
  /**
   * subscribe makes a subscription with an endpoint under this receiver
   * (`host` replaces 127.0.0.1 in it; the test must resolve that name to
   * 127.0.0.1). With `applicationServerKey`, pushes signed with another VAPID
   * key are refused (403), as browsers' push services do.
   */
  subscribe(opts?: { host?: string; applicationServerKey?: string }): ReceiverSubscription;
  /** unsubscribe makes the subscription's endpoint answer 410 Gone from now on. */
  unsubscribe(sub: ReceiverSubscription): void;
  readonly pushes: WebPushDelivery[];
  readonly requests: ReceivedRequest[];
  readonly rejections: Rejection[];
  /** failNext answers the next `times` well-formed pushes with this instead of 201 (they are not counted as pushes). */
  failNext(status: number, headers?: Readonly<Record<string, string>>, body?: string | object, times?: number): void;
  /** stallNext never answers the next `times` well-formed pushes. */
  stallNext(times?: number): void;
  close(): Promise<void>;
}

/** MAX_BODY is the largest encrypted body a push service takes (RFC 8291: 4096 bytes). */
const MAX_BODY = 4096;

/** startWebPushReceiver starts a receiver on 127.0.0.1 (a free port): https with the test certificate unless `tls` is false. */
export async function startWebPushReceiver(opts: { tls?: boolean } = {}): Promise<WebPushReceiver> {
  const tls = opts.tls ?? true;
  const cert = tls ? testCertificate() : undefined;
  const subs = new Map<string, { sub: ReceiverSubscription; applicationServerKey: string | undefined; gone: boolean }>();
  const pushes: WebPushDelivery[] = [];
  const requests: ReceivedRequest[] = [];
  const rejections: Rejection[] = [];
  const script = new ReplyScript();
  const stalled = new Set<http.ServerResponse>();

  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size <= 64 * 1024) chunks.push(c);
    });
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const path = req.url ?? "";
      requests.push({ method: req.method ?? "", path, headers: req.headers, bodyBytes: size });
      const reject = (status: number, reason: string) => {
        rejections.push({ path, status, reason });
        res.writeHead(status, { "content-type": "text/plain" }).end(reason);
      };
      void handlePush(req, path, body, size)
        .then((result) => {
          if (typeof result === "object" && "status" in result) return reject(result.status, result.reason);
          const scripted = script.take();
          if (scripted?.stall === true) {
            stalled.add(res);
            return;
          }
          if (scripted !== undefined) return void res.writeHead(scripted.status, scripted.headers).end(scripted.body);
          pushes.push(result);
          res.writeHead(201, { location: `/message/${randomUUID()}` }).end();
        })
        .catch((err: unknown) => reject(500, `receiver bug: ${String(err)}`));
    });
  };

  async function handlePush(
    req: http.IncomingMessage,
    path: string,
    body: Buffer,
    size: number,
  ): Promise<WebPushDelivery | { status: number; reason: string }> {
    if (req.method !== "POST") return { status: 405, reason: `method ${req.method} is not POST` };
    const m = /^\/push\/([A-Za-z0-9_-]+)$/.exec(path);
    const entry = m?.[1] !== undefined ? subs.get(m[1]) : undefined;
    if (entry === undefined) return { status: 404, reason: `no subscription at ${path}` };
    if (entry.gone) return { status: 410, reason: "subscription expired or unsubscribed" };

    // RFC 8292: the VAPID authorization.
    const auth = req.headers.authorization ?? "";
    const vm = /^vapid\s+(.+)$/i.exec(auth);
    if (vm?.[1] === undefined) return { status: 401, reason: `Authorization is not "vapid t=…, k=…": ${auth.slice(0, 40)}` };
    const params = new Map(
      vm[1].split(",").map((p) => {
        const i = p.indexOf("=");
        return [p.slice(0, i).trim().toLowerCase(), p.slice(i + 1).trim()] as const;
      }),
    );
    const t = params.get("t");
    const k = params.get("k");
    if (t === undefined || k === undefined) return { status: 401, reason: "vapid authorization lacks t or k" };
    const kBytes = Buffer.from(k, "base64url");
    if (kBytes.length !== 65 || kBytes[0] !== 4) return { status: 401, reason: "vapid k is not an uncompressed P-256 key" };
    if (entry.applicationServerKey !== undefined && entry.applicationServerKey !== k) {
      return { status: 403, reason: "vapid k is not the subscription's applicationServerKey" };
    }
    const origin = `${tls ? "https" : "http"}://${(req.headers.host ?? "").toLowerCase()}`;
    let claims: { sub: string; aud: string; exp: number };
    try {
      const key = await importJWK(
        { kty: "EC", crv: "P-256", x: kBytes.subarray(1, 33).toString("base64url"), y: kBytes.subarray(33).toString("base64url") },
        "ES256",
      );
      const { payload } = await jwtVerify(t, key, { algorithms: ["ES256"], audience: origin, requiredClaims: ["exp", "sub", "aud"] });
      claims = { sub: String(payload.sub), aud: String(payload.aud), exp: Number(payload.exp) };
    } catch (err) {
      return { status: 401, reason: `vapid JWT rejected: ${err instanceof Error ? err.message : String(err)}` };
    }
    if (claims.exp > Date.now() / 1000 + 24 * 3600 + 60) return { status: 401, reason: "vapid exp is more than 24 h ahead" };
    if (!/^(mailto:|https:)/.test(claims.sub)) return { status: 401, reason: `vapid sub ${claims.sub} is not a mailto: or https: URL` };

    // RFC 8030: TTL (required), Topic, Urgency.
    const ttlText = req.headers.ttl;
    if (typeof ttlText !== "string" || !/^\d+$/.test(ttlText)) return { status: 400, reason: "TTL header missing or not a number" };
    const topic = header(req, "topic");
    if (topic !== undefined && !/^[A-Za-z0-9_-]{1,32}$/.test(topic)) return { status: 400, reason: `Topic ${topic} is not 1-32 base64url characters` };
    const urgency = header(req, "urgency");
    if (urgency !== undefined && !["very-low", "low", "normal", "high"].includes(urgency)) return { status: 400, reason: `Urgency ${urgency} is unknown` };

    // RFC 8291: one aes128gcm record.
    if (header(req, "content-encoding") !== "aes128gcm") return { status: 400, reason: `Content-Encoding ${header(req, "content-encoding")} is not aes128gcm` };
    if (size > MAX_BODY) return { status: 413, reason: `body of ${size} bytes is over ${MAX_BODY}` };
    if (body.length < 21 + 65 + 17) return { status: 400, reason: "body too short for an aes128gcm header and record" };
    const rs = body.readUInt32BE(16);
    const idlen = body.readUInt8(20);
    if (idlen !== 65) return { status: 400, reason: `aes128gcm keyid is ${idlen} bytes, not the sender's 65-byte public key` };
    if (body.length - 21 - idlen > rs) return { status: 400, reason: "the body is more than one aes128gcm record" };
    let plaintext: string;
    try {
      plaintext = ece.decrypt(body, { version: "aes128gcm", privateKey: entry.sub.ecdh, authSecret: entry.sub.auth }).toString("utf8");
    } catch (err) {
      return { status: 400, reason: `cannot decrypt: ${err instanceof Error ? err.message : String(err)}` };
    }
    let json: unknown;
    try {
      json = JSON.parse(plaintext);
    } catch {
      json = undefined;
    }
    return {
      subscriptionId: entry.sub.id,
      endpoint: entry.sub.endpoint,
      ttl: Number(ttlText),
      topic,
      urgency,
      vapid: { ...claims, k },
      bodyBytes: size,
      plaintext,
      json,
    };
  }

  const server = tls ? https.createServer({ cert: cert?.cert, key: cert?.key }, handler) : http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const scheme = tls ? "https" : "http";

  return {
    url: `${scheme}://127.0.0.1:${port}`,
    ca: cert?.cert,
    port,
    subscribe(o = {}) {
      const id = randomBytes(12).toString("base64url");
      const sub: ReceiverSubscription = { id, endpoint: `${scheme}://${o.host ?? "127.0.0.1"}:${port}/push/${id}`, ...makeSubscriptionKeys() };
      subs.set(id, { sub, applicationServerKey: o.applicationServerKey, gone: false });
      return sub;
    },
    unsubscribe(sub) {
      const entry = subs.get(sub.id);
      if (entry !== undefined) entry.gone = true;
    },
    pushes,
    requests,
    rejections,
    failNext: (status, headers, body, times) => script.failNext(status, headers, body, times),
    stallNext: (times) => script.stallNext(times),
    async close() {
      for (const res of stalled) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** header returns a single-valued request header, or undefined. */
function header(req: http.IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === "string" ? v : undefined;
}
