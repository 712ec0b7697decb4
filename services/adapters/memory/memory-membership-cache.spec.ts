import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { membershipCacheContract } from "../../../test/contract/membership-cache.contract.js";
import { INVALIDATION_HOLD_MS, MemoryMembershipCache } from "./memory-membership-cache.js";

membershipCacheContract("memory", async () => new MemoryMembershipCache());

describe("MemoryMembershipCache", () => {
  it("expires entries ttlMs after they were set, and a new set restarts the ttl", async () => {
    let t = 1_000;
    const cache = new MemoryMembershipCache({ maxEntries: 10, ttlMs: 500, now: () => t });
    await cache.setRole("g", "member", "admin");
    await cache.setRole("g", "stranger", null);
    t += 499;
    assert.equal(await cache.getRole("g", "member"), "admin");
    assert.equal(await cache.getRole("g", "stranger"), null);
    await cache.setRole("g", "member", "admin");
    t += 1;
    assert.equal(await cache.getRole("g", "member"), "admin", "refreshed by the second set");
    assert.equal(await cache.getRole("g", "stranger"), undefined, "expired at ttlMs");
    t += 499;
    assert.equal(await cache.getRole("g", "member"), undefined);
  });

  it("holds an invalidated pair for INVALIDATION_HOLD_MS, then caches it again", async () => {
    let t = 1_000;
    const cache = new MemoryMembershipCache({ maxEntries: 10, ttlMs: 60_000, now: () => t });
    await cache.setRole("g", "u", null);
    await cache.invalidate("g", "u");
    await cache.setRole("g", "u", null); // a read that started before the change
    assert.equal(await cache.getRole("g", "u"), undefined);
    t += INVALIDATION_HOLD_MS;
    await cache.setRole("g", "u", "member");
    assert.equal(await cache.getRole("g", "u"), "member");
  });

  it("evicts the oldest-set entries beyond maxEntries", async () => {
    const t = 0;
    const cache = new MemoryMembershipCache({ maxEntries: 2, ttlMs: 60_000, now: () => t });
    await cache.setRole("g", "a", "member");
    await cache.setRole("g", "b", null);
    await cache.setRole("g", "c", "owner");
    assert.equal(await cache.getRole("g", "a"), undefined, "oldest evicted");
    assert.equal(await cache.getRole("g", "b"), null);
    assert.equal(await cache.getRole("g", "c"), "owner");

    // Setting again makes an entry the newest, so "c" is now the oldest.
    await cache.setRole("g", "b", "admin");
    await cache.setRole("g", "d", "member");
    assert.equal(await cache.getRole("g", "c"), undefined);
    assert.equal(await cache.getRole("g", "b"), "admin");
    assert.equal(await cache.getRole("g", "d"), "member");
  });
});
