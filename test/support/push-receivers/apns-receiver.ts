/**
 * An APNs provider API on loopback: an HTTP/2 server (TLS with the test
 * certificate, or h2c when `tls` is false) that checks what APNs checks for
 * token-based authentication: `POST /3/device/<hex token>`, the ES256
 * provider token in `authorization: bearer` (signature by the team's key,
 * kid, iss = team id, iat within the last hour), apns-topic (the device's),
 * apns-push-type, apns-priority, apns-collapse-id (≤ 64 bytes),
 * apns-expiration, and a JSON body of at most 4096 bytes with an aps
 * dictionary. It answers as APNs does: 200 with apns-id, or an error status
 * with {"reason": …} (410 with a timestamp for a removed device). Refusals
 * are listed in `rejections`.
 */
import { type KeyObject, generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { decodeProtectedHeader, jwtVerify } from "jose";
import { ReplyScript } from "./reply-script.js";
import { testCertificate } from "./test-certs.js";

/** ApnsSigningKey is a team's token-signing key: what the sender is configured with (PEM) and what the receiver verifies with. */
export interface ApnsSigningKey {
  readonly keyId: string;
  readonly teamId: string;
  /** privateKeyPem is PKCS#8 PEM, as in a .p8 file. */
  readonly privateKeyPem: string;
  readonly publicKey: KeyObject;
}

/** makeApnsSigningKey makes a fresh P-256 key with a 10-character key id and team id. */
export function makeApnsSigningKey(): ApnsSigningKey {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const id = () => randomBytes(8).toString("hex").toUpperCase().slice(0, 10);
  return { keyId: id(), teamId: id(), privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(), publicKey };
}

/** ApnsDelivery is one accepted push. */
export interface ApnsDelivery {
  readonly deviceToken: string;
  readonly topic: string;
  readonly pushType: string;
  readonly priority: string | undefined;
  readonly collapseId: string | undefined;
  readonly expiration: string | undefined;
  readonly apnsId: string;
  /** providerToken is the bearer JWT the push carried. */
  readonly providerToken: string;
  readonly bodyBytes: number;
  readonly payload: Record<string, unknown>;
}

/** ApnsRequest is any request that reached the receiver. */
export interface ApnsRequest {
  readonly path: string;
  readonly headers: http2.IncomingHttpHeaders;
  readonly bodyBytes: number;
}

/** ApnsRejection is a request the receiver refused: status and APNs reason. */
export interface ApnsRejection {
  readonly path: string;
  readonly status: number;
  readonly reason: string;
}

/** ApnsReceiver is a running receiver. */
export interface ApnsReceiver {
  /** url is the origin, e.g. https://127.0.0.1:40123. */
  readonly url: string;
  /** ca is the certificate to trust (undefined for h2c). */
  readonly ca: string | undefined;
  /** addDevice registers a device of the app `topic` and returns its token (64 hex digits). */
  addDevice(topic: string): string;
  /** removeDevice makes the token answer 410 Unregistered from now on. */
  removeDevice(token: string): void;
  readonly pushes: ApnsDelivery[];
  readonly requests: ApnsRequest[];
  readonly rejections: ApnsRejection[];
  /** connections counts the HTTP/2 sessions clients opened. */
  readonly connections: number;
  /** failNext answers the next `times` valid pushes with this (pass `{reason}` as the body for APNs' form). */
  failNext(status: number, headers?: Readonly<Record<string, string>>, body?: string | object, times?: number): void;
  /** stallNext never answers the next `times` valid pushes. */
  stallNext(times?: number): void;
  /** dropConnections closes every client session (GOAWAY), as APNs does now and then. */
  dropConnections(): void;
  close(): Promise<void>;
}

/** The apns-push-type values APNs knows. */
const PUSH_TYPES = ["alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity", "pushtotalk"];

/** startApnsReceiver starts a receiver on 127.0.0.1 (a free port) that trusts provider tokens signed with `key`. */
export async function startApnsReceiver(key: Pick<ApnsSigningKey, "keyId" | "teamId" | "publicKey">, opts: { tls?: boolean } = {}): Promise<ApnsReceiver> {
  const tls = opts.tls ?? true;
  const cert = tls ? testCertificate() : undefined;
  const devices = new Map<string, { topic: string; removedAt: number | undefined }>();
  const pushes: ApnsDelivery[] = [];
  const requests: ApnsRequest[] = [];
  const rejections: ApnsRejection[] = [];
  const script = new ReplyScript();
  const sessions = new Set<http2.ServerHttp2Session>();
  let connections = 0;

  const server = tls ? http2.createSecureServer({ cert: cert?.cert, key: cert?.key, allowHTTP1: false }) : http2.createServer();
  server.on("session", (s) => {
    connections += 1;
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
    s.on("error", () => {});
  });
  server.on("stream", (stream, headers) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on("data", (c: Buffer) => {
      size += c.length;
      if (size <= 64 * 1024) chunks.push(c);
    });
    stream.on("error", () => {});
    stream.on("end", () => {
      const path = String(headers[":path"] ?? "");
      requests.push({ path, headers, bodyBytes: size });
      const apnsId = typeof headers["apns-id"] === "string" ? headers["apns-id"] : randomUUID();
      const answer = (status: number, body?: object) => {
        if (stream.closed || stream.destroyed) return;
        stream.respond({ ":status": status, "apns-id": apnsId, ...(body !== undefined ? { "content-type": "application/json" } : {}) });
        stream.end(body !== undefined ? JSON.stringify(body) : undefined);
      };
      void check(headers, path, Buffer.concat(chunks), size, apnsId)
        .then((result) => {
          if ("status" in result) {
            rejections.push({ path, status: result.status, reason: result.reason });
            return answer(result.status, result.status === 410 ? { reason: result.reason, timestamp: result.timestamp } : { reason: result.reason });
          }
          const scripted = script.take();
          if (scripted?.stall === true) return;
          if (scripted !== undefined) {
            if (stream.closed || stream.destroyed) return;
            stream.respond({ ":status": scripted.status, "apns-id": apnsId, ...scripted.headers });
            stream.end(scripted.body === "" ? undefined : scripted.body);
            return;
          }
          pushes.push(result);
          answer(200);
        })
        .catch((err: unknown) => answer(500, { reason: `InternalServerError: receiver bug: ${String(err)}` }));
    });
  });

  async function check(
    headers: http2.IncomingHttpHeaders,
    path: string,
    body: Buffer,
    size: number,
    apnsId: string,
  ): Promise<ApnsDelivery | { status: number; reason: string; timestamp?: number }> {
    if (headers[":method"] !== "POST") return { status: 405, reason: "MethodNotAllowed" };
    const m = /^\/3\/device\/([^/?]+)$/.exec(path);
    if (m?.[1] === undefined) return { status: 404, reason: "BadPath" };
    const deviceToken = m[1];

    // Token-based authentication.
    const auth = headers.authorization;
    if (typeof auth !== "string" || !auth.startsWith("bearer ")) return { status: 403, reason: "MissingProviderToken" };
    const jwt = auth.slice("bearer ".length);
    try {
      const header = decodeProtectedHeader(jwt);
      if (header.alg !== "ES256" || header.kid !== key.keyId) return { status: 403, reason: "InvalidProviderToken" };
      const { payload } = await jwtVerify(jwt, key.publicKey, { algorithms: ["ES256"], issuer: key.teamId, requiredClaims: ["iat"] });
      const now = Date.now() / 1000;
      const iat = Number(payload.iat);
      if (iat > now + 60) return { status: 403, reason: "InvalidProviderToken" };
      if (iat < now - 3600) return { status: 403, reason: "ExpiredProviderToken" };
    } catch {
      return { status: 403, reason: "InvalidProviderToken" };
    }

    // Headers.
    const topic = headers["apns-topic"];
    if (typeof topic !== "string" || topic === "") return { status: 400, reason: "MissingTopic" };
    const pushType = headers["apns-push-type"];
    if (typeof pushType !== "string" || !PUSH_TYPES.includes(pushType)) return { status: 400, reason: "InvalidPushType" };
    const priority = single(headers["apns-priority"]);
    if (priority !== undefined && !["1", "5", "10"].includes(priority)) return { status: 400, reason: "BadPriority" };
    const collapseId = single(headers["apns-collapse-id"]);
    if (collapseId !== undefined && Buffer.byteLength(collapseId) > 64) return { status: 400, reason: "BadCollapseId" };
    const expiration = single(headers["apns-expiration"]);
    if (expiration !== undefined && !/^\d+$/.test(expiration)) return { status: 400, reason: "BadExpirationDate" };

    // The device.
    if (!/^[0-9a-fA-F]{64,200}$/.test(deviceToken)) return { status: 400, reason: "BadDeviceToken" };
    const device = devices.get(deviceToken.toLowerCase());
    if (device === undefined) return { status: 400, reason: "BadDeviceToken" };
    if (device.topic !== topic) return { status: 400, reason: "DeviceTokenNotForTopic" };
    if (device.removedAt !== undefined) return { status: 410, reason: "Unregistered", timestamp: device.removedAt };

    // The payload.
    if (size > 4096) return { status: 413, reason: "PayloadTooLarge" };
    if (size === 0) return { status: 400, reason: "PayloadEmpty" };
    let payload: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(body.toString("utf8"));
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return { status: 400, reason: "BadPayload" };
      payload = parsed as Record<string, unknown>;
    } catch {
      return { status: 400, reason: "BadPayload" };
    }
    const aps = payload.aps as Record<string, unknown> | undefined;
    if (typeof aps !== "object" || aps === null) return { status: 400, reason: "BadPayload" };
    if (pushType === "alert" && aps.alert === undefined) return { status: 400, reason: "BadPayload" };
    if (aps.badge !== undefined && !Number.isInteger(aps.badge)) return { status: 400, reason: "BadPayload" };
    return {
      deviceToken,
      topic,
      pushType,
      priority,
      collapseId,
      expiration,
      apnsId,
      providerToken: jwt,
      bodyBytes: size,
      payload,
    };
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `${tls ? "https" : "http"}://127.0.0.1:${port}`,
    ca: cert?.cert,
    addDevice(topic) {
      const token = randomBytes(32).toString("hex");
      devices.set(token, { topic, removedAt: undefined });
      return token;
    },
    removeDevice(token) {
      const d = devices.get(token.toLowerCase());
      if (d !== undefined) d.removedAt = Date.now();
    },
    pushes,
    requests,
    rejections,
    get connections() {
      return connections;
    },
    failNext: (status, headers, body, times) => script.failNext(status, headers, body, times),
    stallNext: (times) => script.stallNext(times),
    dropConnections() {
      for (const s of sessions) s.close();
    },
    async close() {
      for (const s of sessions) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** single returns a single-valued header, or undefined. */
function single(v: string | string[] | undefined): string | undefined {
  return typeof v === "string" ? v : undefined;
}
