import type { GroupEvent } from "./model.js";
import type { EventBus, UserNotice } from "./ports.js";

/**
 * Fanout publishes after a durable write. A publish that fails (a remote bus
 * unreachable) is reported to `onError` and never thrown: the write has
 * happened and the caller must hear so, and subscribers repair what they
 * missed from the store (by seq at the group's next event, or when their bus
 * connection comes back). A lost `joined` notice delays a group on already
 * open streams of the added user until they reconnect.
 */
export class Fanout {
  constructor(
    private readonly bus: EventBus,
    private readonly onError: (e: unknown) => void = () => {},
  ) {}

  /** event publishes a durable group event. */
  async event(event: GroupEvent): Promise<void> {
    await this.bus.publishEvent(event).catch(this.onError);
  }

  /** notice publishes a per-user notice. */
  async notice(userId: string, notice: UserNotice): Promise<void> {
    await this.bus.publishUser(userId, notice).catch(this.onError);
  }
}
