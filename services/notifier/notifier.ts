/**
 * The notifier: offline members learn of new messages through pushes,
 * coalesced per (user, group) within a window, sent at most once per
 * (device, group, newest seq), with nothing dropped.
 *
 * It follows every group's events durably (EventFeed, follower name
 * "notifier": in-process when embedded, a durable JetStream consumer shared
 * by any number of notifier processes in production). A message event opens
 * a window for its group (or joins the open one); when the window closes,
 * the group's pushes are decided from the store's current state
 * (push-plan.ts) and sent (push-delivery.ts). The handler's promise for an
 * event resolves only once the flush that covers it has finished, so the
 * feed acknowledges an event only after its pushes were decided and sent or
 * given up: a notifier killed with a window open gets the events again
 * (here after a restart, or on another instance), and the push ledger's
 * claims keep the second decision from sending anything the first one sent.
 */
import type { Logger } from "../core/logger.js";
import { mapLimit } from "../core/map-limit.js";
import type { GroupEvent, PushKind } from "../core/model.js";
import type { Clock, DeviceStore, EventFeed, GroupStore, Presence, PushLedger, PushSender, ReadStateStore, Subscription } from "../core/ports.js";
import type { RetryPolicy } from "./backoff.js";
import { type DeliveryDeps, type DeliveryObserver, deliverPush } from "./push-delivery.js";
import { type KnownMessage, type SkipReason, planPushes } from "./push-plan.js";

/** FOLLOWER_NAME is the notifier's durable follower name on the EventFeed: every notifier instance shares it. */
export const FOLLOWER_NAME = "notifier";

/** NotifierObserver hears what the notifier does (server/metrics.ts turns it into Prometheus metrics). */
export interface NotifierObserver extends DeliveryObserver {
  /** memberSkipped: `members` members got no push from a flush, for `reason`. */
  memberSkipped(reason: SkipReason, members: number): void;
  /** flushed: a window's flush finished ("ok") or failed ("error": a store read or claim failed; its events come again). */
  flushed(result: "ok" | "error"): void;
}

/** NotifierSettings tune the notifier. */
export interface NotifierSettings {
  /** How long a group's window stays open after its first event (NOTIFY_WINDOW); 0 closes it on the next turn of the event loop. */
  readonly windowMs: number;
  /** Events handed out and not yet acknowledged, per instance (EventFeed maxPending). */
  readonly maxPending: number;
  /** How long the feed waits for an event's acknowledgement before it hands it out again; more than a window, a flush and its retries. */
  readonly ackWaitMs: number;
  readonly retry: RetryPolicy;
  /** How long a push claim is kept (at least as long as an event can come again). */
  readonly claimTtlMs: number;
  readonly maxGroupMembers: number;
  readonly maxGroupsPerUser: number;
  /** Members planned and devices sent to at once, per flush. */
  readonly concurrency: number;
}

/** NotifierDeps are the notifier's ports and settings. */
export interface NotifierDeps {
  readonly feed: EventFeed;
  readonly store: GroupStore & ReadStateStore & DeviceStore & PushLedger;
  readonly presence: Presence;
  /** The sender of each configured provider; a device of another kind gets no push (failed, "not_configured"). */
  readonly senders: ReadonlyMap<PushKind, PushSender>;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly observer: NotifierObserver;
  readonly settings: NotifierSettings;
  /** random in [0, 1) for retry jitter; Math.random by default. */
  readonly random?: () => number;
}

/** Window is one group's open coalescing window: the messages it has seen and the promise every one of their handlers returned. */
class Window {
  readonly messages = new Map<number, KnownMessage>();
  readonly done: Promise<void>;
  resolve!: () => void;
  reject!: (err: unknown) => void;
  timer: NodeJS.Timeout | undefined;

  constructor(readonly groupId: string) {
    this.done = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // A rejection is the feed's business (it hands the event out again); never an unhandled rejection here.
    this.done.catch(() => {});
  }
}

/**
 * Notifier is the push worker of one process. Guarantees:
 * - each message event is acknowledged only after a flush that started
 *   after the event arrived has finished (pushes sent, given up or found
 *   claimed); a flush that fails (store unreachable) rejects its events,
 *   which come again;
 * - one flush per group at a time in this process (flushes of one group run
 *   in window order), so a device sees a group's pushes in order;
 * - never twice per (device, group, newest seq), across windows,
 *   redeliveries, restarts and instances (the push ledger's claim precedes
 *   each send);
 * - stop() closes every open window at once, waits up to its grace for the
 *   flushes, then unsubscribes; events not yet acknowledged come again.
 */
