/**
 * The FCM sender: Firebase Cloud Messaging HTTP v1
 * (`POST {baseUrl}/v1/projects/{projectId}/messages:send`) with an OAuth2
 * access token obtained by the service-account flow (an RS256 JWT assertion
 * exchanged at the token URL, RFC 7523), cached until shortly before it
 * expires. The token URL and base URL come from configuration and are
 * trusted (no public-address check); a custom CA may be given for tests.
 */
import { type CryptoKey, SignJWT, importPKCS8 } from "jose";
import type { Device } from "../../core/model.js";
import type { PushContent, PushOutcome, PushSender } from "../../core/ports.js";
import { type CheckedHttp, type HttpReply, createCheckedHttp } from "./checked-http.js";
import { bodySnippet, errorMessage, neverThrowing, retryAfterMs, retryOutcome } from "./outcomes.js";
import { MAX_PUSH_BYTES, apnsCollapseId, fitPayload, webPushTopic } from "./push-payload.js";
import { reusableToken } from "./reusable-token.js";

/** FCM_SCOPE is the OAuth2 scope FCM HTTP v1 requires. */
export const FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging";
/** DEFAULT_FCM_TOKEN_URL is Google's OAuth2 token endpoint. */
export const DEFAULT_FCM_TOKEN_URL = "https://oauth2.googleapis.com/token";
/** DEFAULT_FCM_BASE_URL is FCM's API origin. */
export const DEFAULT_FCM_BASE_URL = "https://fcm.googleapis.com";

/** FcmSenderOptions configures {@link createFcmSender}: the service account's fields as in its JSON key file. */
export interface FcmSenderOptions {
  readonly projectId: string;
  /** clientEmail is the service account's `client_email`: the assertion's issuer. */
  readonly clientEmail: string;
  /** privateKey is the service account's `private_key`: PKCS#8 PEM, RSA (RS256). */
  readonly privateKey: string;
  /** tokenUrl is where the assertion is exchanged (and its audience); DEFAULT_FCM_TOKEN_URL in production. */
  readonly tokenUrl: string;
  /** baseUrl is FCM's origin (a path prefix is kept); DEFAULT_FCM_BASE_URL in production. */
  readonly baseUrl: string;
  /** ca is a PEM certificate trusted in addition to the system's roots (a test receiver's). */
  readonly ca?: string | undefined;
  /** timeoutMs bounds one HTTP exchange (the token request and the send each). */
  readonly timeoutMs: number;
}

/** The grant type of the JWT-bearer flow (RFC 7523). */
const JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/** Lifetime of an assertion: Google accepts at most one hour. */
const ASSERTION_TTL_S = 3600;

interface AccessToken {
  readonly value: string;
  /** Date.now() after which the token is not used any more (some time before it expires). */
  readonly useUntil: number;
}

/** TokenFailure is why no access token could be had, as the outcome to report. */
class TokenFailure extends Error {
  constructor(readonly outcome: PushOutcome) {
    super(outcome.kind === "sent" ? "sent" : outcome.reason);
  }
}

/**
 * createFcmSender returns the fcm PushSender. A send POSTs a message to the
 * device's registration token (its `token`) with notification {title, body},
 * data (all strings: group_id, newest_seq, count, badge, sender),
 * android.collapse_key and notification.tag, apns headers apns-collapse-id
 * and payload aps.badge and thread-id, and webpush headers Topic; the whole
 * request body is at most MAX_PUSH_BYTES (the preview is cut to fit). The
 * access token is fetched once (concurrent sends share the request) and
 * reused until a quarter of its lifetime (at most 5 min) before expires_in.
 * Outcomes: 200 sent; errorCode UNREGISTERED (FCM answers 404), or 400
 * INVALID_ARGUMENT about the registration token, invalid; 401 drops the
 * cached token and retries; 429 and 5xx retry (Retry-After as afterMs); a
 * network error or timeout retry; anything else (a 404 without
 * UNREGISTERED too: a wrong project must not remove devices) failed. A token
 * endpoint answering 429/5xx or unreachable means retry; refusing the
 * assertion means failed.
 */
