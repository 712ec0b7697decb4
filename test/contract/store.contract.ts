/**
 * Contract suite for the Store port (services/core/ports.ts). Every Store
 * adapter (SQLite, Cassandra, ...) runs it; it tests only what the port's doc
 * comments promise.
 *
 * The suite may run against a shared, long-lived database: every test uses
 * fresh ids (newId()) and never assumes the database is empty. Retention
 * tests run on their own store instances whose fake clock lies far in the
 * past, so their purges can only touch events written at such times.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { isChatError } from "../../services/core/errors.js";
import type { ErrorKind } from "../../services/core/errors.js";
import { newId } from "../../services/core/ids.js";
import type { GroupEvent, Role, UserCredentials, UserRef } from "../../services/core/model.js";
import type { Clock, GroupChange, GroupSnapshot, MessageDraft, NewGroup, Store } from "../../services/core/ports.js";

/** StoreFactory opens a Store with the given retention and clock. */
export type StoreFactory = (opts: { retentionMs: number; clock: Clock }) => Promise<Store>;

/** FakeClock is a Clock that moves only when told to. */
export class FakeClock implements Clock {
  constructor(private t: number) {}
  now(): number {
    return this.t;
  }
  /** advance moves the clock forward by `ms`. */
  advance(ms: number): void {
    this.t += ms;
  }
}

const DAY = 24 * 60 * 60 * 1000;

function userRef(): UserRef {
  const id = newId();
  return { id, username: `u-${id}` };
}

function credentials(at: number, username = `u-${newId()}`): UserCredentials {
  return { id: newId(), username, passwordHash: `$argon2id$v=19$m=19456,t=2,p=1$${newId()}`, createdAt: at };
}

function newGroup(owner: UserRef, at: number, name = "group"): NewGroup {
  return { id: newId(), name, epoch: newId(), createdAt: at, owner };
}

function draft(groupId: string, sender: UserRef, at: number, clientMessageId = newId()): MessageDraft {
  return { id: newId(), groupId, sender, text: `hello ${clientMessageId}`, clientMessageId, sentAt: at };
}

function isKind(kind: ErrorKind): (e: unknown) => boolean {
  return (e) => isChatError(e, kind);
}

