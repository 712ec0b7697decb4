/**
 * GroupService.createGroup with listed members and MAX_GROUPS_PER_USER (on a
 * real SQLite store): members at the limit are refused before anything is
 * written, all of them named at once; a member who reaches the limit between
 * that check and their addition (a race) is left out of a group that is
 * created all the same, and the answer says so, so a retry does not create a
 * second group. The pre-checks run concurrently, a few at a time.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { MemoryEventBus } from "../adapters/memory/memory-bus.js";
import { MemoryMembershipCache } from "../adapters/memory/memory-membership-cache.js";
import { MemoryPresence } from "../adapters/memory/memory-presence.js";
import { createSqliteStore } from "../adapters/sqlite/sqlite-store.js";
import { isChatError } from "../core/errors.js";
import { Fanout } from "../core/fanout.js";
import { newId } from "../core/ids.js";
import { Membership } from "../core/membership.js";
import type { UserRef } from "../core/model.js";
import { type Store, systemClock } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import { GroupService } from "./group-service.js";

const MAX = 2;

describe("GroupService.createGroup with listed members at MAX_GROUPS_PER_USER", () => {
  let store: Store;
  before(() => {
    store = createSqliteStore({ path: ":memory:", retentionMs: 86_400_000, clock: systemClock });
  });
  after(async () => {
    await store.close();
  });

  function service(s: Store): GroupService {
    return new GroupService({
      store: s,
      membership: new Membership(s, new MemoryMembershipCache()),
      fanout: new Fanout(new MemoryEventBus()),
      presence: new MemoryPresence(),
      clock: systemClock,
      settings: { maxMembers: 100, maxGroupsPerUser: MAX },
    });
  }

  async function user(name: string): Promise<UserRef & { principal: Principal }> {
    const id = newId();
    const username = `${name}${id.slice(-8)}`;
    await store.createUser({ id, username, passwordHash: "$argon2id$x", createdAt: Date.now() });
    return { id, username, principal: { userId: id, username, sessionId: newId(), expiresAt: Date.now() + 3_600_000 } };
  }

  /** full makes a user who is in MAX groups already. */
  async function full(name: string) {
    const u = await user(name);
    for (let i = 0; i < MAX; i++) await service(store).createGroup(u.principal, `${name}${i}`, []);
    return u;
  }

  it("refuses before creating anything, naming every listed member at the limit", async () => {
    const owner = await user("own");
    const [bob, carol] = [await full("bob"), await full("carol")];
    const dave = await user("dave");
    await assert.rejects(
      service(store).createGroup(owner.principal, "g", [bob.username, dave.username, carol.username]),
      (e: unknown) =>
        isChatError(e, "FailedPrecondition") &&
        e.message.includes(bob.username) &&
        e.message.includes(carol.username) &&
        !e.message.includes(dave.username) &&
        /MAX_GROUPS_PER_USER/.test(e.message),
    );
    assert.equal(await store.countMemberships(owner.id, 10), 0, "no group was created");
    assert.equal(await store.countMemberships(dave.id, 10), 0);
  });

  it("creates the group with the members that fit when one reaches the limit after the check, and says who was left out", async () => {
    const owner = await user("own");
    const bob = await full("bob");
    const dave = await user("dave");
    // Bob's count is read as it was before his other joins landed: he passes the check, then his add is refused.
    const racing = Object.assign(Object.create(store) as Store, {
      countMemberships: async (userId: string, upTo: number) => (userId === bob.id ? 0 : store.countMemberships(userId, upTo)),
    });
    const created = await service(racing).createGroup(owner.principal, "g", [bob.username, dave.username]);
    assert.deepEqual(created.notAddedUsernames, [bob.username]);
    const groupId = created.membership.group.id;
    assert.equal(created.membership.role, "owner");
    assert.equal((await store.getMember(groupId, dave.id))?.role, "member", "the member who fit was added");
    assert.equal(await store.getMember(groupId, bob.id), undefined, "the one at the limit was not");
    assert.equal(await store.countMemberships(bob.id, 10), MAX, "the limit held");
    assert.equal(await store.countMemberships(owner.id, 10), 1, "exactly one group was created");
  });

  it("answers with no one left out when everyone fits", async () => {
    const owner = await user("own");
    const dave = await user("dave");
    const created = await service(store).createGroup(owner.principal, "g", [dave.username]);
    assert.deepEqual(created.notAddedUsernames, []);
    assert.equal(created.membership.group.memberCount, 2);
  });

  it("reads the listed members' group counts concurrently, a few at a time", async () => {
    const owner = await user("own");
    const members = await Promise.all(Array.from({ length: 20 }, (_, i) => user(`m${i}`)));
    let inFlight = 0;
    let most = 0;
    const counting = Object.assign(Object.create(store) as Store, {
      countMemberships: async (userId: string, upTo: number) => {
        inFlight++;
        most = Math.max(most, inFlight);
        await new Promise((r) => setTimeout(r, 5));
        inFlight--;
        return store.countMemberships(userId, upTo);
      },
    });
    await service(counting).createGroup(
      owner.principal,
      "g",
      members.map((m) => m.username),
    );
    assert.ok(most > 1, `the counts ran one at a time (${most})`);
    assert.ok(most <= 8, `at most 8 counts at once, saw ${most}`);
  });
});
