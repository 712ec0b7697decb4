import type { Presence } from "../../core/ports.js";

/**
 * MemoryPresence is the in-process Presence of the embedded server: per
 * user, each holder's expiry time on the given clock. Expired entries are
 * dropped when the user is next written or read.
 */
export class MemoryPresence implements Presence {
  private readonly users = new Map<string, Map<string, number>>();

  constructor(private readonly now: () => number = Date.now) {}

  async setOnline(holder: string, userIds: readonly string[], ttlMs: number): Promise<void> {
    const until = this.now() + ttlMs;
    for (const u of userIds) {
      let holders = this.users.get(u);
      if (!holders) this.users.set(u, (holders = new Map()));
      holders.set(holder, until);
    }
  }

  async setOffline(holder: string, userIds: readonly string[]): Promise<void> {
    for (const u of userIds) {
      const holders = this.users.get(u);
      holders?.delete(holder);
      if (holders?.size === 0) this.users.delete(u);
    }
  }

  async online(userIds: readonly string[]): Promise<ReadonlySet<string>> {
    const now = this.now();
    const out = new Set<string>();
    for (const u of userIds) {
      const holders = this.users.get(u);
      if (!holders) continue;
      for (const [holder, until] of holders) if (until <= now) holders.delete(holder);
      if (holders.size > 0) out.add(u);
      else this.users.delete(u);
    }
    return out;
  }
}
