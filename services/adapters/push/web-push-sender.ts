/**
 * The Web Push sender (RFC 8030 delivery, RFC 8291 aes128gcm encryption,
 * RFC 8292 VAPID): `web-push` builds the request (encrypts and signs), and
 * the POST itself goes through checked-http, because the endpoint is a URL
 * the client chose: its host must resolve to public addresses only (unless
 * allowPrivate), the connection goes to the checked address, redirects are
 * not followed.
 */
import webpush from "web-push";
import type { Device } from "../../core/model.js";
import type { PushContent, PushOutcome, PushSender } from "../../core/ports.js";
import { checkPushEndpoint } from "../../core/push-endpoint.js";
import { type CheckedHttp, type HttpReply, RefusedAddressError, type ResolveHost, createCheckedHttp } from "./checked-http.js";
import { MAX_PUSH_BYTES, MAX_WEB_PUSH_PLAINTEXT, fitPayload, webPushTopic } from "./push-payload.js";
import { bodySnippet, errorMessage, neverThrowing, retryAfterMs, retryOutcome } from "./outcomes.js";

/** VapidKeys identify this application server to push services (RFC 8292): the key pair in base64url, as `web-push generate-vapid-keys` prints it. */
export interface VapidKeys {
  /** subject is a contact: a mailto: or https: URL. */
  readonly subject: string;
  readonly publicKey: string;
  readonly privateKey: string;
}

/** WebPushSenderOptions configures {@link createWebPushSender}. */
export interface WebPushSenderOptions {
  readonly vapid: VapidKeys;
  /** allowPrivate lets endpoints be http:// and on non-public addresses (the documented test setting); off in production. */
  readonly allowPrivate: boolean;
  /** ca is a PEM certificate trusted in addition to the system's roots (a test receiver's). */
  readonly ca?: string | undefined;
  /** timeoutMs bounds one attempt: resolving, connecting, sending and the whole answer. */
  readonly timeoutMs: number;
  /** ttlSeconds is the TTL header: how long the push service keeps an undelivered push. */
  readonly ttlSeconds: number;
  /** resolve replaces the system resolver (tests only: a name that resolves to chosen addresses). */
  readonly resolve?: ResolveHost | undefined;
}

/** WebPushMessage is the JSON a service worker receives (the decrypted push data). */
export interface WebPushMessage {
  readonly title: string;
  readonly body: string;
  readonly group_id: string;
  readonly newest_seq: number;
  readonly count: number;
  readonly badge: number;
  /** tag is the collapse key, for showNotification's `tag` (replaces the group's previous notification). */
  readonly tag: string;
}

/**
 * createWebPushSender returns the web_push PushSender. One send is one POST
 * to the device's endpoint (its `token`) with the content as WebPushMessage
 * JSON of at most MAX_WEB_PUSH_PLAINTEXT bytes (one aes128gcm record; the
 * preview is cut to fit), encrypted for the subscription's p256dh/auth,
 * signed with VAPID (`vapid t=…, k=…`, aud = the endpoint's origin), with
 * TTL, `Urgency: normal` and `Topic` (the collapse key, see webPushTopic).
 * Outcomes: 2xx sent; 404/410 invalid; 429 and 5xx retry (Retry-After as
 * afterMs); a network error or timeout retry; 3xx (not followed), 413 and
 * other 4xx failed; an endpoint the policy refuses (checkPushEndpoint, or a
 * host resolving to a non-public address) failed, nothing sent; keys that
 * cannot be encrypted for invalid. Throws only at creation, for unusable
 * VAPID keys or subject.
 */
