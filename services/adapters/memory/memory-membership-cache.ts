import type { Role } from "../../core/model.js";
import type { MembershipCache } from "../../core/ports.js";

/**
 * MemoryMembershipCache is the in-process MembershipCache: a bounded map
 * (oldest entries evicted first) whose entries expire after `ttlMs`, so even a
 * missed invalidation heals by itself. `invalidate` leaves a tombstone for
 * INVALIDATION_HOLD_MS during which setRole is ignored (see the port).
 */
export class MemoryMembershipCache implements MembershipCache {
  private readonly entries = new Map<string, { role: Role | null; expiresAt: number; tombstone: boolean }>();

  constructor(
    private readonly opts: { maxEntries: number; ttlMs: number; now?: () => number } = { maxEntries: 100_000, ttlMs: 60_000 },
  ) {}

  async getRole(groupId: string, userId: string): Promise<Role | null | undefined> {
    const key = cacheKey(groupId, userId);
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.tombstone ? undefined : entry.role;
  }

  async setRole(groupId: string, userId: string, role: Role | null): Promise<void> {
    const key = cacheKey(groupId, userId);
    const existing = this.entries.get(key);
    if (existing?.tombstone && existing.expiresAt > this.now()) return;
    this.entries.delete(key);
    this.entries.set(key, { role, expiresAt: this.now() + this.opts.ttlMs, tombstone: false });
    while (this.entries.size > this.opts.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
  }

  async invalidate(groupId: string, userId: string): Promise<void> {
    const key = cacheKey(groupId, userId);
    this.entries.delete(key);
    this.entries.set(key, { role: null, expiresAt: this.now() + INVALIDATION_HOLD_MS, tombstone: true });
  }

  private now(): number {
    return this.opts.now ? this.opts.now() : Date.now();
  }
}

/** INVALIDATION_HOLD_MS is how long after an invalidation the pair is not cached again. */
export const INVALIDATION_HOLD_MS = 5_000;

/** cacheKey is unambiguous for any strings: the length prefix keeps ("a/b", "c") apart from ("a", "b/c"). */
function cacheKey(groupId: string, userId: string): string {
  return `${groupId.length}:${groupId}/${userId}`;
}
