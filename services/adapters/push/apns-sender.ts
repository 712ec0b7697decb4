/**
 * The APNs sender: Apple Push Notification service over HTTP/2 with token
 * authentication (an ES256 provider token signed with the team's .p8 key).
 * One HTTP/2 session is reused for every push and opened again when it
 * closed; the provider token is reused and signed afresh after 50 minutes
 * (Apple refuses tokens older than an hour and too-frequent new ones).
 */
import * as http2 from "node:http2";
import { type CryptoKey, SignJWT, importPKCS8 } from "jose";
import type { Device } from "../../core/model.js";
import type { PushContent, PushOutcome, PushSender } from "../../core/ports.js";
import { bodySnippet, errorMessage, neverThrowing, retryAfterMs, retryOutcome } from "./outcomes.js";
import { MAX_PUSH_BYTES, apnsCollapseId, fitPayload } from "./push-payload.js";
import { reusableToken } from "./reusable-token.js";

/** DEFAULT_APNS_URL is the production APNs origin (the development one is https://api.sandbox.push.apple.com). */
export const DEFAULT_APNS_URL = "https://api.push.apple.com";
/** APNS_TOKEN_REFRESH_MS is how long one provider token is used before a new one is signed. */
export const APNS_TOKEN_REFRESH_MS = 50 * 60 * 1000;

/** ApnsSenderOptions configures {@link createApnsSender}. */
export interface ApnsSenderOptions {
  /** url is the APNs origin; DEFAULT_APNS_URL in production. */
  readonly url: string;
  /** keyId is the 10-character id of the .p8 key (the token's `kid`). */
  readonly keyId: string;
  /** teamId is the Apple developer team id (the token's `iss`). */
  readonly teamId: string;
  /** privateKey is the .p8 file's content: PKCS#8 PEM of a P-256 key. */
  readonly privateKey: string;
  /** ca is a PEM certificate trusted in addition to the system's roots (a test receiver's). */
  readonly ca?: string | undefined;
  /** timeoutMs bounds one push: from opening the stream (or the session) to the whole answer. */
  readonly timeoutMs: number;
  /** ttlSeconds sets apns-expiration (now + ttl): how long APNs keeps an undelivered push; default one day. */
  readonly ttlSeconds?: number | undefined;
}

/** ApnsPayload is the JSON body of a push. */
export interface ApnsPayload {
  readonly aps: {
    readonly alert: { readonly title: string; readonly body: string };
    readonly badge: number;
    readonly sound: "default";
    readonly "thread-id": string;
  };
  readonly group_id: string;
  readonly newest_seq: number;
}

interface ProviderToken {
  readonly jwt: string;
  readonly signedAt: number;
}

interface Answer {
  readonly status: number;
  readonly headers: http2.IncomingHttpHeaders;
  readonly body: Buffer;
}

/**
 * createApnsSender returns the apns PushSender. A send is one POST
 * /3/device/<token> on the shared HTTP/2 session with authorization
 * `bearer <provider token>`, apns-topic (the device's topic), apns-push-type
 * alert, apns-priority 10, apns-collapse-id (see apnsCollapseId) and
 * apns-expiration, and an ApnsPayload body of at most MAX_PUSH_BYTES (the
 * preview is cut to fit). Outcomes: 200 sent; 410, or 400
 * BadDeviceToken/DeviceTokenNotForTopic, invalid (also a token that is not
 * hex); 403 ExpiredProviderToken/InvalidProviderToken drops the provider
 * token (the next send signs a new one) and retries; 429 and 5xx retry
 * (Retry-After as afterMs when given); a connection error, reset stream or
 * timeout retry; anything else failed.
 */
