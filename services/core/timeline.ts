/**
 * Timeline: a group's one ordered list of events (DESIGN invariants 1-3), as
 * the core sees it. Modelled on centrifuge's `Broker.Publish`, which makes
 * "save to history and publish" one operation with an idempotency key: here
 * `append` returns only once the event is durable by the deployment's rule
 * and on its way to every live subscriber, and `subscribe` gives each
 * subscriber the stored events exactly once, in order, across the seam
 * between what is stored and what is live.
 *
 * One contract suite (test/contract/timeline.contract.ts) runs against every
 * deployment with no per-backend switch: embedded (SQLite + in-process
 * delivery) and production (JetStream log + Cassandra read side + the log's
 * republish, docs/production.md).
 */
import type { GroupEvent } from "./model.js";
import type { AppendResult, EventBus, GroupStore, MessageDraft, Subscription } from "./ports.js";

/** TimelineRange selects events by seq: `after` gives the oldest with seq > after, `before` the newest with seq < before. */
export type TimelineRange = { readonly after: number } | { readonly before: number };

/** AppendStep names the points of an append where a writer can die (for fault injection in tests). */
export type AppendStep = "before-durable" | "after-durable";

/**
 * Timeline is the port. Guarantees:
 * - `append` stores the message as the group's next event (seq = previous +
 *   1, dense from 1, shared with membership events) and resolves only once
 *   the event is durable by the deployment's rule (embedded: the SQLite
 *   commit with its fsync; production: stored on a quorum of the JetStream
 *   stream's replicas) and will reach every live subscriber of the group in
 *   order. It is idempotent on (group, sender, client message id): a retry,
 *   from any process, also after the first writer died at any step, returns
 *   the original (duplicate = true) and stores nothing, within the
 *   deployment's idempotency window (embedded: the retention period;
 *   production: the stream's duplicate window, default 2 minutes). Throws
 *   ChatError NotFound if the group does not exist or the sender is not a
 *   member at the event's place in the timeline.
 * - `read` returns up to `limit` retained events of the range, ascending,
 *   including events acknowledged to any writer before the call started.
 * - `subscribe` calls `handler` for every retained event with seq > afterSeq
 *   exactly once, in seq order: first those already stored, then live ones,
 *   with no gap or repeat at the seam; the event at each seq is the one
 *   stored at that seq (never a refused proposal or a retry's copy). A live
 *   event lost in transit is repaired by seq from `read` when the next one
 *   arrives or the transport resyncs. The promise resolves once live
 *   delivery is active. Handlers must not throw.
 */
export interface Timeline {
  append(draft: MessageDraft): Promise<AppendResult>;
  read(groupId: string, range: TimelineRange, limit: number): Promise<GroupEvent[]>;
  subscribe(groupId: string, afterSeq: number, handler: (event: GroupEvent) => void): Promise<Subscription>;
}

/** StoreTimelineOptions configure {@link StoreTimeline}. */
export interface StoreTimelineOptions {
  /**
   * storePublishes: the store's append already reaches the bus's
   * subscribers (production: the log's republish), so append publishes
   * nothing itself. Default false: append publishes the stored event.
   */
  readonly storePublishes?: boolean;
  /** fault, for tests: called at each step of an append; throwing there is a writer dying at that step. */
  readonly fault?: (step: AppendStep, draft: MessageDraft) => void;
}

/** READ_PAGE is how many events one repair or replay read asks for. */
const READ_PAGE = 256;

/**
 * StoreTimeline is the Timeline of a GroupStore (durability, seqs, reads)
 * and an EventBus (live delivery): the same composition in every
 * deployment, over the deployment's adapters.
 */
export class StoreTimeline implements Timeline {
  constructor(
    private readonly store: GroupStore,
    private readonly bus: EventBus,
    private readonly opts: StoreTimelineOptions = {},
  ) {}

  async append(draft: MessageDraft): Promise<AppendResult> {
    this.opts.fault?.("before-durable", draft);
    const result = await this.store.appendMessage(draft);
    this.opts.fault?.("after-durable", draft);
    if (!result.duplicate && !this.opts.storePublishes) await this.bus.publishEvent(result.event);
    return result;
  }

