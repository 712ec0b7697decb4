import type { GroupEvent } from "../../core/model.js";
import type { EventBus, Subscription, UserNotice } from "../../core/ports.js";

/**
 * MemoryEventBus is the in-process EventBus of the embedded mode: it delivers
 * synchronously (before publish resolves), exactly once and in publish order,
 * to every subscriber of this process, and never loses an event while a
 * subscription is active. A handler that throws does not affect other
 * handlers. A value published from inside a handler is delivered right after
 * the current one has reached every handler (not nested inside it), so
 * publish order holds for every subscriber.
 */
export class MemoryEventBus implements EventBus {
  private readonly groups = new Topics<GroupEvent>();
  private readonly users = new Topics<UserNotice>();

  async publishEvent(event: GroupEvent): Promise<void> {
    this.groups.publish(event.groupId, event);
  }

  async subscribeGroup(groupId: string, handler: (event: GroupEvent) => void): Promise<Subscription> {
    return this.groups.subscribe(groupId, handler);
  }

  async publishUser(userId: string, notice: UserNotice): Promise<void> {
    this.users.publish(userId, notice);
  }

  async subscribeUser(userId: string, handler: (notice: UserNotice) => void): Promise<Subscription> {
    return this.users.subscribe(userId, handler);
  }

  /** onResync is never called: an in-process bus cannot miss events. */
  onResync(_handler: () => void): void {}

  async close(): Promise<void> {
    this.groups.clear();
    this.users.clear();
  }
}

/** Entry is one subscription's handler; inactive once unsubscribed. */
interface Entry<T> {
  readonly handler: (value: T) => void;
  active: boolean;
}

/**
 * Topics is a map of topic name to handler set. Values published from inside
 * a handler are queued and delivered after the current value has reached
 * every handler, so every subscriber sees one topic's values in publish order.
 */
class Topics<T> {
  private readonly byTopic = new Map<string, Set<Entry<T>>>();
  private readonly pending: { topic: string; value: T }[] = [];
  private delivering = false;

  publish(topic: string, value: T): void {
    this.pending.push({ topic, value });
    if (this.delivering) return;
    this.delivering = true;
    try {
      for (let next = this.pending.shift(); next; next = this.pending.shift()) this.deliver(next.topic, next.value);
    } finally {
      this.delivering = false;
    }
  }

  private deliver(topic: string, value: T): void {
    const entries = this.byTopic.get(topic);
    if (!entries) return;
    for (const entry of [...entries]) {
      // An entry unsubscribed by an earlier handler of this same value is skipped.
      if (!entry.active) continue;
      try {
        entry.handler(value);
      } catch {
        // A failing subscriber must not break fan-out to the others.
      }
    }
  }

  subscribe(topic: string, handler: (value: T) => void): Subscription {
    let entries = this.byTopic.get(topic);
    if (!entries) {
      entries = new Set();
      this.byTopic.set(topic, entries);
    }
    // A fresh entry per call, so the same function subscribed twice gets two subscriptions.
    const entry: Entry<T> = { handler, active: true };
    entries.add(entry);
    return {
      unsubscribe: () => {
        entry.active = false;
        const set = this.byTopic.get(topic);
        if (!set) return;
        set.delete(entry);
        if (set.size === 0) this.byTopic.delete(topic);
      },
    };
  }

  clear(): void {
    for (const entries of this.byTopic.values()) {
      for (const entry of entries) entry.active = false;
    }
    this.byTopic.clear();
  }
}
