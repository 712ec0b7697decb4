/**
 * Contract suite for the MembershipCache port (services/core/ports.ts). Every
 * MembershipCache adapter (memory, Redis, ...) runs it; it tests only what the
 * port's doc comments promise (expiry and eviction are adapter matters and are
 * tested beside each adapter).
 *
 * The suite may run against a shared, long-lived server: every test uses
 * fresh group and user ids (newId()) and never assumes the cache is empty.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { newId } from "../../services/core/ids.js";
import type { Role } from "../../services/core/model.js";
import type { MembershipCache } from "../../services/core/ports.js";

/** MembershipCacheContractOptions tunes membershipCacheContract for one adapter. */
export interface MembershipCacheContractOptions {
  /** Skip the whole suite (e.g. when the adapter's server is not configured). */
  readonly skip?: boolean;
  /** cleanup runs once after the suite (delete the run's keys, close clients). */
  readonly cleanup?: () => Promise<void>;
}

const ROLES: readonly Role[] = ["member", "admin", "owner"];

/**
 * membershipCacheContract registers the MembershipCache contract tests for
 * one adapter. `make` is called once per suite; `opts.cleanup` runs after it.
 */
export function membershipCacheContract(
  name: string,
  make: () => Promise<MembershipCache>,
  opts: MembershipCacheContractOptions = {},
): void {
  describe(`MembershipCache contract: ${name}`, { skip: opts.skip ?? false }, () => {
    let cache: MembershipCache;

    before(async () => {
      cache = await make();
    });

    after(async () => {
      await opts.cleanup?.();
    });

    it("returns undefined on a miss", async () => {
      assert.equal(await cache.getRole(newId(), newId()), undefined);
    });

    it("returns the role that was set, for every role, and the latest after an overwrite", async () => {
      for (const role of ROLES) {
        const g = newId();
        const u = newId();
        await cache.setRole(g, u, role);
        assert.equal(await cache.getRole(g, u), role);
      }
      const g = newId();
      const u = newId();
      const sequence: (Role | null)[] = ["member", "admin", null, "owner", "member", null];
      for (const role of sequence) {
        await cache.setRole(g, u, role);
        assert.equal(await cache.getRole(g, u), role, `after setting ${String(role)}`);
      }
    });

    it("caches 'not a member' as null, distinct from a miss", async () => {
      const g = newId();
      const u = newId();
      await cache.setRole(g, u, null);
      assert.equal(await cache.getRole(g, u), null);
      assert.equal(await cache.getRole(g, newId()), undefined);
    });

    it("drops a role or a null on invalidate, and invalidating a miss is harmless", async () => {
      const g = newId();
      const member = newId();
      const stranger = newId();
      await cache.setRole(g, member, "admin");
      await cache.setRole(g, stranger, null);
      await cache.invalidate(g, member);
      await cache.invalidate(g, stranger);
      assert.equal(await cache.getRole(g, member), undefined);
      assert.equal(await cache.getRole(g, stranger), undefined);

      await cache.invalidate(g, member);
      await cache.invalidate(newId(), newId());
      assert.equal(await cache.getRole(g, member), undefined);

      await cache.setRole(g, member, "member");
      assert.equal(await cache.getRole(g, member), undefined, "a read racing the change cannot cache the old answer back");
    });

    it("keeps entries apart by (group, user)", async () => {
      const g1 = newId();
      const g2 = newId();
      const u1 = newId();
      const u2 = newId();
      await cache.setRole(g1, u1, "owner");
      assert.equal(await cache.getRole(g1, u2), undefined);
      assert.equal(await cache.getRole(g2, u1), undefined);
      assert.equal(await cache.getRole(u1, g1), undefined, "swapped ids are another pair");

      await cache.setRole(g2, u1, null);
      await cache.setRole(g1, u2, "member");
      assert.equal(await cache.getRole(g1, u1), "owner");
      assert.equal(await cache.getRole(g2, u1), null);
      assert.equal(await cache.getRole(g1, u2), "member");

      await cache.invalidate(g1, u1);
      assert.equal(await cache.getRole(g1, u1), undefined);
      assert.equal(await cache.getRole(g2, u1), null);
      assert.equal(await cache.getRole(g1, u2), "member");
    });

    it("keeps apart pairs whose ids would concatenate to the same string", async () => {
      const base = newId();
      for (const sep of ["/", ":", "|", "."]) {
        const left = { g: `${base}${sep}x`, u: `y-${sep}` };
        const right = { g: base, u: `x${sep}y-${sep}` };
        await cache.setRole(left.g, left.u, "admin");
        assert.equal(await cache.getRole(right.g, right.u), undefined, `separator ${sep}`);
        await cache.setRole(right.g, right.u, null);
        assert.equal(await cache.getRole(left.g, left.u), "admin", `separator ${sep}`);
        assert.equal(await cache.getRole(right.g, right.u), null, `separator ${sep}`);
      }
    });
  });
}