function seqs(events: readonly { seq: number }[]): number[] {
  return events.map((e) => e.seq);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** addMember runs changeGroup with an unconditional "add". */
function addMember(store: Store, groupId: string, actor: UserRef, member: UserRef, at: number, role: Role = "member") {
  return store.changeGroup(groupId, [member.id], actor, at, () => ({ type: "add", member, role }));
}

/** change runs changeGroup with an unconditional change. */
function change(store: Store, groupId: string, actor: UserRef, at: number, c: GroupChange) {
  return store.changeGroup(groupId, [], actor, at, () => c);
}

/** StoreContractOptions adapt the suite to an adapter. */
export interface StoreContractOptions {
  readonly skip?: boolean;
}

/**
 * storeContract registers the Store contract tests for one adapter. `make`
 * must return a store on the adapter's database with the given retention and
 * clock; the suite closes every store it made.
 */
export function storeContract(name: string, make: StoreFactory, opts: StoreContractOptions = {}): void {
  describe(`Store contract: ${name}`, { skip: opts.skip ?? false }, () => {
    const clock = new FakeClock(Date.now());
    const opened: Store[] = [];
    let store: Store;

    async function open(retentionMs: number, c: Clock): Promise<Store> {
      const s = await make({ retentionMs, clock: c });
      opened.push(s);
      return s;
    }

    /** groupWithOwner creates a fresh group and returns it with its owner. */
    async function groupWithOwner(s: Store = store, at = clock.now()) {
      const owner = userRef();
      const g = newGroup(owner, at);
      const created = await s.createGroup(g);
      return { owner, group: g, created };
    }

    before(async () => {
      store = await open(30 * DAY, clock);
    });

    after(async () => {
      for (const s of opened) await s.close();
    });

    describe("users", () => {
      it("creates a user and finds it by name and by id", async () => {
        const u = credentials(clock.now());
        await store.createUser(u);
        assert.deepEqual(await store.findUserByName(u.username), u);
        const got = await store.getUser(u.id);
        assert.ok(got);
        assert.equal(got.id, u.id);
        assert.equal(got.username, u.username);
        assert.equal(got.createdAt, u.createdAt);
        assert.equal((got as Partial<UserCredentials>).passwordHash, undefined, "getUser returns no secret");
      });

      it("returns undefined for unknown users", async () => {
        assert.equal(await store.findUserByName(`u-${newId()}`), undefined);
        assert.equal(await store.getUser(newId()), undefined);
      });

      it("rejects a taken username with AlreadyExists and keeps the first user", async () => {
        const first = credentials(clock.now());
        await store.createUser(first);
        const second = credentials(clock.now(), first.username);
        await assert.rejects(store.createUser(second), isKind("AlreadyExists"));
        assert.deepEqual(await store.findUserByName(first.username), first);
        assert.equal(await store.getUser(second.id), undefined);
      });

      it("lets exactly one of concurrent creates with one username succeed", async () => {
        const username = `u-${newId()}`;
        const attempts = Array.from({ length: 8 }, () => credentials(clock.now(), username));
        const results = await Promise.allSettled(attempts.map((u) => store.createUser(u)));
        const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [attempts[i]] : []));
        assert.equal(won.length, 1);
        for (const r of results) {
          if (r.status === "rejected") assert.ok(isChatError(r.reason, "AlreadyExists"), String(r.reason));
        }
        assert.equal((await store.findUserByName(username))?.id, won[0]?.id);
      });
    });

    describe("refresh tokens", () => {
      function token(familyId = newId()) {
        return {
          tokenHash: newId().replaceAll("-", ""),
          userId: newId(),
          familyId,
          expiresAt: clock.now() + DAY,
          usedAt: null,
          revokedAt: null,
        };
      }

      it("stores a token and finds it by hash", async () => {
        const t = token();
        await store.insertRefreshToken(t);
        assert.deepEqual(await store.findRefreshToken(t.tokenHash), t);
        assert.equal(await store.findRefreshToken(newId()), undefined);
      });

      it("marks a token used once", async () => {
        const t = token();
        await store.insertRefreshToken(t);
        const at = clock.now();
        assert.equal(await store.markRefreshTokenUsed(t.tokenHash, at), true);
        assert.equal(await store.markRefreshTokenUsed(t.tokenHash, at + 1), false);
        assert.equal((await store.findRefreshToken(t.tokenHash))?.usedAt, at);
        assert.equal(await store.markRefreshTokenUsed(newId(), at), false, "unknown token");
      });

      it("lets at most one of concurrent markUsed calls win", async () => {
        const t = token();
        await store.insertRefreshToken(t);
        const results = await Promise.all(range(1, 10).map((i) => store.markRefreshTokenUsed(t.tokenHash, i)));
        assert.equal(results.filter(Boolean).length, 1);
      });

      it("revokes every token of a family and only that family, idempotently", async () => {
        const family = newId();
        const a = token(family);
        const b = token(family);
        const other = token();
        for (const t of [a, b, other]) await store.insertRefreshToken(t);
        const at = clock.now();
        await store.revokeRefreshFamily(family, at);
        assert.equal((await store.findRefreshToken(a.tokenHash))?.revokedAt, at);
        assert.equal((await store.findRefreshToken(b.tokenHash))?.revokedAt, at);
        assert.equal((await store.findRefreshToken(other.tokenHash))?.revokedAt, null);
        await store.revokeRefreshFamily(family, at + 1);
        assert.notEqual((await store.findRefreshToken(a.tokenHash))?.revokedAt, null);
        await store.revokeRefreshFamily(newId(), at);
      });

      it("isSessionRevoked: false for a live or unknown family, true once its family was revoked (only that family)", async () => {
        const family = newId();
        const other = newId();
        const [a, b, c] = [token(family), token(family), token(other)];
        for (const t of [a, b, c]) await store.insertRefreshToken(t);
        assert.equal(await store.isSessionRevoked(family), false, "a live session");
        assert.equal(await store.isSessionRevoked(newId()), false, "an unknown session");
        await store.markRefreshTokenUsed(a.tokenHash, clock.now());
        assert.equal(await store.isSessionRevoked(family), false, "rotating a token does not revoke the session");
        await store.revokeRefreshFamily(family, clock.now());
        assert.equal(await store.isSessionRevoked(family), true, "revoked at once, no cache");
        assert.equal(await store.isSessionRevoked(other), false, "another session stays alive");
        await store.revokeRefreshFamily(family, clock.now() + 1);
        assert.equal(await store.isSessionRevoked(family), true, "revoking again keeps it revoked");
        // A token the family gets after its revocation (a refresh that raced it) does not bring the session back.
        await store.insertRefreshToken(token(family));
        assert.equal(await store.isSessionRevoked(family), true);
      });

      it("a refresh racing a revocation cannot keep the session alive: its token stays under the mark, and revoking again covers it", async () => {
        // AuthService.refresh inserts the new token, then reads the mark, and revokes again if it is set.
        for (let round = 0; round < 5; round++) {
          const family = newId();
          const used = token(family);
          await store.insertRefreshToken(used);
          await store.markRefreshTokenUsed(used.tokenHash, clock.now());
          const fresh = { ...token(family), expiresAt: clock.now() + 30 * DAY }; // as long-lived as a refresh makes it
          await Promise.all([store.revokeRefreshFamily(family, clock.now()), store.insertRefreshToken(fresh)]);
          assert.equal(await store.isSessionRevoked(family), true, "the racing insert does not hide the revocation");
          await store.revokeRefreshFamily(family, clock.now() + 1);
          assert.notEqual((await store.findRefreshToken(fresh.tokenHash))?.revokedAt, null, "revoking again revokes the racing token");
          assert.equal(await store.isSessionRevoked(family), true);
        }
      });
    });

    describe("groups", () => {
      it("createGroup stores the owner as only member and appends member_added(owner) as seq 1", async () => {
        const owner = userRef();
        const g = newGroup(owner, clock.now(), "first");
        const event = await store.createGroup(g);
        const expected: GroupEvent = {
          groupId: g.id,
          seq: 1,
          at: g.createdAt,
          actor: owner,
          body: { type: "member_added", member: owner, role: "owner" },
        };
        assert.deepEqual(event, expected);
        assert.deepEqual(await store.getGroup(g.id), {
          id: g.id,
          name: "first",
          createdAt: g.createdAt,
          epoch: g.epoch,
          headSeq: 1,
          memberCount: 1,
        });
        const m = await store.getMember(g.id, owner.id);
        assert.equal(m?.role, "owner");
        assert.deepEqual(m?.user, owner);
        assert.equal(m?.groupId, g.id);
        assert.equal(m?.joinedAt, g.createdAt);
        assert.deepEqual(await store.readEvents(g.id, 0, 10), [expected]);
        assert.equal((await store.firstRetained(g.id))?.seq, 1);
      });

      it("returns undefined for an unknown group or non-member", async () => {
        const { group } = await groupWithOwner();
        assert.equal(await store.getGroup(newId()), undefined);
        assert.equal(await store.getMember(group.id, newId()), undefined);
        assert.deepEqual(await store.readEvents(newId(), 0, 10), []);
        assert.equal(await store.firstRetained(newId()), undefined);
      });

      it("changeGroup add / set_role / rename / remove each take the next seq and update state", async () => {
        const { owner, group } = await groupWithOwner();
        const bob = userRef();
        const at = clock.now();

        const added = await addMember(store, group.id, owner, bob, at + 1);
        assert.deepEqual(added, {
          groupId: group.id,
          seq: 2,
          at: at + 1,
          actor: owner,
          body: { type: "member_added", member: bob, role: "member" },
        });
        assert.equal((await store.getGroup(group.id))?.memberCount, 2);
        assert.equal((await store.getMember(group.id, bob.id))?.role, "member");
        assert.deepEqual((await store.getMember(group.id, bob.id))?.user, bob);

        const promoted = await change(store, group.id, owner, at + 2, { type: "set_role", member: bob, role: "admin" });
        assert.equal(promoted.seq, 3);
        assert.deepEqual(promoted.body, { type: "member_role_changed", member: bob, role: "admin" });
        assert.equal((await store.getMember(group.id, bob.id))?.role, "admin");

        const renamed = await change(store, group.id, bob, at + 3, { type: "rename", name: "renamed" });
        assert.equal(renamed.seq, 4);
        assert.deepEqual(renamed.actor, bob);
        assert.deepEqual(renamed.body, { type: "group_renamed", name: "renamed" });
        assert.equal((await store.getGroup(group.id))?.name, "renamed");

        const removed = await change(store, group.id, owner, at + 4, { type: "remove", member: bob });
        assert.equal(removed.seq, 5);
        assert.deepEqual(removed.body, { type: "member_removed", member: bob });
        assert.equal(await store.getMember(group.id, bob.id), undefined);

        const g = await store.getGroup(group.id);
        assert.equal(g?.headSeq, 5);
        assert.equal(g?.memberCount, 1);
        const events = await store.readEvents(group.id, 0, 100);
        assert.deepEqual(seqs(events), [1, 2, 3, 4, 5]);
        assert.deepEqual(events.slice(1), [added, promoted, renamed, removed]);
      });

      it("decide sees the group, the asked-for members and the owner count", async () => {
        const { owner, group } = await groupWithOwner();
        const bob = userRef();
        await addMember(store, group.id, owner, bob, clock.now(), "admin");
        const stranger = userRef();
        let seen: GroupSnapshot | undefined;
        await store.changeGroup(group.id, [owner.id, stranger.id], owner, clock.now(), (s) => {
          seen = s;
          return { type: "rename", name: "x" };
        });
        assert.ok(seen);
        assert.equal(seen.group.id, group.id);
        assert.equal(seen.group.headSeq, 2);
        assert.equal(seen.group.memberCount, 2);
        assert.equal(seen.ownerCount, 1);
        assert.equal(seen.members.get(owner.id)?.role, "owner");
        assert.equal(seen.members.has(stranger.id), false);
        assert.equal(seen.members.has(bob.id), false, "only asked-for users are included");
      });

      it("writes nothing and rethrows when decide throws", async () => {
        const { owner, group } = await groupWithOwner();
        const bob = userRef();
        const boom = new Error("denied");
        await assert.rejects(
          store.changeGroup(group.id, [bob.id], owner, clock.now(), () => {
            throw boom;
          }),
          (e) => e === boom,
        );
        assert.equal((await store.getGroup(group.id))?.headSeq, 1);
        assert.equal((await store.getGroup(group.id))?.memberCount, 1);
        assert.equal(await store.getMember(group.id, bob.id), undefined);
        assert.deepEqual(seqs(await store.readEvents(group.id, 0, 10)), [1]);
      });

      it("enforces the change's own preconditions and writes nothing when they fail", async () => {
        const { owner, group } = await groupWithOwner();
        const stranger = userRef();
        const at = clock.now();
        await assert.rejects(addMember(store, group.id, owner, owner, at), isKind("AlreadyExists"));
        await assert.rejects(change(store, group.id, owner, at, { type: "remove", member: stranger }), isKind("NotFound"));
        await assert.rejects(
          change(store, group.id, owner, at, { type: "set_role", member: stranger, role: "admin" }),
          isKind("NotFound"),
        );
        assert.equal(await store.getMember(group.id, stranger.id), undefined);
        assert.equal((await store.getMember(group.id, owner.id))?.role, "owner");
        const g = await store.getGroup(group.id);
        assert.equal(g?.headSeq, 1);
        assert.equal(g?.memberCount, 1);
        assert.deepEqual(seqs(await store.readEvents(group.id, 0, 10)), [1]);
      });

      it("changeGroup on a missing group fails NotFound", async () => {
        const actor = userRef();
        await assert.rejects(change(store, newId(), actor, clock.now(), { type: "rename", name: "x" }), isKind("NotFound"));
      });

      it("gives concurrent changes distinct, dense seqs", async () => {
        const { owner, group } = await groupWithOwner();
        const users = range(1, 10).map(() => userRef());
        const events = await Promise.all(users.map((u) => addMember(store, group.id, owner, u, clock.now())));
        assert.deepEqual(
          seqs(events).sort((a, b) => a - b),
          range(2, 11),
        );
        const g = await store.getGroup(group.id);
        assert.equal(g?.headSeq, 11);
        assert.equal(g?.memberCount, 11);
      });

      it("listMembers pages by user id", async () => {
        const { owner, group } = await groupWithOwner();
        const others = range(1, 4).map(() => userRef());
        for (const u of others) await addMember(store, group.id, owner, u, clock.now());
        const all = [owner, ...others].map((u) => u.id).sort();
        const page1 = await store.listMembers(group.id, "", 2);
        assert.deepEqual(
          page1.map((m) => m.user.id),
          all.slice(0, 2),
        );
        const page2 = await store.listMembers(group.id, page1.at(-1)?.user.id ?? "", 2);
        assert.deepEqual(
          page2.map((m) => m.user.id),
          all.slice(2, 4),
        );
        const page3 = await store.listMembers(group.id, page2.at(-1)?.user.id ?? "", 2);
        assert.deepEqual(
          page3.map((m) => m.user.id),
          all.slice(4),
        );
        assert.deepEqual(await store.listMembers(group.id, all.at(-1) ?? "", 2), []);
        const ownerEntry = (await store.listMembers(group.id, "", 10)).find((m) => m.user.id === owner.id);
        assert.equal(ownerEntry?.role, "owner");
        assert.deepEqual(ownerEntry?.user, owner);
      });

      it("listMemberships pages a user's groups by group id with role and acked seq", async () => {
        const user = userRef();
        const owned: string[] = [];
        for (let i = 0; i < 3; i++) {
          const g = newGroup(user, clock.now(), `owned-${i}`);
          await store.createGroup(g);
          owned.push(g.id);
        }
        const { owner, group: joined } = await groupWithOwner();
        await addMember(store, joined.id, owner, user, clock.now(), "admin");
        const all = [...owned, joined.id].sort();

        const page1 = await store.listMemberships(user.id, "", 3);
        assert.deepEqual(
          page1.map((m) => m.group.id),
          all.slice(0, 3),
        );
        const page2 = await store.listMemberships(user.id, page1.at(-1)?.group.id ?? "", 3);
        assert.deepEqual(
          page2.map((m) => m.group.id),
          all.slice(3),
        );
        assert.deepEqual(await store.listMemberships(user.id, all.at(-1) ?? "", 3), []);

        const every = await store.listMemberships(user.id, "", 10);
        const j = every.find((m) => m.group.id === joined.id);
        assert.equal(j?.role, "admin");
        assert.equal(j?.ackedSeq, 0);
        assert.equal(j?.group.memberCount, 2);
        assert.equal(j?.group.headSeq, 2);
        assert.equal(every.find((m) => m.group.id === owned[0])?.role, "owner");
        assert.deepEqual(await store.listMemberships(newId(), "", 10), []);
      });

      it("listGroupIdsOf pages the ids listMemberships lists, and drops a group the user left", async () => {
        const user = userRef();
        const owned: string[] = [];
        for (let i = 0; i < 3; i++) {
          const g = newGroup(user, clock.now(), `ids-${i}`);
          await store.createGroup(g);
          owned.push(g.id);
        }
        const { owner, group: joined } = await groupWithOwner();
        await addMember(store, joined.id, owner, user, clock.now(), "member");
        const all = [...owned, joined.id].sort();
        const page1 = await store.listGroupIdsOf(user.id, "", 3);
        assert.deepEqual(page1, all.slice(0, 3));
        assert.deepEqual(await store.listGroupIdsOf(user.id, page1.at(-1) ?? "", 3), all.slice(3));
        assert.deepEqual(await store.listGroupIdsOf(user.id, all.at(-1) ?? "", 3), []);
        assert.deepEqual(
          await store.listGroupIdsOf(user.id, "", 10),
          (await store.listMemberships(user.id, "", 10)).map((m) => m.group.id),
          "the same groups as listMemberships",
        );
        await change(store, joined.id, owner, clock.now(), { type: "remove", member: user });
        assert.deepEqual(await store.listGroupIdsOf(user.id, "", 10), [...owned].sort(), "a group left is not listed");
        assert.deepEqual(await store.listGroupIdsOf(newId(), "", 10), []);
      });

      it("countMemberships counts the user's groups up to a bound, following joins and leaves", async () => {
        const user = userRef();
        assert.equal(await store.countMemberships(user.id, 10), 0);
        const owned = [];
        for (let i = 0; i < 3; i++) owned.push((await groupWithOwner(store, clock.now())).group.id);
        for (const [i, gid] of owned.entries()) {
          const owner = (await store.listMembers(gid, "", 1))[0]?.user;
          assert.ok(owner);
          await addMember(store, gid, owner, user, clock.now() + i);
        }
        assert.equal(await store.countMemberships(user.id, 10), 3);
        assert.equal(await store.countMemberships(user.id, 2), 2, "counts no further than asked");
        const gid = owned[0] ?? "";
        const owner = (await store.listMembers(gid, "", 10)).find((m) => m.role === "owner")?.user;
        assert.ok(owner);
        await change(store, gid, owner, clock.now() + 10, { type: "remove", member: user });
        assert.equal(await store.countMemberships(user.id, 10), 2, "a group left no longer counts");
      });

      it("createGroup with maxOwnerGroups refuses an owner in that many groups (FailedPrecondition), writing nothing", async () => {
        const owner = userRef();
        const at = clock.now();
        await store.createGroup({ ...newGroup(owner, at), maxOwnerGroups: 2 });
        await store.createGroup({ ...newGroup(owner, at), maxOwnerGroups: 2 });
        const third = { ...newGroup(owner, at), maxOwnerGroups: 2 };
        await assert.rejects(store.createGroup(third), (e: unknown) => isKind("FailedPrecondition")(e) && /already in 2 groups/.test((e as Error).message));
        assert.equal(await store.getGroup(third.id), undefined, "the group was not created");
        assert.deepEqual(await store.readEvents(third.id, 0, 10), []);
        assert.equal(await store.countMemberships(owner.id, 10), 2);
        // Without a limit, or with room, creation goes on as before.
        await store.createGroup({ ...newGroup(owner, at), maxOwnerGroups: 4 });
        await store.createGroup(newGroup(owner, at));
        assert.equal(await store.countMemberships(owner.id, 10), 4);
      });

      it("an add with maxGroups refuses a user in that many groups (FailedPrecondition naming them), writing nothing", async () => {
        const user = userRef();
        const groups = [await groupWithOwner(), await groupWithOwner(), await groupWithOwner()];
        const addLimited = (g: (typeof groups)[number], at: number) =>
          store.changeGroup(g.group.id, [user.id], g.owner, at, () => ({ type: "add", member: user, role: "member", maxGroups: 2 }));
        const [g1, g2, g3] = groups;
        assert.ok(g1 && g2 && g3);
        await addLimited(g1, clock.now());
        await addLimited(g2, clock.now());
        await assert.rejects(
          addLimited(g3, clock.now()),
          (e: unknown) => isKind("FailedPrecondition")(e) && (e as Error).message.startsWith(`${user.username} is already in 2 groups`),
        );
        assert.equal((await store.getGroup(g3.group.id))?.headSeq, 1, "no event was appended");
        assert.equal((await store.getGroup(g3.group.id))?.memberCount, 1);
        assert.equal(await store.getMember(g3.group.id, user.id), undefined);
        // An add without the limit is not counted.
        await addMember(store, g3.group.id, g3.owner, user, clock.now());
        assert.equal(await store.countMemberships(user.id, 10), 3);
      });
    });

    describe("messages", () => {
      it("appends a message as the next event", async () => {
        const { owner, group } = await groupWithOwner();
        const d = draft(group.id, owner, clock.now());
        const r = await store.appendMessage(d);
        assert.equal(r.duplicate, false);
        assert.equal(r.event.seq, 2);
        assert.equal(r.event.groupId, group.id);
        assert.deepEqual(r.event.actor, owner);
        assert.deepEqual(r.event.body, {
          type: "message",
          message: {
            id: d.id,
            groupId: group.id,
            seq: 2,
            sender: owner,
            text: d.text,
            sentAt: d.sentAt,
            clientMessageId: d.clientMessageId,
          },
        });
        assert.equal((await store.getGroup(group.id))?.headSeq, 2);
        assert.deepEqual((await store.readEvents(group.id, 1, 10))[0], r.event);
      });

      it("shares one dense seq between messages and membership events", async () => {
        const { owner, group } = await groupWithOwner();
        const bob = userRef();
        const m1 = await store.appendMessage(draft(group.id, owner, clock.now()));
        const add = await addMember(store, group.id, owner, bob, clock.now());
        const m2 = await store.appendMessage(draft(group.id, bob, clock.now()));
        const ren = await change(store, group.id, bob, clock.now(), { type: "rename", name: "r" });
        const m3 = await store.appendMessage(draft(group.id, owner, clock.now()));
        assert.deepEqual([m1.event.seq, add.seq, m2.event.seq, ren.seq, m3.event.seq], [2, 3, 4, 5, 6]);
        assert.deepEqual(seqs(await store.readEvents(group.id, 0, 100)), range(1, 6));
        assert.equal((await store.getGroup(group.id))?.headSeq, 6);
      });

      it("returns the original message with duplicate=true on retry and writes nothing", async () => {
        const { owner, group } = await groupWithOwner();
        const d = draft(group.id, owner, clock.now());
        const first = await store.appendMessage(d);
        await store.appendMessage(draft(group.id, owner, clock.now()));
        const retry = await store.appendMessage({ ...d, id: newId(), text: "changed", sentAt: d.sentAt + 5 });
        assert.equal(retry.duplicate, true);
        assert.deepEqual(retry.event, first.event);
        assert.equal((await store.getGroup(group.id))?.headSeq, 3);
        assert.deepEqual(seqs(await store.readEvents(group.id, 0, 100)), [1, 2, 3]);
      });

      it("dedupes per sender: another sender's equal clientMessageId is a new message", async () => {
        const { owner, group } = await groupWithOwner();
        const bob = userRef();
        await addMember(store, group.id, owner, bob, clock.now());
        const cmid = newId();
        const a = await store.appendMessage(draft(group.id, owner, clock.now(), cmid));
        const b = await store.appendMessage(draft(group.id, bob, clock.now(), cmid));
        assert.equal(b.duplicate, false);
        assert.notEqual(b.event.seq, a.event.seq);
      });

      it("stores concurrent retries of one message once", async () => {
        const { owner, group } = await groupWithOwner();
        const d = draft(group.id, owner, clock.now());
        const results = await Promise.all(range(1, 20).map(() => store.appendMessage(d)));
        assert.equal(results.filter((r) => !r.duplicate).length, 1);
        assert.deepEqual(new Set(results.map((r) => r.event.seq)), new Set([2]));
        assert.equal((await store.getGroup(group.id))?.headSeq, 2);
      });

      it("gives 200 concurrent appends dense, unique seqs", async () => {
        const { owner, group } = await groupWithOwner();
        const n = 200;
        const results = await Promise.all(
          range(1, n).map(() => store.appendMessage(draft(group.id, owner, clock.now()))),
        );
        assert.ok(results.every((r) => !r.duplicate));
        assert.deepEqual(
          results.map((r) => r.event.seq).sort((a, b) => a - b),
          range(2, n + 1),
        );
        assert.deepEqual(seqs(await store.readEvents(group.id, 0, 1000)), range(1, n + 1));
        assert.equal((await store.getGroup(group.id))?.headSeq, n + 1);
      });

      it("rejects appends by non-members and to missing groups with NotFound", async () => {
        const { owner, group } = await groupWithOwner();
        const stranger = userRef();
        await assert.rejects(store.appendMessage(draft(group.id, stranger, clock.now())), isKind("NotFound"));
        await assert.rejects(store.appendMessage(draft(newId(), owner, clock.now())), isKind("NotFound"));
        const bob = userRef();
        await addMember(store, group.id, owner, bob, clock.now());
        await change(store, group.id, owner, clock.now(), { type: "remove", member: bob });
        await assert.rejects(store.appendMessage(draft(group.id, bob, clock.now())), isKind("NotFound"));
        assert.equal((await store.getGroup(group.id))?.headSeq, 3);
      });

      it("readEvents pages ascending after a seq", async () => {
        const { owner, group } = await groupWithOwner();
        for (let i = 0; i < 9; i++) await store.appendMessage(draft(group.id, owner, clock.now()));
        assert.deepEqual(seqs(await store.readEvents(group.id, 0, 4)), [1, 2, 3, 4]);
        assert.deepEqual(seqs(await store.readEvents(group.id, 4, 4)), [5, 6, 7, 8]);
        assert.deepEqual(seqs(await store.readEvents(group.id, 8, 4)), [9, 10]);
        assert.deepEqual(await store.readEvents(group.id, 10, 4), []);
      });

      describe("listMessages", () => {
        // seq 1 member_added(owner), 2..6 messages, 7 member_added(bob), 8..11 messages.
        let groupId = "";
        before(async () => {
          const { owner, group } = await groupWithOwner();
          groupId = group.id;
          for (let i = 0; i < 5; i++) await store.appendMessage(draft(groupId, owner, clock.now()));
          await addMember(store, groupId, owner, userRef(), clock.now());
          for (let i = 0; i < 4; i++) await store.appendMessage(draft(groupId, owner, clock.now()));
        });

        async function page(anchor: { beforeSeq?: number; afterSeq?: number }, limit: number) {
          const p = await store.listMessages(groupId, anchor, limit);
          return { seqs: p.messages.map((m) => m.seq), hasMore: p.hasMore };
        }

        it("returns the newest messages ascending without an anchor", async () => {
          assert.deepEqual(await page({}, 3), { seqs: [9, 10, 11], hasMore: true });
          assert.deepEqual(await page({}, 20), { seqs: [2, 3, 4, 5, 6, 8, 9, 10, 11], hasMore: false });
        });

        it("pages backwards with beforeSeq, skipping non-message events", async () => {
          assert.deepEqual(await page({ beforeSeq: 9 }, 3), { seqs: [5, 6, 8], hasMore: true });
          assert.deepEqual(await page({ beforeSeq: 5 }, 3), { seqs: [2, 3, 4], hasMore: false });
          assert.deepEqual(await page({ beforeSeq: 2 }, 3), { seqs: [], hasMore: false });
        });

        it("pages forwards with afterSeq", async () => {
          assert.deepEqual(await page({ afterSeq: 0 }, 4), { seqs: [2, 3, 4, 5], hasMore: true });
          assert.deepEqual(await page({ afterSeq: 5 }, 3), { seqs: [6, 8, 9], hasMore: true });
          assert.deepEqual(await page({ afterSeq: 8 }, 3), { seqs: [9, 10, 11], hasMore: false });
          assert.deepEqual(await page({ afterSeq: 11 }, 3), { seqs: [], hasMore: false });
        });

        it("returns full messages", async () => {
          const p = await store.listMessages(groupId, {}, 1);
          const events = await store.readEvents(groupId, 10, 1);
          const last = events[0];
          assert.ok(last && last.body.type === "message");
          assert.deepEqual(p.messages, [last.body.message]);
        });

        it("returns an empty page for an unknown group", async () => {
          assert.deepEqual(await store.listMessages(newId(), {}, 10), { messages: [], hasMore: false });
        });
      });
    });

    describe("acks", () => {
      it("ackMember raises the acked seq and never lowers it", async () => {
        const { owner, group } = await groupWithOwner();
        const acked = async () =>
          (await store.listMemberships(owner.id, "", 10)).find((m) => m.group.id === group.id)?.ackedSeq;
        assert.equal(await acked(), 0);
        await store.ackMember(group.id, owner.id, 5);
        assert.equal(await acked(), 5);
        await store.ackMember(group.id, owner.id, 3);
        assert.equal(await acked(), 5);
        await store.ackMember(group.id, owner.id, 7);
        assert.equal(await acked(), 7);
      });

      it("ackMember is a no-op for non-members", async () => {
        const { group } = await groupWithOwner();
        const stranger = userRef();
        await store.ackMember(group.id, stranger.id, 4);
        await store.ackMember(newId(), stranger.id, 4);
        assert.equal(await store.getMember(group.id, stranger.id), undefined);
        assert.deepEqual(await store.listMemberships(stranger.id, "", 10), []);
      });
    });

    describe("retention", () => {
      const RETENTION = 1000;

      /** oldTimeline makes a store whose clock lies in 2001 and a group with seqs 1..3 at t0 and 4..5 at t0+600. */
      async function oldTimeline() {
        const c = new FakeClock(Date.UTC(2001, 0, 1) + Math.floor(Math.random() * DAY));
        const s = await open(RETENTION, c);
        const { owner, group } = await groupWithOwner(s, c.now());
        const old = [draft(group.id, owner, c.now()), draft(group.id, owner, c.now())];
        for (const d of old) await s.appendMessage(d);
        c.advance(600);
        for (let i = 0; i < 2; i++) await s.appendMessage(draft(group.id, owner, c.now()));
        return { clock: c, store: s, owner, group, old };
      }

      it("hides expired events from every read and moves the retained edge", async () => {
        const { clock: c, store: s, group } = await oldTimeline();
        const t0 = c.now() - 600; // seq 1 (the group's creation) is at t0, seq 4 at t0 + 600
        assert.deepEqual(await s.firstRetained(group.id), { seq: 1, retainedUntil: t0 + RETENTION });
        c.advance(500); // seqs 1..3 are now older than the retention period
        assert.deepEqual(seqs(await s.readEvents(group.id, 0, 10)), [4, 5]);
        assert.deepEqual(await s.firstRetained(group.id), { seq: 4, retainedUntil: t0 + 600 + RETENTION });
        const newest = await s.listMessages(group.id, {}, 10);
        assert.deepEqual(
          newest.messages.map((m) => m.seq),
          [4, 5],
        );
        assert.equal(newest.hasMore, false);
        assert.deepEqual(await s.listMessages(group.id, { beforeSeq: 4 }, 10), { messages: [], hasMore: false });
        const forward = await s.listMessages(group.id, { afterSeq: 0 }, 10);
        assert.deepEqual(
          forward.messages.map((m) => m.seq),
          [4, 5],
        );
        c.advance(1000);
        assert.equal(await s.firstRetained(group.id), undefined, "nothing retained");
        assert.deepEqual(await s.readEvents(group.id, 0, 10), []);
      });

      it("keeps seqs increasing after events expire", async () => {
        const { clock: c, store: s, owner, group } = await oldTimeline();
        c.advance(2000);
        const r = await s.appendMessage(draft(group.id, owner, c.now()));
        assert.equal(r.event.seq, 6);
        assert.deepEqual(seqs(await s.readEvents(group.id, 0, 10)), [6]);
      });

      it("does not dedupe against an expired message", async () => {
        const { clock: c, store: s, group, old } = await oldTimeline();
        c.advance(500);
        const first = old[0];
        assert.ok(first);
        const again = await s.appendMessage({ ...first, sentAt: c.now() });
        assert.equal(again.duplicate, false);
        assert.equal(again.event.seq, 6);
        const retry = await s.appendMessage({ ...first, sentAt: c.now() });
        assert.equal(retry.duplicate, true);
        assert.equal(retry.event.seq, 6);
        assert.equal((await s.getGroup(group.id))?.headSeq, 6);
      });

      it("purgeExpired deletes expired events (or leaves them to a TTL), returns how many, and keeps retained ones", async () => {
        const { clock: c, store: s, group } = await oldTimeline();
        c.advance(500);
        const purged = await s.purgeExpired();
        // How many rows a purge removes is the adapter's business (SQLite deletes them: its own spec counts
        // them exactly; Cassandra's TTL expires them); what every adapter owes is that reads hide them.
        assert.ok(Number.isInteger(purged) && purged >= 0, `purged ${purged}`);
        assert.deepEqual(seqs(await s.readEvents(group.id, 0, 10)), [4, 5]);
        assert.deepEqual(seqs((await s.listMessages(group.id, { afterSeq: 0 }, 10)).messages), [4, 5]);
        assert.equal((await s.firstRetained(group.id))?.seq, 4);
        assert.equal((await s.getGroup(group.id))?.headSeq, 5);
      });
    });
  });
}
