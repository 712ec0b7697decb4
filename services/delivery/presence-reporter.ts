import type { Presence } from "../core/ports.js";

/** StreamPresence is what the StreamHub tells about its streams' users. */
export interface StreamPresence {
  /** opened: a stream of the user was set up on this process. */
  opened(userId: string): void;
  /** closed: a stream that `opened` reported has ended. */
  closed(userId: string): void;
}

/** PresenceReporterOptions configure a PresenceReporter. */
export interface PresenceReporterOptions {
  /** holder names this process in the Presence port (unique per process incarnation). */
  readonly holder: string;
  /** ttlMs is how long an entry lives unrefreshed; the reporter refreshes every ttlMs / 3. */
  readonly ttlMs: number;
  /** onError hears a failed Presence call (presence is a hint: nothing is retried until the next refresh). */
  readonly onError: (e: unknown) => void;
}

/**
 * PresenceReporter keeps the Presence port told which users hold a live
 * stream on this process: a user becomes online with their first local
 * stream and offline with their last. Changes are coalesced per event-loop
 * turn into one setOnline and one setOffline call; every ttlMs / 3 all
 * local users are refreshed, so a process that dies stops counting after
 * at most ttlMs, and an update lost to an unreachable cache heals at the
 * next refresh.
 */
export class PresenceReporter implements StreamPresence {
  private readonly streams = new Map<string, number>();
  private readonly changed = new Set<string>();
  private flushing: NodeJS.Immediate | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly presence: Presence,
    private readonly opts: PresenceReporterOptions,
  ) {
    this.timer = setInterval(() => void this.refresh(), Math.max(1, Math.floor(opts.ttlMs / 3)));
    this.timer.unref();
  }

  opened(userId: string): void {
    const n = (this.streams.get(userId) ?? 0) + 1;
    this.streams.set(userId, n);
    if (n === 1) this.touch(userId);
  }

  closed(userId: string): void {
    const n = (this.streams.get(userId) ?? 0) - 1;
    if (n > 0) {
      this.streams.set(userId, n);
      return;
    }
    this.streams.delete(userId);
    this.touch(userId);
  }

  /** refresh renews every local user's entry (the timer calls it). */
  async refresh(): Promise<void> {
    const users = [...this.streams.keys()];
    if (users.length > 0) await this.presence.setOnline(this.opts.holder, users, this.opts.ttlMs).catch(this.opts.onError);
  }

  /** stop ends the refreshes and takes this process's users offline. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    if (this.flushing) clearImmediate(this.flushing);
    this.flushing = undefined;
    const users = [...new Set([...this.streams.keys(), ...this.changed])];
    this.streams.clear();
    this.changed.clear();
    if (users.length > 0) await this.presence.setOffline(this.opts.holder, users).catch(this.opts.onError);
  }

  private touch(userId: string): void {
    this.changed.add(userId);
    this.flushing ??= setImmediate(() => void this.flush());
  }

  /** flush sends each changed user's current state (a user that came and went in one turn is sent offline). */
  private async flush(): Promise<void> {
    this.flushing = undefined;
    const online: string[] = [];
    const offline: string[] = [];
    for (const u of this.changed) (this.streams.has(u) ? online : offline).push(u);
    this.changed.clear();
    await Promise.all([
      online.length > 0 ? this.presence.setOnline(this.opts.holder, online, this.opts.ttlMs).catch(this.opts.onError) : undefined,
      offline.length > 0 ? this.presence.setOffline(this.opts.holder, offline).catch(this.opts.onError) : undefined,
    ]);
  }
}