export function createFcmSender(opts: FcmSenderOptions): PushSender & { close(): Promise<void> } {
  const http: CheckedHttp = createCheckedHttp({ allowPrivate: true, ca: opts.ca, timeoutMs: opts.timeoutMs });
  const sendUrl = new URL(`${opts.baseUrl.replace(/\/+$/, "")}/v1/projects/${encodeURIComponent(opts.projectId)}/messages:send`);
  const tokenUrl = new URL(opts.tokenUrl);
  let signingKey: Promise<CryptoKey> | undefined;

  async function assertion(): Promise<string> {
    signingKey ??= importPKCS8(opts.privateKey, "RS256");
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ scope: FCM_SCOPE })
      .setProtectedHeader({ alg: "RS256", typ: "JWT" })
      .setIssuer(opts.clientEmail)
      .setAudience(opts.tokenUrl)
      .setIssuedAt(now)
      .setExpirationTime(now + ASSERTION_TTL_S)
      .sign(await signingKey);
  }

  async function fetchToken(): Promise<AccessToken> {
    let signed: string;
    try {
      signed = await assertion();
    } catch (err) {
      throw new TokenFailure({ kind: "failed", reason: `cannot sign the service-account assertion: ${errorMessage(err)}` });
    }
    const form = new URLSearchParams({ grant_type: JWT_BEARER, assertion: signed }).toString();
    let reply: HttpReply;
    try {
      reply = await http.post(tokenUrl, { "content-type": "application/x-www-form-urlencoded", "content-length": Buffer.byteLength(form) }, form);
    } catch (err) {
      throw new TokenFailure({ kind: "retry", reason: `token endpoint: ${errorMessage(err)}` });
    }
    const status = reply.status;
    if (status === 429 || status >= 500) {
      throw new TokenFailure(retryOutcome(`token endpoint answered ${status}${bodySnippet(reply.body)}`, retryAfterMs(reply.headers["retry-after"])));
    }
    if (status !== 200) throw new TokenFailure({ kind: "failed", reason: `token endpoint answered ${status}${bodySnippet(reply.body)}` });
    const json = parseJson(reply.body) as { access_token?: unknown; expires_in?: unknown } | undefined;
    const value = json?.access_token;
    const expiresIn = Number(json?.expires_in ?? 3600);
    if (typeof value !== "string" || value === "" || !Number.isFinite(expiresIn) || expiresIn <= 0) {
      throw new TokenFailure({ kind: "failed", reason: "token endpoint answered 200 without a usable access_token/expires_in" });
    }
    const marginS = Math.min(300, expiresIn / 4);
    return { value, useUntil: Date.now() + (expiresIn - marginS) * 1000 };
  }

  const accessToken = reusableToken(fetchToken, (t) => Date.now() < t.useUntil);

  async function attempt(device: Device, content: PushContent): Promise<PushOutcome> {
    if (device.kind !== "fcm") return { kind: "failed", reason: `a ${device.kind} device given to the fcm sender` };
    if (device.token === "") return { kind: "invalid", reason: "empty registration token" };
    const body = fitPayload(content, MAX_PUSH_BYTES, (text) => JSON.stringify(fcmMessage(device.token, content, text)));
    if (body === undefined) return { kind: "failed", reason: "the push does not fit FCM's size limit" };

    let token: AccessToken;
    try {
      token = await accessToken.get();
    } catch (err) {
      if (err instanceof TokenFailure) return err.outcome;
      throw err;
    }
    let reply: HttpReply;
    try {
      reply = await http.post(
        sendUrl,
        { authorization: `Bearer ${token.value}`, "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(body) },
        body,
      );
    } catch (err) {
      return { kind: "retry", reason: `network: ${errorMessage(err)}` };
    }
    if (reply.status === 401) accessToken.drop(token);
    return outcomeOf(reply);
  }

  return neverThrowing("fcm", attempt, async () => http.close());
}

/** fcmMessage is the v1 send request for one device. */
function fcmMessage(token: string, content: PushContent, text: { title: string; body: string }) {
  const collapse = apnsCollapseId(content.collapseKey);
  const topic = webPushTopic(content.collapseKey);
  return {
    message: {
      token,
      notification: { title: text.title, body: text.body },
      data: {
        group_id: content.groupId,
        newest_seq: String(content.newestSeq),
        count: String(content.count),
        badge: String(content.badge),
        sender: content.latestSender,
      },
      android: {
        ...(collapse !== undefined ? { collapse_key: collapse } : {}),
        notification: { ...(collapse !== undefined ? { tag: collapse } : {}), notification_count: content.badge },
      },
      apns: {
        headers: collapse !== undefined ? { "apns-collapse-id": collapse } : {},
        payload: { aps: { badge: content.badge, "thread-id": content.groupId } },
      },
      webpush: { headers: topic !== undefined ? { Topic: topic } : {} },
    },
  };
}

interface FcmErrorBody {
  error?: {
    code?: number;
    message?: string;
    status?: string;
    details?: Array<{ "@type"?: string; errorCode?: string; fieldViolations?: Array<{ field?: string }> }>;
  };
}

/** outcomeOf maps an FCM v1 answer (https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode). */
function outcomeOf(reply: HttpReply): PushOutcome {
  const s = reply.status;
  if (s === 200) return { kind: "sent" };
  const err = (parseJson(reply.body) as FcmErrorBody | undefined)?.error;
  const details = err?.details ?? [];
  const codes = details.map((d) => d.errorCode).filter((c): c is string => typeof c === "string");
  const detail = `${s}${codes.length > 0 ? ` ${codes.join(",")}` : err?.status !== undefined ? ` ${err.status}` : ""}${
    err?.message !== undefined ? `: ${err.message}` : bodySnippet(reply.body)
  }`;
  if (codes.includes("UNREGISTERED")) return { kind: "invalid", reason: `FCM answered ${detail}` };
  const aboutToken =
    /registration token/i.test(err?.message ?? "") || details.some((d) => d.fieldViolations?.some((v) => v.field === "message.token") ?? false);
  if (s === 400 && (codes.includes("INVALID_ARGUMENT") || err?.status === "INVALID_ARGUMENT") && aboutToken) {
    return { kind: "invalid", reason: `FCM answered ${detail}` };
  }
  if (s === 401) return { kind: "retry", reason: `FCM answered ${detail} (access token dropped)` };
  if (s === 429 || s >= 500) return retryOutcome(`FCM answered ${detail}`, retryAfterMs(reply.headers["retry-after"]));
  return { kind: "failed", reason: `FCM answered ${detail}` };
}

/** parseJson parses a body, or undefined if it is not JSON. */
function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    return undefined;
  }
}
