/**
 * Helpers the push senders share to build their outcomes: Retry-After
 * (RFC 9110 section 10.2.3) as a delay, short error texts for reasons, and
 * the sender shell that turns anything thrown into a "failed" outcome.
 */
import type { Device, PushKind } from "../../core/model.js";
import type { PushContent, PushOutcome, PushSender } from "../../core/ports.js";

/** MAX_RETRY_AFTER_MS caps what a service can ask for: one day. */
export const MAX_RETRY_AFTER_MS = 24 * 60 * 60 * 1000;

/**
 * retryAfterMs turns a Retry-After value (delay-seconds, or an HTTP date) into
 * milliseconds from `nowMs`, clamped to [0, MAX_RETRY_AFTER_MS]; undefined
 * when absent or unreadable. An array (repeated header) uses its first value.
 */
export function retryAfterMs(value: string | readonly string[] | undefined, nowMs: number = Date.now()): number | undefined {
  const raw = (typeof value === "string" ? value : value?.[0])?.trim();
  if (raw === undefined || raw === "") return undefined;
  let ms: number;
  if (/^\d+$/.test(raw)) {
    ms = Number(raw) * 1000;
  } else {
    // An HTTP date starts with the day's name (IMF-fixdate, RFC 850 and asctime forms alike).
    if (!/^[A-Za-z]{3}/.test(raw)) return undefined;
    const at = Date.parse(raw);
    if (Number.isNaN(at)) return undefined;
    ms = at - nowMs;
  }
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms));
}

/** retryOutcome builds a "retry" outcome, with afterMs only when the service named a delay. */
export function retryOutcome(reason: string, afterMs: number | undefined): { readonly kind: "retry"; readonly reason: string; readonly afterMs?: number } {
  return afterMs === undefined ? { kind: "retry", reason } : { kind: "retry", reason, afterMs };
}

/** bodySnippet is ": " and the start of an error body (at most 200 code points, whitespace folded), or "" for an empty body. */
export function bodySnippet(body: Buffer): string {
  const text = body.toString("utf8", 0, Math.min(body.length, 800)).replace(/\s+/g, " ").trim();
  return text === "" ? "" : `: ${Array.from(text).slice(0, 200).join("")}`;
}

/** errorMessage is an error's message, or the value as a string. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * neverThrowing makes a PushSender of `kind` whose send is one call of
 * `attempt` and never throws: whatever attempt throws (or rejects with)
 * becomes { kind: "failed", reason: "unexpected: …" }. close is `close`.
 */
export function neverThrowing(
  kind: PushKind,
  attempt: (device: Device, content: PushContent) => Promise<PushOutcome>,
  close: () => Promise<void>,
): PushSender & { close(): Promise<void> } {
  return {
    kind,
    async send(device, content) {
      try {
        return await attempt(device, content);
      } catch (err) {
        return { kind: "failed", reason: `unexpected: ${errorMessage(err)}` };
      }
    },
    close,
  };
}
