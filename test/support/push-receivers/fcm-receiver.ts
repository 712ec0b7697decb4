/**
 * FCM HTTP v1 on loopback, with its OAuth2 token endpoint: an https server
 * (test certificate; http when `tls` is false) that checks what Google checks.
 * `POST /token` takes grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
 * and an RS256 assertion signed with the service account's key (iss = its
 * client email, aud = this token URL, scope with firebase.messaging, exp at
 * most an hour after iat) and issues a bearer token with expires_in.
 * `POST /v1/projects/<project>/messages:send` takes a live bearer token and
 * a message for one registration token, checked field by field like FCM's
 * proto JSON (unknown fields, non-string data, reserved data keys, size),
 * and answers as FCM does: 200 {name}, 401 UNAUTHENTICATED, 400
 * INVALID_ARGUMENT, 404 UNREGISTERED (with google.firebase.fcm.v1.FcmError
 * details). Refusals are listed in `rejections`.
 */
import { type KeyObject, generateKeyPairSync, randomBytes } from "node:crypto";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { jwtVerify } from "jose";
import { ReplyScript } from "./reply-script.js";
import { testCertificate } from "./test-certs.js";

/** FCM_SCOPE is the scope an assertion must ask for. */
const FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/** ServiceAccount is a service account's key as the sender is configured with it (PEM), plus the public key the receiver verifies with. */
export interface ServiceAccount {
  readonly projectId: string;
  readonly clientEmail: string;
  /** privateKeyPem is PKCS#8 PEM (RSA), as in the JSON key file's private_key. */
  readonly privateKeyPem: string;
  readonly publicKey: KeyObject;
}

/** makeServiceAccount makes a fresh service account (RSA 2048) of a fresh project. */
export function makeServiceAccount(): ServiceAccount {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const projectId = `chat-test-${randomBytes(4).toString("hex")}`;
  return {
    projectId,
    clientEmail: `push-sender@${projectId}.iam.gserviceaccount.com`,
    privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKey,
  };
}

/** fcmError is an FCM v1 error body: {error: {code, message, status, details: [FcmError{errorCode}]}}. */
export function fcmError(code: number, status: string, errorCode?: string, message = status): object {
  return {
    error: {
      code,
      message,
      status,
      details: errorCode !== undefined ? [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode }] : [],
    },
  };
}

/** FcmDelivery is one accepted message. */
export interface FcmDelivery {
  readonly token: string;
  /** message is the request's `message`, as sent. */
  readonly message: FcmMessage;
  readonly accessToken: string;
  readonly name: string;
  readonly bodyBytes: number;
}

/** FcmMessage is the part of the v1 Message this receiver understands (what the sender sends). */
export interface FcmMessage {
  readonly token: string;
  readonly notification?: { readonly title?: string; readonly body?: string };
  readonly data?: Readonly<Record<string, string>>;
  readonly android?: {
    readonly collapse_key?: string;
    readonly notification?: { readonly tag?: string; readonly notification_count?: number };
  };
  readonly apns?: { readonly headers?: Readonly<Record<string, string>>; readonly payload?: { readonly aps?: Record<string, unknown> } };
  readonly webpush?: { readonly headers?: Readonly<Record<string, string>> };
}

/** TokenGrant is one access token the token endpoint issued, with the verified assertion claims. */
export interface TokenGrant {
  readonly accessToken: string;
  readonly expiresIn: number;
  readonly claims: { readonly iss: string; readonly aud: string; readonly scope: string; readonly iat: number; readonly exp: number };
}

/** FcmRequest is any request that reached the receiver (token endpoint and messages:send). */
export interface FcmRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly bodyBytes: number;
}

/** FcmRejection is a request the receiver refused. */
export interface FcmRejection {
  readonly path: string;
  readonly status: number;
  readonly reason: string;
}

/** FcmReceiver is a running receiver. */
export interface FcmReceiver {
  /** url is the base URL (the sender's baseUrl), e.g. https://127.0.0.1:40123. */
  readonly url: string;
  /** tokenUrl is the OAuth2 token endpoint (the sender's tokenUrl). */
  readonly tokenUrl: string;
  readonly ca: string | undefined;
  /** addToken registers an app instance and returns its registration token. */
  addToken(): string;
  /** removeToken makes the registration token UNREGISTERED (404) from now on. */
  removeToken(token: string): void;
  /** revokeAccessTokens invalidates every issued access token (sends get 401). */
  revokeAccessTokens(): void;
  readonly pushes: FcmDelivery[];
  readonly grants: TokenGrant[];
  readonly requests: FcmRequest[];
  readonly rejections: FcmRejection[];
  /** sendRequests counts requests to messages:send (accepted or not). */
  readonly sendRequests: number;
  /** failNext answers the next `times` valid messages:send requests with this (see fcmError). */
  failNext(status: number, headers?: Readonly<Record<string, string>>, body?: string | object, times?: number): void;
  /** failTokenNext answers the next `times` valid token requests with this. */
  failTokenNext(status: number, headers?: Readonly<Record<string, string>>, body?: string | object, times?: number): void;
  close(): Promise<void>;
}

