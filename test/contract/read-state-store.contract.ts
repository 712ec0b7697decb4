/**
 * Contract suite for the ReadStateStore port (services/core/ports.ts): read
 * markers and push settings that live and die with the membership, and
 * unread counts. Every Store adapter runs it; it tests only what the port's
 * doc comments promise, through the GroupStore methods that make members
 * and events.
 *
 * The suite may run against a shared, long-lived database: every test uses
 * fresh ids and never assumes the database is empty.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { newId } from "../../services/core/ids.js";
import { DEFAULT_NOTIFY } from "../../services/core/model.js";
import type { MemberReadState, UserRef } from "../../services/core/model.js";
import type { MessageDraft, Store } from "../../services/core/ports.js";
import { FakeClock } from "./store.contract.js";
import type { StoreFactory } from "./store.contract.js";

const DAY = 24 * 60 * 60 * 1000;

function userRef(): UserRef {
  const id = newId();
  return { id, username: `u-${id}` };
}

function draft(groupId: string, sender: UserRef, at: number): MessageDraft {
  const clientMessageId = newId();
  return { id: newId(), groupId, sender, text: `hello ${clientMessageId}`, clientMessageId, sentAt: at };
}

/** shuffled returns the items in a random order. */
function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** ReadStateStoreContractOptions adapt the suite to an adapter. */
export interface ReadStateStoreContractOptions {
  readonly skip?: boolean;
}

/**
 * readStateStoreContract registers the ReadStateStore contract tests for one
 * adapter. `make` must return a store on the adapter's database with the
 * given retention and clock; the suite closes every store it made.
 */
