/**
 * Integration tests of the Cassandra data-access layer against a real server.
 * Gated on CASSANDRA_URL (e.g. cassandra://127.0.0.1:9042/chat_test); every
 * run works in its own keyspace `<keyspace>_<random>` and drops it.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Client } from "cassandra-driver";
import { isChatError } from "../../core/errors.js";
import { newId } from "../../core/ids.js";
import { DEFAULT_NOTIFY } from "../../core/model.js";
import type { GroupEvent, UserCredentials, UserRef } from "../../core/model.js";
import type { Clock } from "../../core/ports.js";
import { createCassandraTables } from "./cassandra-tables.js";
import type { CassandraTables } from "./cassandra-tables.js";
import { DAY_MS, bucketOf } from "./event-tables.js";
import type { MessageEvent } from "./event-tables.js";
import type { GroupCounts } from "./group-tables.js";
import { MIGRATIONS, createKeyspace, migrate } from "./migrations.js";
import { ledgerTtlSeconds } from "./push-ledger-tables.js";
import { encodeNotify } from "./read-state-tables.js";
import { openTestKeyspace } from "../../../test/support/test-keyspace.js";
import type { TestKeyspace } from "../../../test/support/test-keyspace.js";

const URL = process.env.CASSANDRA_URL;
const RETENTION_MS = 30 * DAY_MS;
const REFRESH_TTL_MS = 30 * DAY_MS;

class FakeClock implements Clock {
  constructor(public t: number) {}
  now(): number {
    return this.t;
  }
}

function userRef(): UserRef {
  const id = newId();
  return { id, username: `u-${id}` };
}

function credentials(at: number, username = `u-${newId()}`): UserCredentials {
  return { id: newId(), username, passwordHash: `$argon2id$v=19$m=19456,t=2,p=1$${newId()}`, createdAt: at };
}

function messageEvent(groupId: string, seq: number, at: number, sender: UserRef, clientMessageId = newId()): MessageEvent {
  return {
    groupId,
    seq,
    at,
    actor: sender,
    body: {
      type: "message",
      message: { id: newId(), groupId, seq, sender, text: `m${seq}`, sentAt: at, clientMessageId },
    },
  };
}

function memberEvent(
  groupId: string,
  seq: number,
  at: number,
  actor: UserRef,
  body: Exclude<GroupEvent["body"], { type: "message" }>,
): GroupEvent {
  return { groupId, seq, at, actor, body };
}

/** writeEvent writes any event as its writer does: a message with EventTables, a change with GroupTables. */
function writeEvent(tables: CassandraTables, e: GroupEvent, counts?: GroupCounts): Promise<void> {
  return e.body.type === "message" ? tables.events.writeMessage(e) : tables.groups.writeChange(e, counts);
}