export function createWebPushSender(opts: WebPushSenderOptions): PushSender & { close(): Promise<void> } {
  const vapidDetails = { subject: opts.vapid.subject, publicKey: opts.vapid.publicKey, privateKey: opts.vapid.privateKey };
  // Fail at start-up, not per device, if the VAPID configuration is unusable.
  webpush.getVapidHeaders("https://push.example.com", vapidDetails.subject, vapidDetails.publicKey, vapidDetails.privateKey, "aes128gcm");
  const http: CheckedHttp = createCheckedHttp({
    allowPrivate: opts.allowPrivate,
    ca: opts.ca,
    timeoutMs: opts.timeoutMs,
    resolve: opts.resolve,
  });

  async function attempt(device: Device, content: PushContent): Promise<PushOutcome> {
    if (device.kind !== "web_push") return { kind: "failed", reason: `a ${device.kind} device given to the web_push sender` };
    const refused = checkPushEndpoint(device.token, { allowPrivate: opts.allowPrivate });
    if (refused !== undefined) return { kind: "failed", reason: `endpoint refused: ${refused}` };
    const keyProblem = subscriptionKeyProblem(device);
    if (keyProblem !== undefined) return { kind: "invalid", reason: keyProblem };

    const topic = webPushTopic(content.collapseKey);
    const payload = fitPayload(content, MAX_WEB_PUSH_PLAINTEXT, (text) =>
      JSON.stringify({
        title: text.title,
        body: text.body,
        group_id: content.groupId,
        newest_seq: content.newestSeq,
        count: content.count,
        badge: content.badge,
        tag: content.collapseKey,
      } satisfies WebPushMessage),
    );
    if (payload === undefined) return { kind: "failed", reason: "the push does not fit the Web Push size limit" };

    let details: ReturnType<typeof webpush.generateRequestDetails>;
    try {
      details = webpush.generateRequestDetails({ endpoint: device.token, keys: { p256dh: device.p256dh, auth: device.auth } }, payload, {
        vapidDetails,
        TTL: opts.ttlSeconds,
        contentEncoding: "aes128gcm",
        urgency: "normal",
        ...(topic !== undefined ? { topic } : {}),
      });
    } catch (err) {
      return { kind: "invalid", reason: `cannot encrypt for this subscription: ${errorMessage(err)}` };
    }
    const body = details.body ?? Buffer.alloc(0);
    if (body.length > MAX_PUSH_BYTES) return { kind: "failed", reason: `encrypted body is ${body.length} bytes, over ${MAX_PUSH_BYTES}` };

    let reply: HttpReply;
    try {
      reply = await http.post(new URL(device.token), details.headers, body);
    } catch (err) {
      if (err instanceof RefusedAddressError) return { kind: "failed", reason: `endpoint refused: ${err.message}` };
      return { kind: "retry", reason: `network: ${errorMessage(err)}` };
    }
    return outcomeOf(reply);
  }

  return neverThrowing("web_push", attempt, async () => http.close());
}

/** subscriptionKeyProblem says why a subscription's keys cannot be used, or undefined. */
function subscriptionKeyProblem(device: Device): string | undefined {
  const p256dh = Buffer.from(device.p256dh, "base64url");
  if (p256dh.length !== 65 || p256dh[0] !== 0x04) return "p256dh is not an uncompressed P-256 public key (65 bytes, base64url)";
  if (Buffer.from(device.auth, "base64url").length < 16) return "auth is shorter than 16 bytes";
  return undefined;
}

/** outcomeOf maps a push service's answer (RFC 8030 section 5, and what the big services send). */
function outcomeOf(reply: HttpReply): PushOutcome {
  const s = reply.status;
  if (s >= 200 && s < 300) return { kind: "sent" };
  const detail = `${s}${bodySnippet(reply.body)}`;
  if (s >= 300 && s < 400) return { kind: "failed", reason: `the push service redirected (${s}); redirects are not followed` };
  if (s === 404 || s === 410) return { kind: "invalid", reason: `the push service answered ${detail}: the subscription is gone` };
  if (s === 429 || s >= 500) return retryOutcome(`the push service answered ${detail}`, retryAfterMs(reply.headers["retry-after"]));
  return { kind: "failed", reason: `the push service answered ${detail}` };
}