export function readStateStoreContract(name: string, make: StoreFactory, opts: ReadStateStoreContractOptions = {}): void {
  describe(`ReadStateStore contract: ${name}`, { skip: opts.skip ?? false }, () => {
    const clock = new FakeClock(Date.now());
    const opened: Store[] = [];
    let store: Store;

    before(async () => {
      store = await make({ retentionMs: 30 * DAY, clock });
      opened.push(store);
    });

    after(async () => {
      for (const s of opened) await s.close();
    });

    /** group creates a fresh group (its owner joins at seq 1) and returns its id and owner. */
    async function group(s: Store = store, at = clock.now()) {
      const owner = userRef();
      const groupId = newId();
      await s.createGroup({ id: groupId, name: "g", epoch: newId(), createdAt: at, owner });
      return { groupId, owner };
    }

    function add(groupId: string, actor: UserRef, member: UserRef, s: Store = store, at = clock.now()) {
      return s.changeGroup(groupId, [member.id], actor, at, () => ({ type: "add", member, role: "member" }));
    }

    function remove(groupId: string, actor: UserRef, member: UserRef) {
      return store.changeGroup(groupId, [member.id], actor, clock.now(), () => ({ type: "remove", member }));
    }

    async function send(groupId: string, sender: UserRef, s: Store = store, at = clock.now()): Promise<number> {
      return (await s.appendMessage(draft(groupId, sender, at))).event.seq;
    }

    /** stateOf reads one member's state both ways; asserts that both agree. */
    async function stateOf(groupId: string, userId: string): Promise<MemberReadState | undefined> {
      const byGroup = (await store.readStates(groupId, [userId])).get(userId);
      const byUser = (await store.readStatesOfUser(userId, [groupId])).get(groupId);
      assert.deepEqual(byUser, byGroup, "readStates and readStatesOfUser agree");
      return byGroup;
    }

    describe("read markers", () => {
      it("start at the seq of the member's member_added event, with the default push setting", async () => {
        const { groupId, owner } = await group();
        await send(groupId, owner);
        const bob = userRef();
        const added = await add(groupId, owner, bob);
        assert.equal(added.seq, 3);
        assert.deepEqual(await stateOf(groupId, owner.id), { lastReadSeq: 1, notify: DEFAULT_NOTIFY });
        assert.deepEqual(await stateOf(groupId, bob.id), { lastReadSeq: 3, notify: DEFAULT_NOTIFY });
      });

      it("markRead moves the marker forward only, and returns it", async () => {
        const { groupId, owner } = await group();
        for (let i = 0; i < 8; i++) await send(groupId, owner);
        assert.equal(await store.markRead(groupId, owner.id, 5), 5);
        assert.equal((await stateOf(groupId, owner.id))?.lastReadSeq, 5);
        assert.equal(await store.markRead(groupId, owner.id, 3), 5, "a lower seq leaves the marker");
        assert.equal((await stateOf(groupId, owner.id))?.lastReadSeq, 5);
        assert.equal(await store.markRead(groupId, owner.id, 5), 5, "the same seq again");
        assert.equal(await store.markRead(groupId, owner.id, 7), 7);
        assert.equal((await stateOf(groupId, owner.id))?.lastReadSeq, 7);
        assert.equal(await store.markRead(groupId, owner.id, 1), 7, "below the join seq");
      });

      it("keeps the highest seq of reordered calls", async () => {
        const { groupId, owner } = await group();
        for (let i = 0; i < 12; i++) await send(groupId, owner);
        for (const seq of [9, 4, 12, 6, 11]) await store.markRead(groupId, owner.id, seq);
        assert.equal((await stateOf(groupId, owner.id))?.lastReadSeq, 12);
      });

      it("keeps the highest of 20 concurrent calls, and each returns at least its own seq", async () => {
        const { groupId, owner } = await group();
        for (let i = 0; i < 21; i++) await send(groupId, owner);
        const seqs = shuffled(Array.from({ length: 20 }, (_, i) => i + 3));
        const results = await Promise.all(seqs.map((seq) => store.markRead(groupId, owner.id, seq)));
        results.forEach((r, i) => assert.ok(r !== undefined && r >= (seqs[i] ?? 0), `markRead(${seqs[i]}) returned ${r}`));
        assert.equal((await stateOf(groupId, owner.id))?.lastReadSeq, 22);
      });

      it("a non-member's markRead returns undefined and writes nothing", async () => {
        const { groupId, owner } = await group();
        const stranger = userRef();
        assert.equal(await store.markRead(groupId, stranger.id, 50), undefined);
        assert.equal(await store.markRead(newId(), stranger.id, 50), undefined, "unknown group");
        assert.equal(await stateOf(groupId, stranger.id), undefined);
        assert.equal(await store.getMember(groupId, stranger.id), undefined);
        // Joining afterwards starts at the join seq: the refused call left no marker behind.
        const added = await add(groupId, owner, stranger);
        assert.deepEqual(await stateOf(groupId, stranger.id), { lastReadSeq: added.seq, notify: DEFAULT_NOTIFY });
      });

      it("removal drops the state and a re-add starts afresh", async () => {
        const { groupId, owner } = await group();
        const bob = userRef();
        await add(groupId, owner, bob);
        for (let i = 0; i < 4; i++) await send(groupId, owner);
        assert.equal(await store.markRead(groupId, bob.id, 6), 6);
        assert.equal(await store.setNotify(groupId, bob.id, { level: "none", mutedUntil: 0 }), true);
        const removed = await remove(groupId, owner, bob);
        assert.equal(await stateOf(groupId, bob.id), undefined, "no state after removal");
        assert.equal(await store.markRead(groupId, bob.id, removed.seq), undefined, "a removed member is a non-member");
        assert.equal(await store.setNotify(groupId, bob.id, { level: "none", mutedUntil: 0 }), false);
        await send(groupId, owner);
        const readded = await add(groupId, owner, bob);
        assert.ok(readded.seq > removed.seq + 1);
        assert.deepEqual(await stateOf(groupId, bob.id), { lastReadSeq: readded.seq, notify: DEFAULT_NOTIFY });
        assert.equal(await store.markRead(groupId, bob.id, 6), readded.seq, "the old marker is gone");
      });
    });

    describe("readStates and readStatesOfUser", () => {
      it("return the members' states, agree with each other, and omit non-members", async () => {
        const g1 = await group();
        const g2 = await group();
        const g3 = await group();
        const bob = userRef();
        const carol = userRef();
        const stranger = userRef();
        await add(g1.groupId, g1.owner, bob);
        await add(g1.groupId, g1.owner, carol);
        await add(g2.groupId, g2.owner, bob);
        for (let i = 0; i < 3; i++) await send(g1.groupId, g1.owner);
        await store.markRead(g1.groupId, bob.id, 5);
        await store.setNotify(g2.groupId, bob.id, { level: "all", mutedUntil: clock.now() + DAY });

        const inG1 = await store.readStates(g1.groupId, [g1.owner.id, bob.id, stranger.id, carol.id, bob.id]);
        assert.deepEqual(
          [...inG1.keys()].sort(),
          [g1.owner.id, bob.id, carol.id].sort(),
        );
        assert.deepEqual(inG1.get(bob.id), { lastReadSeq: 5, notify: DEFAULT_NOTIFY });
        assert.deepEqual(inG1.get(carol.id), { lastReadSeq: 3, notify: DEFAULT_NOTIFY });
        assert.deepEqual(inG1.get(g1.owner.id), { lastReadSeq: 1, notify: DEFAULT_NOTIFY });

        const ofBob = await store.readStatesOfUser(bob.id, [g1.groupId, g2.groupId, g3.groupId, newId()]);
        assert.deepEqual(
          [...ofBob.keys()].sort(),
          [g1.groupId, g2.groupId].sort(),
        );
        assert.deepEqual(ofBob.get(g1.groupId), inG1.get(bob.id));
        assert.deepEqual(ofBob.get(g2.groupId), (await store.readStates(g2.groupId, [bob.id])).get(bob.id));
        assert.deepEqual(ofBob.get(g2.groupId), { lastReadSeq: 2, notify: { level: "all", mutedUntil: clock.now() + DAY } });

        assert.equal((await store.readStates(g1.groupId, [])).size, 0);
        assert.equal((await store.readStatesOfUser(bob.id, [])).size, 0);
        assert.equal((await store.readStates(newId(), [bob.id])).size, 0, "unknown group");
        assert.equal((await store.readStatesOfUser(stranger.id, [g1.groupId, g2.groupId])).size, 0);
      });
    });

    describe("setNotify", () => {
      it("round-trips a setting, the last write winning, and leaves the marker alone", async () => {
        const { groupId, owner } = await group();
        for (let i = 0; i < 3; i++) await send(groupId, owner);
        await store.markRead(groupId, owner.id, 3);
        const until = clock.now() + 3_600_000;
        assert.equal(await store.setNotify(groupId, owner.id, { level: "none", mutedUntil: 0 }), true);
        assert.deepEqual(await stateOf(groupId, owner.id), { lastReadSeq: 3, notify: { level: "none", mutedUntil: 0 } });
        assert.equal(await store.setNotify(groupId, owner.id, { level: "all", mutedUntil: until }), true);
        assert.deepEqual(await stateOf(groupId, owner.id), { lastReadSeq: 3, notify: { level: "all", mutedUntil: until } });
        // Calls in quick succession: the last one wins.
        const settings = [
          { level: "none", mutedUntil: 0 },
          { level: "all", mutedUntil: until + 1 },
          { level: "none", mutedUntil: until + 2 },
          { level: "all", mutedUntil: 0 },
        ] as const;
        for (const s of settings) assert.equal(await store.setNotify(groupId, owner.id, s), true);
        assert.deepEqual(await stateOf(groupId, owner.id), { lastReadSeq: 3, notify: DEFAULT_NOTIFY });
        assert.equal(await store.markRead(groupId, owner.id, 4), 4);
        assert.deepEqual((await stateOf(groupId, owner.id))?.notify, DEFAULT_NOTIFY, "markRead leaves the setting");
      });

      it("returns false for a non-member and writes nothing", async () => {
        const { groupId, owner } = await group();
        const stranger = userRef();
        assert.equal(await store.setNotify(groupId, stranger.id, { level: "none", mutedUntil: 0 }), false);
        assert.equal(await store.setNotify(newId(), owner.id, { level: "none", mutedUntil: 0 }), false, "unknown group");
        assert.equal(await stateOf(groupId, stranger.id), undefined);
        const added = await add(groupId, owner, stranger);
        assert.deepEqual(await stateOf(groupId, stranger.id), { lastReadSeq: added.seq, notify: DEFAULT_NOTIFY });
      });
    });

    describe("countUnread", () => {
      // seq 1 member_added(owner), 2 member_added(bob), 3 owner, 4 bob, 5 owner, 6 renamed,
      // 7 owner, 8 member_added(carol), 9 bob, 10 owner.
      let groupId = "";
      let owner: UserRef;
      const bob = userRef();
      const carol = userRef();
      before(async () => {
        ({ groupId, owner } = await group());
        await add(groupId, owner, bob);
        await send(groupId, owner);
        await send(groupId, bob);
        await send(groupId, owner);
        await store.changeGroup(groupId, [], owner, clock.now(), () => ({ type: "rename", name: "r" }));
        await send(groupId, owner);
        await add(groupId, owner, carol);
        await send(groupId, bob);
        assert.equal(await send(groupId, owner), 10);
      });

      it("counts the messages after afterSeq that others sent, skipping other events", async () => {
        assert.equal(await store.countUnread(groupId, bob.id, 2, 100), 4, "owner's 3, 5, 7, 10");
        assert.equal(await store.countUnread(groupId, owner.id, 1, 100), 2, "bob's 4, 9");
        assert.equal(await store.countUnread(groupId, carol.id, 8, 100), 2, "9, 10");
        assert.equal(await store.countUnread(groupId, bob.id, 5, 100), 2, "7, 10");
        assert.equal(await store.countUnread(groupId, bob.id, 0, 100), 4, "from the start");
        assert.equal(await store.countUnread(groupId, bob.id, 10, 100), 0, "nothing after the head");
        assert.equal(await store.countUnread(groupId, bob.id, 9, 100), 1);
        assert.equal(await store.countUnread(newId(), bob.id, 0, 100), 0, "unknown group");
      });

      it("counts at most cap", async () => {
        assert.equal(await store.countUnread(groupId, carol.id, 0, 3), 3, "6 messages, cap 3");
        assert.equal(await store.countUnread(groupId, carol.id, 0, 6), 6);
        assert.equal(await store.countUnread(groupId, carol.id, 0, 1), 1);
        assert.equal(await store.countUnread(groupId, carol.id, 0, 0), 0);
        assert.equal(await store.countUnread(groupId, bob.id, 2, 4), 4, "exactly cap");
      });

      it("counts a message as soon as its append returned", async () => {
        const g = await group();
        const dave = userRef();
        const added = await add(g.groupId, g.owner, dave);
        for (let i = 1; i <= 5; i++) {
          const seq = await send(g.groupId, g.owner);
          assert.equal(await store.countUnread(g.groupId, dave.id, added.seq, 100), i, `after message ${seq}`);
        }
        assert.equal(await store.countUnread(g.groupId, g.owner.id, 1, 100), 0, "the sender's own messages");
      });

      it("counts only retained messages", async () => {
        const c = new FakeClock(Date.UTC(2001, 0, 1) + Math.floor(Math.random() * DAY));
        const s = await make({ retentionMs: 1000, clock: c });
        opened.push(s);
        const g = await group(s, c.now());
        const erin = userRef();
        await add(g.groupId, g.owner, erin, s, c.now());
        await send(g.groupId, g.owner, s, c.now());
        await send(g.groupId, g.owner, s, c.now());
        c.advance(600);
        await send(g.groupId, g.owner, s, c.now());
        assert.equal(await s.countUnread(g.groupId, erin.id, 2, 100), 3);
        c.advance(500); // the first two messages are past retention now
        assert.equal(await s.countUnread(g.groupId, erin.id, 2, 100), 1);
      });
    });
  });
}