export function createApnsSender(opts: ApnsSenderOptions): PushSender & { close(): Promise<void> } {
  const ttlSeconds = opts.ttlSeconds ?? 24 * 60 * 60;
  let session: http2.ClientHttp2Session | undefined;
  let signingKey: Promise<CryptoKey> | undefined;

  function currentSession(): http2.ClientHttp2Session {
    if (session !== undefined && !session.closed && !session.destroyed) return session;
    const s = http2.connect(opts.url, opts.ca !== undefined ? { ca: opts.ca } : {});
    // A session error reaches the streams on it, which report it as their outcome.
    s.on("error", () => {});
    const forget = () => {
      if (session === s) session = undefined;
    };
    s.on("close", forget);
    s.on("goaway", forget);
    // An idle connection must not keep the process alive (a push in flight has its timer).
    s.unref();
    session = s;
    return s;
  }

  async function sign(): Promise<ProviderToken> {
    signingKey ??= importPKCS8(opts.privateKey, "ES256");
    const now = Date.now();
    const jwt = await new SignJWT({})
      .setProtectedHeader({ alg: "ES256", kid: opts.keyId })
      .setIssuer(opts.teamId)
      .setIssuedAt(Math.floor(now / 1000))
      .sign(await signingKey);
    return { jwt, signedAt: now };
  }

  const providerToken = reusableToken(sign, (t) => Date.now() - t.signedAt < APNS_TOKEN_REFRESH_MS);

  function post(headers: http2.OutgoingHttpHeaders, body: string): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      const req = currentSession().request(headers);
      let settled = false;
      let status = 0;
      let answerHeaders: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      let kept = 0;
      const finish = (err: Error | undefined) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err !== undefined) reject(err);
        else resolve({ status, headers: answerHeaders, body: Buffer.concat(chunks) });
      };
      const timer = setTimeout(() => {
        finish(new Error(`no complete answer within ${opts.timeoutMs} ms`));
        req.close(http2.constants.NGHTTP2_CANCEL);
      }, opts.timeoutMs);
      req.on("response", (h) => {
        status = Number(h[":status"] ?? 0);
        answerHeaders = h;
      });
      req.on("data", (chunk: Buffer) => {
        if (kept >= 64 * 1024) return;
        chunks.push(chunk);
        kept += chunk.length;
      });
      req.on("end", () => finish(status === 0 ? new Error("the stream ended without a status") : undefined));
      req.on("error", (err) => finish(err));
      req.on("close", () => finish(new Error(`the stream closed before the answer was complete (code ${req.rstCode})`)));
      req.end(body);
    });
  }

  async function attempt(device: Device, content: PushContent): Promise<PushOutcome> {
    if (device.kind !== "apns") return { kind: "failed", reason: `a ${device.kind} device given to the apns sender` };
    if (!/^[0-9a-fA-F]{1,400}$/.test(device.token)) return { kind: "invalid", reason: "the device token is not hex" };
    if (device.topic === "") return { kind: "failed", reason: "the device has no topic (bundle id)" };
    const body = fitPayload(content, MAX_PUSH_BYTES, (text) =>
      JSON.stringify({
        aps: { alert: { title: text.title, body: text.body }, badge: content.badge, sound: "default", "thread-id": content.groupId },
        group_id: content.groupId,
        newest_seq: content.newestSeq,
      } satisfies ApnsPayload),
    );
    if (body === undefined) return { kind: "failed", reason: "the push does not fit APNs' size limit" };

    let used: ProviderToken;
    try {
      used = await providerToken.get();
    } catch (err) {
      return { kind: "failed", reason: `cannot sign the provider token: ${errorMessage(err)}` };
    }
    const collapseId = apnsCollapseId(content.collapseKey);
    let answer: Answer;
    try {
      answer = await post(
        {
          ":method": "POST",
          ":path": `/3/device/${device.token}`,
          authorization: `bearer ${used.jwt}`,
          "apns-topic": device.topic,
          "apns-push-type": "alert",
          "apns-priority": "10",
          "apns-expiration": String(Math.floor(Date.now() / 1000) + ttlSeconds),
          ...(collapseId !== undefined ? { "apns-collapse-id": collapseId } : {}),
          "content-type": "application/json",
        },
        body,
      );
    } catch (err) {
      return { kind: "retry", reason: `network: ${errorMessage(err)}` };
    }
    const s = answer.status;
    if (s === 200) return { kind: "sent" };
    const reason = apnsReason(answer.body);
    const detail = `${s}${reason !== undefined ? ` ${reason}` : bodySnippet(answer.body)}`;
    if (s === 410 || (s === 400 && (reason === "BadDeviceToken" || reason === "DeviceTokenNotForTopic"))) {
      return { kind: "invalid", reason: `APNs answered ${detail}` };
    }
    if (s === 403 && (reason === "ExpiredProviderToken" || reason === "InvalidProviderToken")) {
      providerToken.drop(used);
      return { kind: "retry", reason: `APNs answered ${detail} (a new provider token will be signed)` };
    }
    if (s === 429 || s >= 500) return retryOutcome(`APNs answered ${detail}`, retryAfterMs(answer.headers["retry-after"]));
    return { kind: "failed", reason: `APNs answered ${detail}` };
  }

  return neverThrowing("apns", attempt, async () => {
    const s = session;
    session = undefined;
    if (s === undefined || s.destroyed) return;
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => s.destroy(), 2000);
      s.close(() => {
        clearTimeout(force);
        resolve();
      });
    });
  });
}

/** apnsReason reads the `reason` of an APNs error body. */
function apnsReason(body: Buffer): string | undefined {
  try {
    const reason = (JSON.parse(body.toString("utf8")) as { reason?: unknown }).reason;
    return typeof reason === "string" ? reason : undefined;
  } catch {
    return undefined;
  }
}