function seqs(events: readonly { seq: number }[]): number[] {
  return events.map((e) => e.seq);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe("Cassandra tables (integration)", { skip: URL ? false : "CASSANDRA_URL not set" }, () => {
  let ks: TestKeyspace;
  let client: Client;
  const clock = new FakeClock(Date.now());
  let t: CassandraTables;

  before(async () => {
    ks = await openTestKeyspace(URL ?? "", { retentionMs: RETENTION_MS });
    client = ks.client;
    t = createCassandraTables(client, { keyspace: ks.keyspace, retentionMs: RETENTION_MS, refreshTtlMs: REFRESH_TTL_MS, clock });
  });

  after(async () => {
    await ks?.drop();
  });

  /** messageIdRows counts the group's rows in `message_ids` (a table kept in the schema, no longer written). */
  async function messageIdRows(groupId: string): Promise<number> {
    const rs = await client.execute(
      `SELECT COUNT(*) AS n FROM ${ks.keyspace}.message_ids WHERE group_id = ? ALLOW FILTERING`,
      [groupId],
      { prepare: true },
    );
    return Number(rs.rows[0]?.get("n"));
  }

  /** newGroup creates a group owned by a fresh user at `at`. */
  async function newGroup(at = clock.now(), tables = t) {
    const owner = userRef();
    const id = newId();
    const created = await tables.groups.createGroup({ id, name: "g", epoch: newId(), createdAt: at, owner });
    return { id, owner, created };
  }

  describe("migrations", () => {
    it("applied versions 1 to 3 once; a second run applies nothing", async () => {
      assert.deepEqual(ks.migrated?.applied, [1, 2, 3]);
      const again = await migrate(client, ks.keyspace, { retentionMs: RETENTION_MS });
      assert.deepEqual(again, { applied: [], retentionUpdated: [] });
      const rows = (await client.execute(`SELECT version FROM ${ks.keyspace}.schema_migrations`)).rows;
      assert.deepEqual(
        rows.map((r) => r.get("version")).sort(),
        [1, 2, 3],
      );
    });

    it("sets the TTL and TWCS on the events table and the TTL on message_ids and group_buckets", async () => {
      const rs = await client.execute(
        "SELECT table_name, default_time_to_live, compaction FROM system_schema.tables WHERE keyspace_name = ?",
        [ks.keyspace],
        { prepare: true },
      );
      const byName = new Map(rs.rows.map((r) => [String(r.get("table_name")), r]));
      const events = byName.get("events_by_group");
      assert.ok(events);
      assert.equal(events.get("default_time_to_live"), RETENTION_MS / 1000);
      const compaction = events.get("compaction") as Record<string, string>;
      assert.match(compaction.class ?? "", /TimeWindowCompactionStrategy$/);
      assert.equal(compaction.compaction_window_unit, "DAYS");
      assert.equal(compaction.compaction_window_size, "1");
      assert.equal(byName.get("message_ids")?.get("default_time_to_live"), RETENTION_MS / 1000);
      assert.ok(Number(byName.get("group_buckets")?.get("default_time_to_live")) > RETENTION_MS / 1000);
      assert.equal(byName.get("users")?.get("default_time_to_live"), 0);
    });

    it("is safe when several processes migrate one keyspace at once, and follows a retention change", async () => {
      const other = await openTestKeyspace(URL ?? "", { migrate: false });
      try {
        const clients = [other.client, await other.newClient(), await other.newClient()];
        const results = await Promise.all(clients.map((c) => migrate(c, other.keyspace, { retentionMs: RETENTION_MS })));
        assert.deepEqual(
          results.flatMap((r) => r.applied).sort(),
          [1, 2, 3],
          "exactly one run applied each version",
        );
        const tables = await client.execute(
          "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
          [other.keyspace],
          { prepare: true },
        );
        assert.equal(tables.rowLength, 16);
        const week = 7 * DAY_MS;
        const changed = await Promise.all(clients.map((c) => migrate(c, other.keyspace, { retentionMs: week })));
        assert.deepEqual(
          changed.flatMap((r) => r.retentionUpdated).sort(),
          ["events_by_group", "group_buckets", "message_ids"],
          "each table altered once",
        );
        const ttl = await client.execute(
          "SELECT default_time_to_live FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'events_by_group'",
          [other.keyspace],
          { prepare: true },
        );
        assert.equal(ttl.rows[0]?.get("default_time_to_live"), week / 1000);
        // createKeyspace is idempotent too.
        await createKeyspace(client, other.keyspace, other.url.replication);
        assert.equal(MIGRATIONS.length, 3);
      } finally {
        await other.drop();
      }
    });
  });

  describe("users", () => {
    it("creates, finds by name and by id", async () => {
      const u = credentials(clock.now());
      await t.users.createUser(u);
      assert.deepEqual(await t.users.findUserByName(u.username), u);
      assert.deepEqual(await t.users.getUser(u.id), { id: u.id, username: u.username, createdAt: u.createdAt });
      assert.equal(await t.users.findUserByName(`u-${newId()}`), undefined);
      assert.equal(await t.users.getUser(newId()), undefined);
      await t.users.createUser(u); // a retry of a successful create succeeds
    });

    it("lets exactly one of 10 concurrent creates with one username win", async () => {
      const username = `u-${newId()}`;
      const attempts = range(1, 10).map(() => credentials(clock.now(), username));
      const results = await Promise.allSettled(attempts.map((u) => t.users.createUser(u)));
      const won = attempts.filter((_, i) => results[i]?.status === "fulfilled");
      assert.equal(won.length, 1);
      for (const r of results) {
        if (r.status === "rejected") assert.ok(isChatError(r.reason, "AlreadyExists"), String(r.reason));
      }
      assert.equal((await t.users.findUserByName(username))?.id, won[0]?.id);
      for (const u of attempts) {
        if (u !== won[0]) assert.equal(await t.users.getUser(u.id), undefined, "a loser leaves no user row");
      }
    });
  });

  describe("refresh tokens", () => {
    const token = (familyId = newId()) => ({
      tokenHash: newId().replaceAll("-", ""),
      userId: newId(),
      familyId,
      expiresAt: clock.now() + DAY_MS,
      usedAt: null,
      revokedAt: null,
    });

    it("stores with a TTL and finds by hash", async () => {
      const r = token();
      await t.users.insertRefreshToken(r);
      assert.deepEqual(await t.users.findRefreshToken(r.tokenHash), r);
      assert.equal(await t.users.findRefreshToken(newId()), undefined);
      const ttl = await client.execute(
        `SELECT TTL(user_id) AS ttl FROM ${ks.keyspace}.refresh_tokens WHERE token_hash = ?`,
        [r.tokenHash],
        { prepare: true },
      );
      const seconds = Number(ttl.rows[0]?.get("ttl"));
      assert.ok(seconds > 86_400 && seconds <= 2 * 86_400, `ttl ${seconds}`);
    });

    it("marks a token used once, also under concurrency, and never creates unknown tokens", async () => {
      const a = token();
      await t.users.insertRefreshToken(a);
      assert.equal(await t.users.markRefreshTokenUsed(a.tokenHash, 111), true);
      assert.equal(await t.users.markRefreshTokenUsed(a.tokenHash, 222), false);
      assert.equal((await t.users.findRefreshToken(a.tokenHash))?.usedAt, 111);

      const b = token();
      await t.users.insertRefreshToken(b);
      const results = await Promise.all(range(1, 10).map((i) => t.users.markRefreshTokenUsed(b.tokenHash, i)));
      assert.equal(results.filter(Boolean).length, 1);

      const unknown = newId();
      assert.equal(await t.users.markRefreshTokenUsed(unknown, 1), false);
      assert.equal(await t.users.findRefreshToken(unknown), undefined);
    });

    it("revokes a whole family, only it, keeping the first revocation time", async () => {
      const family = newId();
      const [a, b, other] = [token(family), token(family), token()];
      for (const r of [a, b, other]) await t.users.insertRefreshToken(r);
      await t.users.revokeRefreshFamily(family, 500);
      assert.equal((await t.users.findRefreshToken(a.tokenHash))?.revokedAt, 500);
      assert.equal((await t.users.findRefreshToken(b.tokenHash))?.revokedAt, 500);
      assert.equal((await t.users.findRefreshToken(other.tokenHash))?.revokedAt, null);
      await t.users.revokeRefreshFamily(family, 600);
      assert.equal((await t.users.findRefreshToken(a.tokenHash))?.revokedAt, 500);
      await t.users.revokeRefreshFamily(newId(), 600);
    });

    it("keeps a session's revocation mark for the refresh TTL plus a day, however soon the family's known tokens expire", async () => {
      // The family's only known token expires in an hour; a refresh racing the revocation may insert one that
      // lives the whole refresh TTL (REFRESH_TTL_MS) and that the revocation never saw: the mark must outlive it.
      const family = newId();
      await t.users.insertRefreshToken({ ...token(family), expiresAt: clock.now() + 3_600_000 });
      await t.users.revokeRefreshFamily(family, clock.now());
      assert.equal(await t.users.isSessionRevoked(family), true);
      const ttl = await client.execute(
        `SELECT TTL(revoked_at) AS ttl FROM ${ks.keyspace}.revoked_sessions WHERE family_id = ?`,
        [family],
        { prepare: true },
      );
      const seconds = Number(ttl.rows[0]?.get("ttl"));
      const least = REFRESH_TTL_MS / 1000 + 86_400;
      assert.ok(seconds > least - 60 && seconds <= least, `mark ttl ${seconds} s, want about ${least} s`);
      // A token past the refresh TTL (a longer TTL configured before) keeps the mark as long as itself.
      const longer = newId();
      await t.users.insertRefreshToken({ ...token(longer), expiresAt: clock.now() + REFRESH_TTL_MS + 10 * DAY_MS });
      await t.users.revokeRefreshFamily(longer, clock.now());
      const ttl2 = await client.execute(
        `SELECT TTL(revoked_at) AS ttl FROM ${ks.keyspace}.revoked_sessions WHERE family_id = ?`,
        [longer],
        { prepare: true },
      );
      const seconds2 = Number(ttl2.rows[0]?.get("ttl"));
      assert.ok(seconds2 > least + 10 * 86_400 - 60, `mark ttl ${seconds2} s`);
    });

    it("revoked_sessions drops its TTL tombstones after a day (gc_grace_seconds), like the events tables", async () => {
      const r = await client.execute(
        "SELECT gc_grace_seconds FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'revoked_sessions'",
        [ks.keyspace],
        { prepare: true },
      );
      assert.equal(r.rows[0]?.get("gc_grace_seconds"), 86_400);
    });
  });

  describe("groups and memberships", () => {
    it("createGroup writes group, owner membership both ways and seq 1 in one batch", async () => {
      const at = clock.now();
      const { id, owner, created } = await newGroup(at);
      assert.deepEqual(created, {
        groupId: id,
        seq: 1,
        at,
        actor: owner,
        body: { type: "member_added", member: owner, role: "owner" },
      });
      const state = await t.groups.getGroupState(id);
      assert.equal(state?.ownerCount, 1);
      assert.deepEqual(state?.group, { id, name: "g", createdAt: at, epoch: state?.group.epoch, headSeq: 1, memberCount: 1 });
      assert.equal(await t.groups.headSeq(id), 1);
      assert.deepEqual(await t.groups.getMember(id, owner.id), { groupId: id, user: owner, role: "owner", joinedAt: at, ackedSeq: 0 });
      const ms = await t.groups.listMemberships(owner.id, "", 10);
      assert.deepEqual(
        ms.map((m) => [m.group.id, m.role, m.ackedSeq]),
        [[id, "owner", 0]],
      );
      assert.deepEqual(await t.events.readEvents(id, 0, 10), [created]);
      assert.equal(await t.groups.getGroup(newId()), undefined);
      assert.equal(await t.groups.headSeq(newId()), undefined);
    });

    it("applies add / set_role / rename / remove with their events, in both directions", async () => {
      const { id, owner } = await newGroup();
      const bob = userRef();
      const at = clock.now();
      const counts = (memberCount: number, ownerCount: number): GroupCounts => ({ memberCount, ownerCount });
      const e2 = memberEvent(id, 2, at, owner, { type: "member_added", member: bob, role: "member" });
      await writeEvent(t, e2, counts(2, 1));
      assert.equal((await t.groups.getMember(id, bob.id))?.role, "member");
      assert.equal((await t.groups.listMemberships(bob.id, "", 10))[0]?.group.memberCount, 2);

      const e3 = memberEvent(id, 3, at + 1, owner, { type: "member_role_changed", member: bob, role: "owner" });
      await writeEvent(t, e3, counts(2, 2));
      assert.equal((await t.groups.getMember(id, bob.id))?.role, "owner");
      assert.equal((await t.groups.listMemberships(bob.id, "", 10))[0]?.role, "owner");
      assert.equal((await t.groups.getGroupState(id))?.ownerCount, 2);

      const e4 = memberEvent(id, 4, at + 2, bob, { type: "group_renamed", name: "renamed" });
      await writeEvent(t, e4);
      assert.equal((await t.groups.getGroup(id))?.name, "renamed");

      const e5 = memberEvent(id, 5, at + 3, owner, { type: "member_removed", member: bob });
      await writeEvent(t, e5, counts(1, 1));
      assert.equal(await t.groups.getMember(id, bob.id), undefined);
      assert.deepEqual(await t.groups.listMemberships(bob.id, "", 10), []);
      const g = await t.groups.getGroupState(id);
      assert.deepEqual([g?.group.headSeq, g?.group.memberCount, g?.ownerCount, g?.group.name], [5, 1, 1, "renamed"]);
      assert.deepEqual(await t.groups.countMembers(id), { memberCount: 1, ownerCount: 1 });

      // Replaying older events after the removal changes nothing (timestamps = seq).
      await writeEvent(t, e3, counts(2, 2));
      await writeEvent(t, e2, counts(2, 1));
      assert.equal(await t.groups.getMember(id, bob.id), undefined, "a replayed add does not undo a later removal");
      const after = await t.groups.getGroupState(id);
      assert.deepEqual([after?.group.headSeq, after?.group.memberCount, after?.ownerCount], [5, 1, 1]);
      assert.deepEqual(seqs(await t.events.readEvents(id, 0, 10)), [1, 2, 3, 4, 5]);
      assert.deepEqual((await t.events.readEvents(id, 1, 10))[1], e3);

      // Re-adding later works again.
      await writeEvent(t, memberEvent(id, 6, at + 4, owner, { type: "member_added", member: bob, role: "admin" }), counts(2, 1));
      assert.equal((await t.groups.getMember(id, bob.id))?.role, "admin");
      assert.equal((await t.groups.getMember(id, bob.id))?.ackedSeq, 0);
    });

    it("refuses a member event without counts", async () => {
      const { id, owner } = await newGroup();
      const e = memberEvent(id, 2, clock.now(), owner, { type: "member_added", member: userRef(), role: "member" });
      await assert.rejects(writeEvent(t, e), (err) => isChatError(err, "Internal"));
      assert.equal(await t.groups.headSeq(id), 1);
    });

    it("pages members by user id and memberships by group id", async () => {
      const { id, owner } = await newGroup();
      const others = range(1, 4).map(() => userRef());
      let seq = 1;
      for (const u of others) {
        seq++;
        await writeEvent(t, memberEvent(id, seq, clock.now(), owner, { type: "member_added", member: u, role: "member" }), {
          memberCount: seq,
          ownerCount: 1,
        });
      }
      const all = [owner, ...others].map((u) => u.id).sort();
      const p1 = await t.groups.listMembers(id, "", 2);
      const p2 = await t.groups.listMembers(id, p1.at(-1)?.user.id ?? "", 2);
      const p3 = await t.groups.listMembers(id, p2.at(-1)?.user.id ?? "", 2);
      assert.deepEqual(
        [...p1, ...p2, ...p3].map((m) => m.user.id),
        all,
      );
      assert.equal(p3.length, 1);
      assert.deepEqual(await t.groups.listMembers(id, all.at(-1) ?? "", 2), []);
      assert.deepEqual(await t.groups.getMembers(id, [owner.id, newId(), others[0]?.id ?? ""]), new Map([
        [owner.id, await t.groups.getMember(id, owner.id)],
        [others[0]?.id, await t.groups.getMember(id, others[0]?.id ?? "")],
      ]));

      const user = userRef();
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const gid = newId();
        await t.groups.createGroup({ id: gid, name: `n${i}`, epoch: newId(), createdAt: clock.now(), owner: user });
        ids.push(gid);
      }
      ids.sort();
      const m1 = await t.groups.listMemberships(user.id, "", 2);
      const m2 = await t.groups.listMemberships(user.id, m1.at(-1)?.group.id ?? "", 2);
      assert.deepEqual(
        [...m1, ...m2].map((m) => m.group.id),
        ids,
      );
      assert.ok(m1.every((m) => m.role === "owner" && m.group.memberCount === 1));
    });

    it("ackMember never lowers the acked seq, in order or concurrently, and ignores non-members", async () => {
      const { id, owner } = await newGroup();
      const acked = async () => [
        (await t.groups.getMember(id, owner.id))?.ackedSeq,
        (await t.groups.listMemberships(owner.id, "", 10))[0]?.ackedSeq,
      ];
      await t.groups.ackMember(id, owner.id, 5);
      assert.deepEqual(await acked(), [5, 5]);
      await t.groups.ackMember(id, owner.id, 3);
      assert.deepEqual(await acked(), [5, 5]);
      await t.groups.ackMember(id, owner.id, 7);
      assert.deepEqual(await acked(), [7, 7]);
      await Promise.all([12, 9, 11, 10, 8].map((s) => t.groups.ackMember(id, owner.id, s)));
      assert.deepEqual(await acked(), [12, 12]);

      const stranger = userRef();
      await t.groups.ackMember(id, stranger.id, 4);
      assert.equal(await t.groups.getMember(id, stranger.id), undefined);
      assert.deepEqual(await t.groups.listMemberships(stranger.id, "", 10), []);
      const raw = await client.execute(
        `SELECT * FROM ${ks.keyspace}.members_by_group WHERE group_id = ? AND user_id = ?`,
        [id, stranger.id],
        { prepare: true },
      );
      assert.equal(raw.rowLength, 0, "no partial row for a non-member");
    });
  });

  describe("read state (version 3)", () => {
    const counts = (memberCount: number, ownerCount: number): GroupCounts => ({ memberCount, ownerCount });

    /** writeTimes reads the write times of a member's last_read_seq and notify cells in both directions. */
    async function writeTimes(groupId: string, userId: string) {
      const byGroup = await client.execute(
        `SELECT WRITETIME(last_read_seq) AS m, WRITETIME(notify) AS n FROM ${ks.keyspace}.members_by_group WHERE group_id = ? AND user_id = ?`,
        [groupId, userId],
        { prepare: true },
      );
      const byUser = await client.execute(
        `SELECT WRITETIME(last_read_seq) AS m, WRITETIME(notify) AS n FROM ${ks.keyspace}.groups_by_user WHERE user_id = ? AND group_id = ?`,
        [userId, groupId],
        { prepare: true },
      );
      const row = (r: typeof byGroup) => [r.rows[0]?.get("m"), r.rows[0]?.get("n")].map((v: unknown) => (v === null || v === undefined ? null : Number(v)));
      return { byGroup: row(byGroup), byUser: row(byUser) };
    }

    it("stamps markers with their seq and settings with the join seq, in both directions", async () => {
      const { id, owner } = await newGroup();
      const bob = userRef();
      await writeEvent(t, memberEvent(id, 2, clock.now(), owner, { type: "member_added", member: bob, role: "member" }), counts(2, 1));
      assert.deepEqual(await writeTimes(id, bob.id), { byGroup: [2, null], byUser: [2, null] }, "member_added writes the marker");
      assert.equal(await t.readStates.markRead(id, bob.id, 9), 9);
      await t.readStates.setNotify(id, bob.id, { level: "none", mutedUntil: 0 });
      assert.deepEqual(await writeTimes(id, bob.id), { byGroup: [9, 2], byUser: [9, 2] });
      assert.deepEqual((await t.readStates.readStatesOfUser(bob.id, [id])).get(id), { lastReadSeq: 9, notify: { level: "none", mutedUntil: 0 } });
    });

    it("a marker or setting written late by a call that read an earlier membership is shadowed, and leaves no row behind", async () => {
      const { id, owner } = await newGroup();
      const bob = userRef();
      const at = clock.now();
      await writeEvent(t, memberEvent(id, 2, at, owner, { type: "member_added", member: bob, role: "member" }), counts(2, 1));
      await writeEvent(t, memberEvent(id, 5, at, owner, { type: "member_removed", member: bob }), counts(1, 1));
      // What markRead(4) and setNotify would write had they read bob's row just before the removal.
      const stale = async () => {
        for (const [table, key] of [["members_by_group", "group_id = ? AND user_id = ?"], ["groups_by_user", "user_id = ? AND group_id = ?"]] as const) {
          const params = table === "members_by_group" ? [id, bob.id] : [bob.id, id];
          await client.execute(`UPDATE ${ks.keyspace}.${table} USING TIMESTAMP 4 SET last_read_seq = 4 WHERE ${key}`, params, { prepare: true });
          await client.execute(`UPDATE ${ks.keyspace}.${table} USING TIMESTAMP 2 SET notify = ? WHERE ${key}`, [encodeNotify({ level: "none", mutedUntil: 0 }), ...params], {
            prepare: true,
          });
        }
      };
      await stale();
      assert.equal((await t.readStates.readStates(id, [bob.id])).size, 0);
      const raw = await client.execute(`SELECT * FROM ${ks.keyspace}.members_by_group WHERE group_id = ? AND user_id = ?`, [id, bob.id], { prepare: true });
      assert.equal(raw.rowLength, 0, "no partial row");
      assert.equal(await t.groups.countMemberships(bob.id, 10), 0);
      await writeEvent(t, memberEvent(id, 8, at, owner, { type: "member_added", member: bob, role: "member" }), counts(2, 1));
      await stale();
      assert.deepEqual((await t.readStates.readStates(id, [bob.id])).get(bob.id), { lastReadSeq: 8, notify: DEFAULT_NOTIFY });
      assert.deepEqual((await t.readStates.readStatesOfUser(bob.id, [id])).get(id), { lastReadSeq: 8, notify: DEFAULT_NOTIFY });
    });

    it("upgrades a version 2 keyspace: a membership from before reads its join seq and the default setting", async () => {
      const other = await openTestKeyspace(URL ?? "", { migrate: false });
      try {
        const ksName = other.keyspace;
        assert.deepEqual((await migrate(other.client, ksName, { retentionMs: RETENTION_MS, migrations: MIGRATIONS.slice(0, 2) })).applied, [1, 2]);
        const [g, u] = [newId(), newId()];
        await other.client.execute(
          `INSERT INTO ${ksName}.members_by_group (group_id, user_id, username, role, joined_at) VALUES (?, ?, 'old', 'member', ?) USING TIMESTAMP 7`,
          [g, u, clock.now()],
          { prepare: true },
        );
        await other.client.execute(
          `INSERT INTO ${ksName}.groups_by_user (user_id, group_id, role, joined_at) VALUES (?, ?, 'member', ?) USING TIMESTAMP 7`,
          [u, g, clock.now()],
          { prepare: true },
        );
        assert.deepEqual((await migrate(other.client, ksName, { retentionMs: RETENTION_MS })).applied, [3]);
        const tables = createCassandraTables(other.client, { keyspace: ksName, retentionMs: RETENTION_MS, refreshTtlMs: REFRESH_TTL_MS, clock });
        assert.deepEqual((await tables.readStates.readStates(g, [u])).get(u), { lastReadSeq: 7, notify: DEFAULT_NOTIFY });
        assert.deepEqual((await tables.readStates.readStatesOfUser(u, [g])).get(g), { lastReadSeq: 7, notify: DEFAULT_NOTIFY });
        assert.equal(await tables.readStates.markRead(g, u, 6), 7, "the join seq is the floor");
        // An AddColumn step is idempotent, and refuses a column of another type.
        const again = { version: 4, description: "again", statements: () => [{ addColumn: { table: "members_by_group", column: "notify", type: "text" } }] };
        assert.deepEqual((await migrate(other.client, ksName, { retentionMs: RETENTION_MS, migrations: [...MIGRATIONS, again] })).applied, [4]);
        const clash = { version: 5, description: "clash", statements: () => [{ addColumn: { table: "members_by_group", column: "notify", type: "bigint" } }] };
        await assert.rejects(migrate(other.client, ksName, { retentionMs: RETENTION_MS, migrations: [...MIGRATIONS, again, clash] }), /is text, not bigint/);
      } finally {
        await other.drop();
      }
    });
  });

  describe("push devices and ledger (version 3)", () => {
    it("a token taken over by another user moves its entry; unregistering drops the entry it still names", async () => {
      const [alice, bob] = [newId(), newId()];
      const token = `tok-${newId()}`;
      const base = { kind: "fcm", token, p256dh: "", auth: "", topic: "", createdAt: clock.now() } as const;
      const entry = async () => {
        const r = await client.execute(`SELECT user_id, device_id FROM ${ks.keyspace}.device_by_token WHERE kind = 'fcm' AND push_token = ?`, [token], { prepare: true });
        return r.rows[0] ? [r.rows[0].get("user_id"), r.rows[0].get("device_id")] : undefined;
      };
      const a = await t.devices.registerDevice({ ...base, id: newId(), userId: alice }, 5);
      assert.deepEqual(await entry(), [alice, a.id]);
      const b = await t.devices.registerDevice({ ...base, id: newId(), userId: bob }, 5);
      assert.deepEqual(await entry(), [bob, b.id]);
      assert.deepEqual(await t.devices.listDevices(alice), []);
      assert.equal(await t.devices.unregisterDevice(bob, b.id), true);
      assert.equal(await entry(), undefined);
    });

    it("claims a push with a TTL of whole seconds plus one", async () => {
      assert.deepEqual([0, 1, 999, 1000, 1001, 60_000].map(ledgerTtlSeconds), [2, 2, 2, 2, 3, 61]);
      const [d, g] = [newId(), newId()];
      assert.equal(await t.pushLedger.claimPush(d, g, 3, 60_000), true);
      assert.equal(await t.pushLedger.claimPush(d, g, 3, 60_000), false);
      const r = await client.execute(`SELECT TTL(claim) AS ttl FROM ${ks.keyspace}.push_ledger WHERE device_id = ? AND group_id = ? AND newest_seq = 3`, [d, g], {
        prepare: true,
      });
      const ttl = Number(r.rows[0]?.get("ttl"));
      assert.ok(ttl > 55 && ttl <= 61, `ttl ${ttl}`);
    });
  });

  describe("events", () => {
    it("stores an event written twice once, and no message_ids row", async () => {
      const { id, owner } = await newGroup();
      const e = messageEvent(id, 2, clock.now(), owner);
      await writeEvent(t, e);
      await writeEvent(t, e);
      assert.deepEqual(await t.events.readEvents(id, 1, 10), [e]);
      assert.deepEqual((await t.events.listMessages(id, {}, 10)).messages, [e.body.message]);
      assert.equal(await t.groups.headSeq(id), 2);
      assert.equal(await messageIdRows(id), 0, "message_ids is no longer written");
      const count = await client.execute(
        `SELECT COUNT(*) AS n FROM ${ks.keyspace}.events_by_group WHERE group_id = ? AND bucket = ?`,
        [id, bucketOf(e.at)],
        { prepare: true },
      );
      assert.equal(Number(count.rows[0]?.get("n")), 2, "seq 1 and seq 2, each once");
      const ttl = await client.execute(
        `SELECT TTL(kind) AS ttl FROM ${ks.keyspace}.events_by_group WHERE group_id = ? AND bucket = ? AND seq = 2`,
        [id, bucketOf(e.at)],
        { prepare: true },
      );
      const seconds = Number(ttl.rows[0]?.get("ttl"));
      assert.ok(seconds > RETENTION_MS / 1000 - 60 && seconds <= RETENTION_MS / 1000, `event row ttl ${seconds}`);
    });

    it("writes a message with a long text (its event row beside the batch) like any other", async () => {
      const { id, owner } = await newGroup();
      const e = messageEvent(id, 2, clock.now(), owner);
      // 4,000 characters of 3 UTF-8 bytes: 12 KB, above the small-batch bound.
      const long: MessageEvent = { ...e, body: { type: "message", message: { ...e.body.message, text: "\u20ac".repeat(4000) } } };
      await writeEvent(t, long);
      assert.deepEqual(await t.events.readEvents(id, 1, 10), [long]);
      assert.equal(await t.groups.headSeq(id), 2);
      assert.deepEqual((await t.events.listMessages(id, {}, 10)).messages, [long.body.message]);
    });

    it("writeMessage and writeMessages index the bucket and raise head_seq, and write no message_ids row", async () => {
      const { id, owner } = await newGroup();
      const at = clock.now();
      for (const seq of [2, 3, 5]) await writeEvent(t, messageEvent(id, seq, at, owner));
      const index = async () => {
        const rs = await client.execute(
          `SELECT first_seq, last_seq FROM ${ks.keyspace}.group_buckets WHERE group_id = ? AND bucket = ?`,
          [id, bucketOf(at)],
          { prepare: true },
        );
        return [Number(rs.rows[0]?.get("first_seq")), Number(rs.rows[0]?.get("last_seq")), await t.groups.headSeq(id)];
      };
      assert.deepEqual(await index(), [1, 5, 5]);
      const batch = [9, 7, 6, 8].map((seq) => messageEvent(id, seq, at, owner));
      await t.events.writeMessages(id, batch);
      assert.deepEqual(await index(), [1, 9, 9]);
      await t.events.writeMessages(id, batch.slice(1)); // a redelivery of 7, 6, 8
      assert.deepEqual(await index(), [1, 9, 9], "never lowered");
      assert.deepEqual(seqs(await t.events.readEvents(id, 1, 10)), [2, 3, 5, 6, 7, 8, 9]);
      assert.equal(await messageIdRows(id), 0, "message_ids is no longer written");
    });

    it("changeStamp is the seq of the latest membership event or rename stored", async () => {
      const { id, owner } = await newGroup();
      const at = clock.now();
      assert.equal(await t.groups.changeStamp(id), 1, "the creation");
      await writeEvent(t, messageEvent(id, 2, at, owner));
      assert.equal(await t.groups.changeStamp(id), 1, "messages are not changes");
      await writeEvent(t, memberEvent(id, 3, at, owner, { type: "member_added", member: userRef(), role: "member" }), {
        memberCount: 2,
        ownerCount: 1,
      });
      assert.equal(await t.groups.changeStamp(id), 3);
      await writeEvent(t, memberEvent(id, 4, at, owner, { type: "group_renamed", name: "n" }));
      assert.equal(await t.groups.changeStamp(id), 4);
      assert.equal(await t.groups.changeStamp(newId()), undefined);
    });

    it("keeps the highest head_seq when events are written out of order or concurrently", async () => {
      const { id, owner } = await newGroup();
      const at = clock.now();
      for (const s of [5, 3, 4, 2]) await writeEvent(t, messageEvent(id, s, at, owner));
      assert.equal(await t.groups.headSeq(id), 5);
      await Promise.all(range(6, 40).reverse().map((s) => writeEvent(t, messageEvent(id, s, at, owner))));
      assert.equal(await t.groups.headSeq(id), 40);
      await writeEvent(t, messageEvent(id, 7, at, owner));
      assert.equal(await t.groups.headSeq(id), 40);
      assert.deepEqual(seqs(await t.events.readEvents(id, 0, 100)), range(1, 40));
    });

    describe("across buckets", () => {
      // Three days: day0 has seqs 1..4 (1 = creation), day1 has 5..8 (with 6 a member event), day2 has 9..12.
      // Seq 13 was written by a writer whose clock ran behind: its `at` lies in day1 although it follows 12.
      let id = "";
      let owner: UserRef;
      const day0 = bucketOf(clock.now()) - 5;
      const atOf = (day: number, i: number) => (day0 + day) * DAY_MS + 3_600_000 + i * 1000;
      const events: GroupEvent[] = [];

      before(async () => {
        owner = userRef();
        id = newId();
        events.push(await t.groups.createGroup({ id, name: "b", epoch: newId(), createdAt: atOf(0, 0), owner }));
        for (let s = 2; s <= 12; s++) {
          const day = s <= 4 ? 0 : s <= 8 ? 1 : 2;
          const e =
            s === 6
              ? memberEvent(id, s, atOf(day, s), owner, { type: "member_added", member: userRef(), role: "member" })
              : messageEvent(id, s, atOf(day, s), owner);
          events.push(e);
        }
        const late = messageEvent(id, 13, atOf(1, 99), owner);
        events.push(late);
        // Write in a scrambled order: the layer must not care.
        const order = [...events.slice(1)].sort((a, b) => ((a.seq * 7) % 13) - ((b.seq * 7) % 13));
        for (const e of order) await writeEvent(t, e, { memberCount: 2, ownerCount: 1 });
      });

      it("indexes each bucket with its smallest and largest seq", async () => {
        const rs = await client.execute(
          `SELECT bucket, first_seq, last_seq FROM ${ks.keyspace}.group_buckets WHERE group_id = ?`,
          [id],
          { prepare: true },
        );
        assert.deepEqual(
          rs.rows.map((r) => [r.get("bucket"), Number(r.get("first_seq")), Number(r.get("last_seq"))]),
          [
            [day0 + 2, 9, 12],
            [day0 + 1, 5, 13],
            [day0, 1, 4],
          ],
        );
      });

      it("readEvents returns every event ascending, in pages that cross buckets", async () => {
        assert.deepEqual(await t.events.readEvents(id, 0, 100), events);
        const pages: number[][] = [];
        for (let after = 0; ; ) {
          const page = await t.events.readEvents(id, after, 3);
          if (page.length === 0) break;
          pages.push(seqs(page));
          after = page.at(-1)?.seq ?? 0;
        }
        assert.deepEqual(pages, [
          [1, 2, 3],
          [4, 5, 6],
          [7, 8, 9],
          [10, 11, 12],
          [13],
        ]);
        assert.deepEqual(seqs(await t.events.readEvents(id, 11, 10)), [12, 13]);
        assert.deepEqual(await t.events.readEvents(id, 13, 10), []);
        assert.deepEqual(await t.events.readEvents(id, 0, 0), []);
        assert.equal((await t.events.firstRetained(id))?.seq, 1);
      });

      async function page(anchor: { beforeSeq?: number; afterSeq?: number }, limit: number) {
        const p = await t.events.listMessages(id, anchor, limit);
        return { seqs: p.messages.map((m) => m.seq), hasMore: p.hasMore };
      }

      it("listMessages returns the newest messages and pages backwards with hasMore", async () => {
        assert.deepEqual(await page({}, 3), { seqs: [11, 12, 13], hasMore: true });
        assert.deepEqual(await page({ beforeSeq: 11 }, 3), { seqs: [8, 9, 10], hasMore: true });
        assert.deepEqual(await page({ beforeSeq: 8 }, 3), { seqs: [4, 5, 7], hasMore: true });
        assert.deepEqual(await page({ beforeSeq: 4 }, 3), { seqs: [2, 3], hasMore: false });
        assert.deepEqual(await page({ beforeSeq: 2 }, 3), { seqs: [], hasMore: false });
        assert.deepEqual(await page({}, 50), { seqs: [2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13], hasMore: false });
      });

      it("listMessages pages forwards with hasMore, and within a window", async () => {
        assert.deepEqual(await page({ afterSeq: 0 }, 4), { seqs: [2, 3, 4, 5], hasMore: true });
        assert.deepEqual(await page({ afterSeq: 5 }, 4), { seqs: [7, 8, 9, 10], hasMore: true });
        assert.deepEqual(await page({ afterSeq: 10 }, 4), { seqs: [11, 12, 13], hasMore: false });
        assert.deepEqual(await page({ afterSeq: 13 }, 4), { seqs: [], hasMore: false });
        assert.deepEqual(await page({ afterSeq: 3, beforeSeq: 9 }, 2), { seqs: [4, 5], hasMore: true });
        assert.deepEqual(await page({ afterSeq: 5, beforeSeq: 9 }, 2), { seqs: [7, 8], hasMore: false });
        const full = await t.events.listMessages(id, { afterSeq: 12 }, 1);
        assert.deepEqual(full.messages, [(events[12] as MessageEvent).body.message]);
        assert.deepEqual(await t.events.listMessages(newId(), {}, 10), { messages: [], hasMore: false });
      });
    });
  });

  describe("retention (fake clock)", () => {
    const RETENTION = 1000;

    it("hides expired events from every read, inside one bucket and across buckets", async () => {
      const c = new FakeClock(Date.UTC(2001, 0, 1, 12));
      const r = createCassandraTables(client, { keyspace: ks.keyspace, retentionMs: RETENTION, refreshTtlMs: REFRESH_TTL_MS, clock: c });
      const { id, owner } = await newGroup(c.now() - DAY_MS, r); // seq 1, the day before
      const old = messageEvent(id, 2, c.now(), owner);
      await writeEvent(r, old);
      await writeEvent(r, messageEvent(id, 3, c.now(), owner));
      await writeEvent(r, messageEvent(id, 4, c.now() + 600, owner));
      await writeEvent(r, messageEvent(id, 5, c.now() + 600, owner));
      c.t += 600;
      // seq 1 (a day old) is expired already; 2..5 are retained.
      assert.deepEqual(seqs(await r.events.readEvents(id, 0, 10)), [2, 3, 4, 5]);
      assert.equal((await r.events.firstRetained(id))?.seq, 2);
      assert.deepEqual(await r.events.readEvents(id, 1, 1), [old]);

      c.t += 500; // 2 and 3 expire now (same bucket as 4 and 5)
      assert.deepEqual(seqs(await r.events.readEvents(id, 0, 10)), [4, 5]);
      assert.deepEqual(seqs(await r.events.readEvents(id, 0, 1)), [4], "expired rows do not eat the limit");
      assert.equal((await r.events.firstRetained(id))?.seq, 4);
      const newest = await r.events.listMessages(id, {}, 10);
      assert.deepEqual([newest.messages.map((m) => m.seq), newest.hasMore], [[4, 5], false]);
      const beforeFive = await r.events.listMessages(id, { beforeSeq: 5 }, 1);
      assert.deepEqual([beforeFive.messages.map((m) => m.seq), beforeFive.hasMore], [[4], false]);
      assert.deepEqual(await r.events.listMessages(id, { beforeSeq: 4 }, 10), { messages: [], hasMore: false });
      const fwd = await r.events.listMessages(id, { afterSeq: 0 }, 10);
      assert.deepEqual(fwd.messages.map((m) => m.seq), [4, 5]);
      assert.equal((await r.events.readEvents(id, 1, 1))[0]?.seq, 4, "the expired message is not read");
      assert.equal((await r.groups.getGroup(id))?.headSeq, 5, "the group outlives its events");

      c.t += 1000;
      assert.equal(await r.events.firstRetained(id), undefined);
      assert.deepEqual(await r.events.readEvents(id, 0, 10), []);
      assert.deepEqual(await r.events.listMessages(id, {}, 10), { messages: [], hasMore: false });

      // A resend of an expired message's client id is stored as a new event.
      const again = messageEvent(id, 6, c.now(), owner, old.body.message.clientMessageId);
      await writeEvent(r, again);
      assert.deepEqual(await r.events.readEvents(id, 0, 10), [again]);
      assert.deepEqual(await r.events.listMessages(id, {}, 10), { messages: [again.body.message], hasMore: false });
    });
  });
});
