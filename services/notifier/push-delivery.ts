/**
 * One push to one device, from the claim to the last attempt: the claim in
 * the push ledger comes first (never twice), then the sender is tried and
 * retried within the retry policy, and a device the service calls gone is
 * removed.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Clock, PushContent, PushOutcome, PushSender } from "../core/ports.js";
import type { Device, PushKind } from "../core/model.js";
import type { DeviceStore, PushLedger } from "../core/ports.js";
import { type RetryPolicy, nextRetry } from "./backoff.js";

/**
 * PushFailReason says why a push did not reach its device: the service
 * refused it for good ("rejected"), the attempts or the retry window ran out
 * ("gave_up"), the service says the device is gone ("invalid_token"; the
 * device is removed), or the device's provider is not configured on this
 * server ("not_configured").
 */
export type PushFailReason = "rejected" | "gave_up" | "invalid_token" | "not_configured";

/** DeliveryObserver hears each push's fate (server/metrics.ts counts them per provider). */
export interface DeliveryObserver {
  /** pushSent: the service accepted a push, `latencyMs` after the `at` of the newest message it tells of. */
  pushSent(kind: PushKind, latencyMs: number): void;
  /** pushRetried: an attempt failed with a retryable outcome and another one is scheduled. */
  pushRetried(kind: PushKind): void;
  /** pushFailed: a push will not reach its device (no further attempt). */
  pushFailed(kind: PushKind, reason: PushFailReason): void;
  /** deviceRemoved: a device the service called gone was removed. */
  deviceRemoved(kind: PushKind): void;
}

/** DeliveryDeps are what deliverPush needs. */
export interface DeliveryDeps {
  readonly store: DeviceStore & PushLedger;
  readonly senders: ReadonlyMap<PushKind, PushSender>;
  readonly clock: Clock;
  readonly observer: DeliveryObserver;
  readonly retry: RetryPolicy;
  /** How long a claim is kept: at least as long as the events it answers can come again. */
  readonly claimTtlMs: number;
  /** random in [0, 1) for the jitter (Math.random unless a test fixes it). */
  readonly random: () => number;
  /** Aborted when the notifier stops: a pending retry wait ends (the push is given up). */
  readonly signal: AbortSignal;
  /** onError hears a failure that is no push outcome (the device's removal failed). */
  readonly onError: (err: unknown, what: string) => void;
}

/** DeliveryResult is what deliverPush did: "sent", "failed" (see reason), or "claimed" (another caller holds the claim: nothing sent here). */
export type DeliveryResult =
  | { readonly kind: "sent"; readonly attempts: number }
  | { readonly kind: "failed"; readonly reason: PushFailReason; readonly attempts: number }
  | { readonly kind: "claimed" };

/**
 * deliverPush sends `content` to `device` at most once across every
 * notifier process: it first claims (device, group, newest seq) in the push
 * ledger and sends only if the claim is its own. Then it tries the device's
 * sender, retrying "retry" outcomes (429, 5xx, network) with backoff within
 * `retry`, honouring the service's Retry-After; "invalid" removes the
 * device (if it still has the token that was refused); "failed" is final.
 *
 * A claim is never released: a push whose process died after the claim and
 * before the service accepted it is lost (never twice wins over at least
 * once; docs/notifications.md). `latencyFrom` is the `at` of the newest
 * message the push tells of. Rejects only when the claim cannot be made (a
 * store failure): then nothing was sent, and the caller's event comes again.
 */
export async function deliverPush(deps: DeliveryDeps, device: Device, content: PushContent, latencyFrom: number): Promise<DeliveryResult> {
  const sender = deps.senders.get(device.kind);
  if (!sender) {
    deps.observer.pushFailed(device.kind, "not_configured");
    return { kind: "failed", reason: "not_configured", attempts: 0 };
  }
  if (!(await deps.store.claimPush(device.id, content.groupId, content.newestSeq, deps.claimTtlMs))) return { kind: "claimed" };
  const started = deps.clock.now();
  for (let attempt = 1; ; attempt++) {
    const outcome = await attemptSend(sender, device, content);
    switch (outcome.kind) {
      case "sent":
        deps.observer.pushSent(device.kind, deps.clock.now() - latencyFrom);
        return { kind: "sent", attempts: attempt };
      case "invalid":
        deps.observer.pushFailed(device.kind, "invalid_token");
        try {
          await deps.store.removeDeviceToken(device.userId, device.id, device.token);
          deps.observer.deviceRemoved(device.kind);
        } catch (err) {
          // The next push to it is refused again and retries the removal.
          deps.onError(err, "removing a device the push service refused");
        }
        return { kind: "failed", reason: "invalid_token", attempts: attempt };
      case "failed":
        deps.observer.pushFailed(device.kind, "rejected");
        return { kind: "failed", reason: "rejected", attempts: attempt };
      case "retry": {
        const delay = deps.signal.aborted
          ? undefined
          : nextRetry(attempt, deps.clock.now() - started, deps.retry, outcome.afterMs, deps.random);
        if (delay === undefined) {
          deps.observer.pushFailed(device.kind, "gave_up");
          return { kind: "failed", reason: "gave_up", attempts: attempt };
        }
        deps.observer.pushRetried(device.kind);
        const waited = await sleep(delay, true, { signal: deps.signal }).catch(() => false);
        if (!waited) {
          deps.observer.pushFailed(device.kind, "gave_up");
          return { kind: "failed", reason: "gave_up", attempts: attempt };
        }
      }
    }
  }
}

/** attemptSend is one send; a sender that throws (it must not) counts as a retryable failure. */
async function attemptSend(sender: PushSender, device: Device, content: PushContent): Promise<PushOutcome> {
  try {
    return await sender.send(device, content);
  } catch (err) {
    return { kind: "retry", reason: err instanceof Error ? err.message : String(err) };
  }
}