export class Notifier {
  private readonly windows = new Map<string, Window>();
  /** The tail of each group's chain of flushes. */
  private readonly flushing = new Map<string, Promise<void>>();
  private readonly abort = new AbortController();
  private subscription: Subscription | undefined;
  private stopping = false;
  private readonly delivery: DeliveryDeps;

  constructor(private readonly deps: NotifierDeps) {
    this.delivery = {
      store: deps.store,
      senders: deps.senders,
      clock: deps.clock,
      observer: deps.observer,
      retry: deps.settings.retry,
      claimTtlMs: deps.settings.claimTtlMs,
      random: deps.random ?? Math.random,
      signal: this.abort.signal,
      onError: (err, what) => deps.logger.warn({ err }, `notifier: ${what} failed`),
    };
  }

  /** start begins following the feed; resolves once the follower is active. */
  async start(): Promise<void> {
    const { maxPending, ackWaitMs } = this.deps.settings;
    this.subscription = await this.deps.feed.follow(FOLLOWER_NAME, (event) => this.onEvent(event), { maxPending, ackWaitMs });
  }

  /** pending is the number of groups with an open window or a flush in progress (for tests and metrics). */
  get pending(): number {
    return new Set([...this.windows.keys(), ...this.flushing.keys()]).size;
  }

  /**
   * stop flushes every open window now and waits up to `graceMs` for the
   * flushes to finish; then it unsubscribes from the feed and abandons
   * pending retry waits (those pushes are given up: their claims stay).
   * Idempotent.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const w of [...this.windows.values()]) this.close(w);
    const all = Promise.allSettled([...this.flushing.values()]);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    this.abort.abort();
    this.subscription?.unsubscribe();
    // Flushes of events that arrived while stopping (their windows closed at once), and those past the grace.
    await Promise.allSettled([...this.flushing.values()]);
  }

  /** onEvent is the feed's handler: a message joins its group's window and resolves with its flush; anything else at once. */
  private onEvent(event: GroupEvent): Promise<void> {
    if (event.body.type !== "message") return Promise.resolve();
    let w = this.windows.get(event.groupId);
    if (!w) {
      const opened = new Window(event.groupId);
      w = opened;
      this.windows.set(event.groupId, opened);
      opened.timer = setTimeout(() => this.close(opened), this.stopping ? 0 : this.deps.settings.windowMs);
    }
    const message = event.body.message;
    w.messages.set(message.seq, { message, at: event.at });
    return w.done;
  }

  /** close ends a window and queues its flush behind the group's running one. */
  private close(w: Window): void {
    if (this.windows.get(w.groupId) !== w) return;
    this.windows.delete(w.groupId);
    clearTimeout(w.timer);
    const before = this.flushing.get(w.groupId) ?? Promise.resolve();
    const run = before.then(() => this.flush(w));
    this.flushing.set(w.groupId, run);
    run.then(() => {
      if (this.flushing.get(w.groupId) === run) this.flushing.delete(w.groupId);
    });
  }

  /** flush decides and sends the window's pushes; settles the window's promise; never rejects. */
  private async flush(w: Window): Promise<void> {
    const { deps } = this;
    try {
      const plans = await planPushes(
        {
          store: deps.store,
          presence: deps.presence,
          clock: deps.clock,
          onSkip: (reason, n) => deps.observer.memberSkipped(reason, n),
          onPresenceError: (err) => deps.logger.warn({ err }, "notifier: presence unavailable; members count as offline"),
          settings: {
            maxGroupMembers: deps.settings.maxGroupMembers,
            maxGroupsPerUser: deps.settings.maxGroupsPerUser,
            concurrency: deps.settings.concurrency,
          },
        },
        w.groupId,
        w.messages,
      );
      const sends = plans.flatMap((plan) => plan.devices.map((device) => ({ plan, device })));
      await mapLimit(sends, deps.settings.concurrency, async ({ plan, device }) => {
        const result = await deliverPush(this.delivery, device, plan.content, plan.newestAt);
        if (result.kind === "failed" && result.reason !== "not_configured") {
          deps.logger.debug({ kind: device.kind, reason: result.reason, attempts: result.attempts, groupId: w.groupId }, "push not delivered");
        }
      });
      deps.observer.flushed("ok");
      w.resolve();
    } catch (err) {
      deps.observer.flushed("error");
      deps.logger.warn({ err, groupId: w.groupId }, "notifier: flush failed; its events come again");
      w.reject(err);
    }
  }
}
