import { groupNotFound } from "./errors.js";
import type { Role } from "./model.js";
import type { GroupStore, MembershipCache } from "./ports.js";

/**
 * Membership answers "is this user a member of this group, and with which
 * role?" from the cache, then the store (DESIGN flow 1), and is the one place
 * every use-case authorizes group access through.
 *
 * The cache is an optimization, never a dependency: if it fails (Redis
 * down), reads go to the store and cache writes are skipped. A failed
 * invalidation leaves the old answer cached for at most the cache's TTL;
 * sends stay safe because the store re-checks membership when it appends.
 */
export class Membership {
  constructor(
    private readonly store: Pick<GroupStore, "getMember">,
    private readonly cache: MembershipCache,
    /** onCacheError hears about cache failures (for logging); the call itself goes on. */
    private readonly onCacheError: (e: unknown) => void = () => {},
  ) {}

  /** roleOf returns the user's role in the group, or null if not a member (or no such group). */
  async roleOf(groupId: string, userId: string): Promise<Role | null> {
    const cached = await this.cache.getRole(groupId, userId).catch(this.miss);
    if (cached !== undefined) return cached;
    const member = await this.store.getMember(groupId, userId);
    const role = member?.role ?? null;
    await this.cache.setRole(groupId, userId, role).catch(this.miss);
    return role;
  }

  /** requireMember returns the user's role, or throws NotFound exactly as for a missing group. */
  async requireMember(groupId: string, userId: string): Promise<Role> {
    const role = await this.roleOf(groupId, userId);
    if (role === null) throw groupNotFound(groupId);
    return role;
  }

  /** changed must be called after a durable membership change of the pair. */
  async changed(groupId: string, userId: string): Promise<void> {
    await this.cache.invalidate(groupId, userId).catch(this.miss);
  }

  private readonly miss = (e: unknown): undefined => {
    this.onCacheError(e);
    return undefined;
  };
}
