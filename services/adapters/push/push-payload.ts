/**
 * What every push says, and the size and collapse-key rules the three
 * providers share: one render function (title, body), one fitting function
 * (cut the preview until the provider's payload fits), and the collapse-key
 * forms each provider accepts.
 */
import { createHash } from "node:crypto";
import type { PushContent } from "../../core/ports.js";

/** MAX_PUSH_BYTES is the largest payload any provider is sent: APNs' and FCM's 4 KB. */
export const MAX_PUSH_BYTES = 4096;

/**
 * MAX_WEB_PUSH_PLAINTEXT is the largest Web Push plaintext: one aes128gcm
 * record of 4096 bytes minus the header (86), the tag (16) and the padding
 * delimiter (1), RFC 8291 section 4.
 */
export const MAX_WEB_PUSH_PLAINTEXT = 3993;

/** ELLIPSIS ends a cut preview. */
const ELLIPSIS = "…";

/** Longest group name and sender name put in a push, in code points (the names are capped far below this at creation). */
const MAX_NAME_CODE_POINTS = 100;

/** PushText is the visible part of a push. */
export interface PushText {
  readonly title: string;
  readonly body: string;
}

/**
 * renderPushText is the one wording of a push: the title is the group's name;
 * the body is "<sender>: <preview>" for one message, or "N new messages in
 * <group>" and then "<sender>: <preview>" on a second line for more.
 * `preview` replaces content.preview (the fitting function passes cut ones).
 */
export function renderPushText(content: PushContent, preview: string = content.preview): PushText {
  const group = cut(content.groupName, MAX_NAME_CODE_POINTS);
  const sender = cut(content.latestSender, MAX_NAME_CODE_POINTS);
  const line = preview === "" ? `New message from ${sender}` : `${sender}: ${preview}`;
  const body = content.count <= 1 ? line : `${content.count} new messages in ${group}\n${line}`;
  return { title: group, body };
}

/**
 * fitPayload returns build(renderPushText(content, preview)) for the longest
 * preview that makes it at most `maxBytes` UTF-8 bytes: the whole preview if
 * it fits, else its longest prefix (whole code points) followed by "…" that
 * fits, else no preview. undefined if nothing fits (never at the providers'
 * limits: names are capped at 100 code points).
 */
export function fitPayload(content: PushContent, maxBytes: number, build: (text: PushText) => string): string | undefined {
  const fits = (preview: string): string | undefined => {
    const payload = build(renderPushText(content, preview));
    return Buffer.byteLength(payload, "utf8") <= maxBytes ? payload : undefined;
  };
  const whole = fits(content.preview);
  if (whole !== undefined) return whole;
  const points = Array.from(content.preview);
  // Binary search for the longest proper prefix (in code points) that fits with the ellipsis.
  let lo = 1;
  let hi = points.length - 1;
  let best: string | undefined;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const payload = fits(points.slice(0, mid).join("") + ELLIPSIS);
    if (payload !== undefined) {
      best = payload;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return best ?? fits("");
}

/** cut keeps the first `max` code points of `s`, ending with "…" when it cut. */
function cut(s: string, max: number): string {
  const points = Array.from(s);
  return points.length <= max ? s : points.slice(0, max - 1).join("") + ELLIPSIS;
}

/** hashKey is a stable base64url digest of a collapse key, for keys a provider would not take as they are. */
function hashKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("base64url");
}

/**
 * webPushTopic turns a collapse key into an RFC 8030 Topic: the key itself if
 * it is 1 to 32 characters of the URL-safe base64 alphabet, else the first 32
 * characters of its SHA-256 in base64url (distinct keys stay distinct in
 * practice). undefined for "" (no Topic).
 */
export function webPushTopic(key: string): string | undefined {
  if (key === "") return undefined;
  return /^[A-Za-z0-9_-]{1,32}$/.test(key) ? key : hashKey(key).slice(0, 32);
}

/**
 * apnsCollapseId turns a collapse key into an apns-collapse-id (at most 64
 * bytes): the key if it fits and is printable ASCII, else its SHA-256 in
 * base64url (43 characters). undefined for "".
 */
export function apnsCollapseId(key: string): string | undefined {
  if (key === "") return undefined;
  return /^[\x21-\x7e]{1,64}$/.test(key) ? key : hashKey(key);
}
