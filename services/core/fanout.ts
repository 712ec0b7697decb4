import type { GroupEvent } from "./model.js";
import type { EventBus, RecentMessages, UserNotice } from "./ports.js";

/** FanoutStep names what failed after a durable write. */
export type FanoutStep = "publish" | "recent";

/**
 * Fanout runs what follows a durable write: it publishes the event to the
 * bus and records it in the recent-messages cache. A step that fails (a
 * remote bus or cache unreachable) is reported to `onError` and never
 * thrown: the write has happened and the caller must hear so. Subscribers
 * repair what they missed from the store (by seq at the group's next event,
 * or when their bus connection comes back), and the cache starts a new
 * window at the group's next event, so history reads go to the store until
 * then. A lost `joined` notice delays a group on already open streams of the
 * added user until they reconnect.
 */
export class Fanout {
  constructor(
    private readonly bus: EventBus,
    private readonly onError: (e: unknown, step: FanoutStep) => void = () => {},
    private readonly recent?: RecentMessages,
  ) {}

  /** event publishes a durable group event and records it as recent. */
  async event(event: GroupEvent): Promise<void> {
    await Promise.all([
      this.bus.publishEvent(event).catch((e: unknown) => this.onError(e, "publish")),
      this.recent?.record(event).catch((e: unknown) => this.onError(e, "recent")),
    ]);
  }

  /** notice publishes a per-user notice. */
  async notice(userId: string, notice: UserNotice): Promise<void> {
    await this.bus.publishUser(userId, notice).catch((e: unknown) => this.onError(e, "publish"));
  }
}
