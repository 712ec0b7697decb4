import type { GroupEvent } from "../../core/model.js";
import type { EventBus, Subscription, UserNotice } from "../../core/ports.js";

/**
 * MemoryEventBus is the in-process EventBus of the embedded mode: it delivers
 * synchronously, in publish order, to every subscriber of this process, and
 * never loses an event while a subscription is active. A handler that throws
 * does not affect other handlers.
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

  async close(): Promise<void> {
    this.groups.clear();
    this.users.clear();
  }
}

/** Topics is a map of topic name to handler set. */
class Topics<T> {
  private readonly byTopic = new Map<string, Set<(value: T) => void>>();

  publish(topic: string, value: T): void {
    const handlers = this.byTopic.get(topic);
    if (!handlers) return;
    for (const handler of [...handlers]) {
      try {
        handler(value);
      } catch {
        // A failing subscriber must not break fan-out to the others.
      }
    }
  }

  subscribe(topic: string, handler: (value: T) => void): Subscription {
    let handlers = this.byTopic.get(topic);
    if (!handlers) {
      handlers = new Set();
      this.byTopic.set(topic, handlers);
    }
    // Wrap so that the same function subscribed twice gets two subscriptions.
    const entry = (value: T) => handler(value);
    handlers.add(entry);
    return {
      unsubscribe: () => {
        const set = this.byTopic.get(topic);
        if (!set) return;
        set.delete(entry);
        if (set.size === 0) this.byTopic.delete(topic);
      },
    };
  }

  clear(): void {
    this.byTopic.clear();
  }
}