type Refusal = { status: number; reason: string; body: object };

/** startFcmReceiver starts a receiver on 127.0.0.1 (a free port) for the service account's project. */
export async function startFcmReceiver(
  account: Pick<ServiceAccount, "projectId" | "clientEmail" | "publicKey">,
  opts: { tls?: boolean; tokenTtlSeconds?: number } = {},
): Promise<FcmReceiver> {
  const tls = opts.tls ?? true;
  const cert = tls ? testCertificate() : undefined;
  const tokenTtl = opts.tokenTtlSeconds ?? 3600;
  const registered = new Map<string, { removed: boolean }>();
  const accessTokens = new Map<string, number>();
  const pushes: FcmDelivery[] = [];
  const grants: TokenGrant[] = [];
  const requests: FcmRequest[] = [];
  const rejections: FcmRejection[] = [];
  const sendScript = new ReplyScript();
  const tokenScript = new ReplyScript();
  let sendRequests = 0;
  let base = "";

  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size <= 64 * 1024) chunks.push(c);
    });
    req.on("end", () => {
      const path = req.url ?? "";
      const body = Buffer.concat(chunks);
      requests.push({ method: req.method ?? "", path, headers: req.headers, bodyBytes: size });
      const json = (status: number, value: object): void => {
        res.writeHead(status, { "content-type": "application/json; charset=UTF-8" }).end(JSON.stringify(value));
      };
      const route =
        req.method === "POST" && path === "/token"
          ? { script: tokenScript, run: () => grant(body) }
          : req.method === "POST" && path.startsWith("/v1/")
            ? { script: sendScript, run: () => send(req, path, body, size) }
            : undefined;
      if (route === undefined) {
        json(404, fcmError(404, "NOT_FOUND", undefined, `no route ${req.method} ${path}`));
        return;
      }
      if (route.script === sendScript) sendRequests += 1;
      void route
        .run()
        .then((result) => {
          if ("status" in result) {
            rejections.push({ path, status: result.status, reason: result.reason });
            json(result.status, result.body);
            return;
          }
          const scripted = route.script.take();
          if (scripted?.stall === true) return;
          if (scripted !== undefined) {
            res.writeHead(scripted.status, scripted.headers).end(scripted.body);
            return;
          }
          result.accept();
          json(200, result.answer);
        })
        .catch((err: unknown) => json(500, fcmError(500, "INTERNAL", undefined, `receiver bug: ${String(err)}`)));
    });
  };

  type Accepted = { accept: () => void; answer: object };

  async function grant(body: Buffer): Promise<Accepted | Refusal> {
    const refuse = (reason: string): Refusal => ({ status: 400, reason, body: { error: "invalid_grant", error_description: reason } });
    const form = new URLSearchParams(body.toString("utf8"));
    if (form.get("grant_type") !== JWT_BEARER) return { ...refuse(`grant_type ${form.get("grant_type")}`), body: { error: "unsupported_grant_type" } };
    const assertion = form.get("assertion");
    if (assertion === null) return refuse("no assertion");
    let claims: TokenGrant["claims"];
    try {
      const { payload } = await jwtVerify(assertion, account.publicKey, {
        algorithms: ["RS256"],
        issuer: account.clientEmail,
        audience: `${base}/token`,
        requiredClaims: ["iat", "exp", "scope"],
      });
      claims = { iss: String(payload.iss), aud: String(payload.aud), scope: String(payload.scope), iat: Number(payload.iat), exp: Number(payload.exp) };
    } catch (err) {
      return refuse(`assertion rejected: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (claims.exp - claims.iat > 3600) return refuse("assertion lifetime is over one hour");
    if (claims.iat > Date.now() / 1000 + 60) return refuse("assertion issued in the future");
    if (!claims.scope.split(" ").includes(FCM_SCOPE)) return { ...refuse(`scope ${claims.scope}`), body: { error: "invalid_scope" } };
    const accessToken = `ya29.test-${randomBytes(24).toString("base64url")}`;
    return {
      accept: () => {
        accessTokens.set(accessToken, Date.now() + tokenTtl * 1000);
        grants.push({ accessToken, expiresIn: tokenTtl, claims });
      },
      answer: { access_token: accessToken, expires_in: tokenTtl, token_type: "Bearer" },
    };
  }

  async function send(req: http.IncomingMessage, path: string, body: Buffer, size: number): Promise<Accepted | Refusal> {
    const invalid = (reason: string, extra: object[] = []): Refusal => {
      const err = fcmError(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", reason) as { error: { details: object[] } };
      err.error.details.push(...extra);
      return { status: 400, reason, body: err };
    };
    const m = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(path);
    if (m?.[1] === undefined) return { status: 404, reason: `no method at ${path}`, body: fcmError(404, "NOT_FOUND", undefined, "Requested entity was not found.") };
    const auth = req.headers.authorization ?? "";
    const bearer = /^Bearer (\S+)$/.exec(auth)?.[1];
    const until = bearer !== undefined ? accessTokens.get(bearer) : undefined;
    if (bearer === undefined || until === undefined || until < Date.now()) {
      return {
        status: 401,
        reason: "no live access token",
        body: fcmError(401, "UNAUTHENTICATED", undefined, "Request had invalid authentication credentials. Expected OAuth 2 access token."),
      };
    }
    if (decodeURIComponent(m[1]) !== account.projectId) {
      return { status: 403, reason: `project ${m[1]}`, body: fcmError(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch") };
    }
    if (!String(req.headers["content-type"] ?? "").startsWith("application/json")) return invalid("Content-Type is not application/json");
    if (size > 4096) return invalid("Message is too big");
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      return invalid("Invalid JSON payload received.");
    }
    const problem = messageProblem(parsed);
    if (problem !== undefined) return invalid(problem);
    const message = (parsed as { message: FcmMessage }).message;
    const device = registered.get(message.token);
    if (device === undefined) {
      return invalid("The registration token is not a valid FCM registration token", [
        { "@type": "type.googleapis.com/google.rpc.BadRequest", fieldViolations: [{ field: "message.token", description: "Invalid registration token" }] },
      ]);
    }
    if (device.removed) return { status: 404, reason: "UNREGISTERED", body: fcmError(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.") };
    const name = `projects/${account.projectId}/messages/0:${Date.now()}%${randomBytes(6).toString("hex")}`;
    return {
      accept: () => pushes.push({ token: message.token, message, accessToken: bearer, name, bodyBytes: size }),
      answer: { name },
    };
  }

  const server = tls ? https.createServer({ cert: cert?.cert, key: cert?.key }, handler) : http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  base = `${tls ? "https" : "http"}://127.0.0.1:${port}`;

  return {
    url: base,
    tokenUrl: `${base}/token`,
    ca: cert?.cert,
    addToken() {
      const token = `${randomBytes(8).toString("base64url")}:APA91b${randomBytes(100).toString("base64url")}`;
      registered.set(token, { removed: false });
      return token;
    },
    removeToken(token) {
      const d = registered.get(token);
      if (d !== undefined) d.removed = true;
    },
    revokeAccessTokens() {
      accessTokens.clear();
    },
    pushes,
    grants,
    requests,
    rejections,
    get sendRequests() {
      return sendRequests;
    },
    failNext: (status, headers, body, times) => sendScript.failNext(status, headers, body, times),
    failTokenNext: (status, headers, body, times) => tokenScript.failNext(status, headers, body, times),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Allowed fields, as FCM's proto JSON parser knows them (an unknown name is a 400). */
const MESSAGE_FIELDS = ["name", "data", "notification", "android", "webpush", "apns", "fcm_options", "token", "topic", "condition"];
const NOTIFICATION_FIELDS = ["title", "body", "image"];
const ANDROID_FIELDS = ["collapse_key", "priority", "ttl", "restricted_package_name", "data", "notification", "fcm_options", "direct_boot_ok"];
const ANDROID_NOTIFICATION_FIELDS = [
  "title", "body", "icon", "color", "sound", "tag", "click_action", "body_loc_key", "body_loc_args", "title_loc_key", "title_loc_args",
  "channel_id", "ticker", "sticky", "event_time", "local_only", "notification_priority", "default_sound", "default_vibrate_timings",
  "default_light_settings", "vibrate_timings", "visibility", "notification_count", "light_settings", "image",
];
const APNS_FIELDS = ["headers", "payload", "fcm_options"];
const WEBPUSH_FIELDS = ["headers", "data", "notification", "fcm_options"];
const RESERVED_DATA_KEYS = ["from", "notification", "message_type"];

/** messageProblem says what is wrong with a send request body, or undefined. */
function messageProblem(parsed: unknown): string | undefined {
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  const unknown = (obj: Record<string, unknown>, allowed: readonly string[], at: string) => {
    const extra = Object.keys(obj).find((k) => !allowed.includes(k));
    return extra === undefined ? undefined : `Invalid JSON payload received. Unknown name "${extra}" at '${at}'`;
  };
  const stringMap = (v: unknown, at: string) => {
    if (!isObject(v)) return `${at} must be an object`;
    const bad = Object.entries(v).find(([, x]) => typeof x !== "string");
    return bad === undefined ? undefined : `Invalid value at '${at}' (${bad[0]}): values must be strings`;
  };
  if (!isObject(parsed) || Object.keys(parsed).some((k) => k !== "message" && k !== "validate_only")) return "the body must be {message}";
  const msg = parsed.message;
  if (!isObject(msg)) return "message is required";
  const top = unknown(msg, MESSAGE_FIELDS, "message");
  if (top !== undefined) return top;
  if (typeof msg.token !== "string" || msg.token === "") return "message.token is required (this receiver sends to tokens only)";
  if (msg.topic !== undefined || msg.condition !== undefined) return "exactly one of token, topic, condition";
  if (msg.notification !== undefined) {
    if (!isObject(msg.notification)) return "message.notification must be an object";
    const p = unknown(msg.notification, NOTIFICATION_FIELDS, "message.notification") ?? stringMap(msg.notification, "message.notification");
    if (p !== undefined) return p;
  }
  if (msg.data !== undefined) {
    const p = stringMap(msg.data, "message.data");
    if (p !== undefined) return p;
    const reserved = Object.keys(msg.data as object).find((k) => RESERVED_DATA_KEYS.includes(k) || k.startsWith("google.") || k.startsWith("gcm."));
    if (reserved !== undefined) return `Invalid data payload key: ${reserved}`;
  }
  if (msg.android !== undefined) {
    if (!isObject(msg.android)) return "message.android must be an object";
    const p = unknown(msg.android, ANDROID_FIELDS, "message.android");
    if (p !== undefined) return p;
    if (msg.android.collapse_key !== undefined && typeof msg.android.collapse_key !== "string") return "message.android.collapse_key must be a string";
    const n = msg.android.notification;
    if (n !== undefined) {
      if (!isObject(n)) return "message.android.notification must be an object";
      const q = unknown(n, ANDROID_NOTIFICATION_FIELDS, "message.android.notification");
      if (q !== undefined) return q;
      if (n.tag !== undefined && typeof n.tag !== "string") return "message.android.notification.tag must be a string";
      if (n.notification_count !== undefined && !Number.isInteger(n.notification_count)) return "notification_count must be an integer";
    }
  }
  if (msg.apns !== undefined) {
    if (!isObject(msg.apns)) return "message.apns must be an object";
    const p = unknown(msg.apns, APNS_FIELDS, "message.apns") ?? (msg.apns.headers !== undefined ? stringMap(msg.apns.headers, "message.apns.headers") : undefined);
    if (p !== undefined) return p;
    const payload = msg.apns.payload;
    if (payload !== undefined) {
      if (!isObject(payload) || !isObject(payload.aps)) return "message.apns.payload must carry an aps dictionary";
      if (payload.aps.badge !== undefined && !Number.isInteger(payload.aps.badge)) return "aps.badge must be an integer";
    }
    const collapse = (msg.apns.headers as Record<string, string> | undefined)?.["apns-collapse-id"];
    if (collapse !== undefined && Buffer.byteLength(collapse) > 64) return "apns-collapse-id is over 64 bytes";
  }
  if (msg.webpush !== undefined) {
    if (!isObject(msg.webpush)) return "message.webpush must be an object";
    const p = unknown(msg.webpush, WEBPUSH_FIELDS, "message.webpush") ?? (msg.webpush.headers !== undefined ? stringMap(msg.webpush.headers, "message.webpush.headers") : undefined);
    if (p !== undefined) return p;
    const topic = (msg.webpush.headers as Record<string, string> | undefined)?.Topic;
    if (topic !== undefined && !/^[A-Za-z0-9_-]{1,32}$/.test(topic)) return "webpush Topic must be 1-32 base64url characters";
  }
  return undefined;
}