  async read(groupId: string, range: TimelineRange, limit: number): Promise<GroupEvent[]> {
    const n = Math.max(0, Math.floor(limit));
    if (n === 0) return [];
    if ("after" in range) return this.store.readEvents(groupId, range.after, n);
    // Retained seqs are dense (only the oldest expire), so the newest n below `before` start at before - n.
    const from = Math.max(0, range.before - 1 - n);
    const events = await this.store.readEvents(groupId, from, n);
    return events.filter((e) => e.seq < range.before);
  }

  async subscribe(groupId: string, afterSeq: number, handler: (event: GroupEvent) => void): Promise<Subscription> {
    const follower = new Follower(groupId, afterSeq, handler, (after) => this.store.readEvents(groupId, after, READ_PAGE));
    const sub = await this.bus.subscribeGroup(groupId, (e) => follower.live(e));
    follower.attach(sub);
    this.bus.onResync(() => follower.repair());
    // Live delivery is active: what was stored before it is read now; anything live is held until then.
    await follower.repair();
    return follower;
  }
}

/**
 * Follower delivers one subscription's events in seq order exactly once: it
 * keeps the last seq delivered, drops what is at or below it, delivers the
 * next seq at once, and for anything beyond it reads the store from the last
 * delivered seq (one repair at a time; live events arriving meanwhile wait).
 */
class Follower implements Subscription {
  private delivered: number;
  private repairing: Promise<void> | undefined;
  private again = false;
  private closed = false;
  private sub: Subscription | undefined;
  private readonly held = new Map<number, GroupEvent>();

  constructor(
    private readonly groupId: string,
    afterSeq: number,
    private readonly handler: (event: GroupEvent) => void,
    private readonly readAfter: (after: number) => Promise<GroupEvent[]>,
  ) {
    this.delivered = afterSeq;
  }

  attach(sub: Subscription): void {
    this.sub = sub;
  }

  live(e: GroupEvent): void {
    if (this.closed || e.groupId !== this.groupId || e.seq <= this.delivered) return;
    if (e.seq === this.delivered + 1 && !this.repairing) {
      this.deliver(e);
      this.drainHeld();
      return;
    }
    // Ahead of what was delivered (a gap: lost in transit, or a repair in progress): hold it and repair.
    if (this.held.size < READ_PAGE) this.held.set(e.seq, e);
    void this.repair();
  }

  /** repair reads the store from the last delivered seq until it has nothing newer; safe to call at any time. */
  repair(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.repairing) {
      this.again = true;
      return this.repairing;
    }
    const before = this.delivered;
    this.repairing = (async () => {
      try {
        do {
          this.again = false;
          for (;;) {
            const page = await this.readAfter(this.delivered);
            for (const e of page) if (!this.closed && e.seq > this.delivered) this.deliver(e);
            if (page.length < READ_PAGE || this.closed) break;
          }
        } while (this.again && !this.closed);
      } finally {
        this.repairing = undefined;
      }
      this.drainHeld(this.delivered === before);
    })();
    return this.repairing;
  }

  unsubscribe(): void {
    this.closed = true;
    this.held.clear();
    this.sub?.unsubscribe();
  }

  private deliver(e: GroupEvent): void {
    // Seqs are dense: a stored event below the next one is a repeat; a retained gap (expired events) is skipped.
    this.delivered = e.seq;
    this.held.delete(e.seq);
    this.handler(e);
  }

  /**
   * drainHeld delivers held events that follow the last delivered one. With
   * `stuck` (a repair found nothing newer), the store does not hold what lies
   * before the oldest held event (past retention): delivery goes on from it.
   */
  private drainHeld(stuck = false): void {
    for (const k of [...this.held.keys()]) if (k <= this.delivered) this.held.delete(k);
    if (stuck && this.held.size > 0) {
      const oldest = Math.min(...this.held.keys());
      this.delivered = oldest - 1;
    }
    let next = this.held.get(this.delivered + 1);
    while (next && !this.closed) {
      this.deliver(next);
      next = this.held.get(this.delivered + 1);
    }
    // Still holding events beyond a gap: the store has what lies between.
    if (this.held.size > 0 && !this.repairing && !this.closed) void this.repair();
  }
}
