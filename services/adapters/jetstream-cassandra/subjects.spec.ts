import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isChatError } from "../../core/errors.js";
import { newId } from "../../core/ids.js";
import { DEFAULT_NATS_PREFIX, DURABLE_CONSUMERS, NatsNames, isValidPrefix } from "./subjects.js";

describe("NatsNames", () => {
  const g = newId();
  const u = newId();

  it("builds every name from the default prefix", () => {
    const n = new NatsNames();
    assert.equal(n.prefix, DEFAULT_NATS_PREFIX);
    assert.equal(n.slot(g, 1), `chat.group.${g}.1`);
    assert.equal(n.slot(g, 42), `chat.group.${g}.42`);
    assert.equal(n.slot(g, Number.MAX_SAFE_INTEGER), `chat.group.${g}.${Number.MAX_SAFE_INTEGER}`);
    assert.equal(n.group(g), `chat.group.${g}.*`);
    assert.equal(n.user(u), `chat.user.${u}`);
    assert.equal(n.timelineStream, "CHAT_TIMELINE");
    assert.equal(n.allGroups, "chat.group.>");
    assert.equal(n.allUsers, "chat.user.>");
    assert.equal(n.tail(g), `chat.tail.${g}.*`);
    assert.equal(n.allTails, "chat.tail.>");
    assert.equal(n.tailSlot(g, 42), `chat.tail.${g}.42`);
    assert.equal(n.msgId(g, 42), `${g}:42`);
    assert.deepEqual(
      DURABLE_CONSUMERS.map((c) => n.durable(c)),
      ["persister"],
    );
    assert.equal(n.feed("notifier"), "feed-notifier");
    assert.equal(n.feed("a_1-b"), "feed-a_1-b");
  });

  it("keeps prefixes apart", () => {
    const a = new NatsNames("t1-run_a");
    const b = new NatsNames("t1-run_b");
    assert.equal(a.group(g), `t1-run_a.group.${g}.*`);
    assert.equal(a.slot(g, 3), `t1-run_a.group.${g}.3`);
    assert.equal(a.tail(g), `t1-run_a.tail.${g}.*`);
    assert.equal(a.tailSlot(g, 3), `t1-run_a.tail.${g}.3`);
    assert.equal(a.timelineStream, "T1-RUN_A_TIMELINE");
    assert.notEqual(a.timelineStream, b.timelineStream);
    assert.notEqual(a.group(g), b.group(g));
    assert.notEqual(a.slot(g, 3), b.slot(g, 3));
    assert.notEqual(a.tail(g), b.tail(g));
    assert.notEqual(a.tailSlot(g, 3), b.tailSlot(g, 3));
  });

  it("rejects prefixes that are not one lower-case token", () => {
    for (const bad of ["", "a.b", "a*", ">", "Chat", "a b", "-a", "x".repeat(33)]) {
      assert.equal(isValidPrefix(bad), false, bad);
      assert.throws(
        () => new NatsNames(bad),
        (e) => isChatError(e, "InvalidArgument"),
      );
    }
  });

  it("rejects ids that could inject tokens or wildcards", () => {
    const n = new NatsNames();
    for (const bad of ["", "*", ">", "a.b", `${g}.x`, `${g}>`, g.toUpperCase(), ` ${g}`, "g1"]) {
      assert.throws(() => n.group(bad), (e) => isChatError(e, "InvalidArgument"), `group ${bad}`);
      assert.throws(() => n.slot(bad, 1), (e) => isChatError(e, "InvalidArgument"), `slot ${bad}`);
      assert.throws(() => n.tail(bad), (e) => isChatError(e, "InvalidArgument"), `tail ${bad}`);
      assert.throws(() => n.tailSlot(bad, 1), (e) => isChatError(e, "InvalidArgument"), `tailSlot ${bad}`);
      assert.throws(() => n.user(bad), (e) => isChatError(e, "InvalidArgument"), `user ${bad}`);
      assert.throws(() => n.msgId(bad, 1), (e) => isChatError(e, "InvalidArgument"), `msgId ${bad}`);
    }
  });

  it("rejects feed follower names that are not one lower-case token", () => {
    const n = new NatsNames();
    for (const bad of ["", "a.b", "a*", ">", "Notifier", "a b", "-a", "a/b", "x".repeat(33)]) {
      assert.throws(() => n.feed(bad), (e) => isChatError(e, "InvalidArgument"), `feed ${bad}`);
    }
  });

  it("rejects seqs that are not positive integers in msgId, slot and tailSlot", () => {
    const n = new NatsNames();
    for (const bad of [0, -0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, Number.MAX_SAFE_INTEGER + 1]) {
      assert.throws(() => n.msgId(g, bad), (e) => isChatError(e, "InvalidArgument"), `msgId ${bad}`);
      assert.throws(() => n.slot(g, bad), (e) => isChatError(e, "InvalidArgument"), `slot ${bad}`);
      assert.throws(() => n.tailSlot(g, bad), (e) => isChatError(e, "InvalidArgument"), `tailSlot ${bad}`);
    }
  });

  it("reads the group id and seq back from a slot subject only", () => {
    const n = new NatsNames("p");
    assert.deepEqual(n.slotOf(n.slot(g, 1)), { groupId: g, seq: 1 });
    assert.deepEqual(n.slotOf(n.slot(g, 907)), { groupId: g, seq: 907 });
    assert.deepEqual(n.slotOf(n.slot(g, Number.MAX_SAFE_INTEGER)), { groupId: g, seq: Number.MAX_SAFE_INTEGER });
    assert.deepEqual(n.slotOf(`p.group.${g}.10`), { groupId: g, seq: 10 });
    assert.equal(n.groupIdOf(n.slot(g, 907)), g);
    const notSlots = [
      `p.group.${g}`, // the subject of one group before slots
      n.group(g), // the filter
      n.allGroups,
      `p.group.${g}.0`,
      `p.group.${g}.-1`,
      `p.group.${g}.1.5`,
      `p.group.${g}.01`, // leading zero: not how slot() writes 1
      `p.group.${g}.007`,
      `p.group.${g}.1e3`,
      `p.group.${g}.0x10`,
      `p.group.${g}. 1`,
      `p.group.${g}.1 `,
      `p.group.${g}.+1`,
      `p.group.${g}.`,
      `p.group.${g}.1.x`,
      `p.group.${g}.x`,
      `p.group.${g}.>`,
      `p.group.${g}.${Number.MAX_SAFE_INTEGER + 1}`,
      `p.group.${g}.99999999999999999`,
      `p.group.${g.toUpperCase()}.1`,
      `p.group.g1.1`,
      `p.group..1`,
      `p.group.${g}x.1`,
      n.tailSlot(g, 1),
      `p.user.${u}.1`,
      n.user(u),
      new NatsNames("q").slot(g, 1),
      new NatsNames("pp").slot(g, 1),
      `xp.group.${g}.1`,
      ` p.group.${g}.1`,
    ];
    for (const s of notSlots) {
      assert.equal(n.slotOf(s), undefined, `slotOf ${s}`);
      assert.equal(n.groupIdOf(s), undefined, `groupIdOf ${s}`);
    }
  });

  it("reads the group id back from a slot subject only", () => {
    const n = new NatsNames("p");
    assert.equal(n.groupIdOf(n.slot(g, 1)), g);
    assert.equal(n.groupIdOf(`p.group.${g}`), undefined, "the subject of one group before slots");
    assert.equal(n.groupIdOf(n.group(g)), undefined, "the filter is no event subject");
    assert.equal(n.groupIdOf(n.user(u)), undefined);
    assert.equal(n.groupIdOf(new NatsNames("q").slot(g, 1)), undefined);
    assert.equal(n.groupIdOf(`p.group.${g}.x`), undefined);
    assert.equal(n.groupIdOf(n.tailSlot(g, 1)), undefined);
  });

  it("reads the group id back from a republished event's tail subject only", () => {
    const n = new NatsNames("p");
    // The timeline stream republishes `p.group.<g>.<seq>` as `p.tail.<g>.<seq>` (src `p.group.>`, dest `p.tail.>`).
    const republished = (seq: number) => n.slot(g, seq).replace(/^p\.group\./, "p.tail.");
    assert.equal(republished(12), `p.tail.${g}.12`);
    assert.equal(n.tailSlot(g, 12), republished(12), "tailSlot names the republished subject");
    assert.equal(n.tailSlot(g, Number.MAX_SAFE_INTEGER), republished(Number.MAX_SAFE_INTEGER));
    assert.equal(n.groupIdOfTail(n.tailSlot(g, 1)), g);
    assert.equal(n.groupIdOfTail(n.tailSlot(g, 12)), g);
    assert.equal(n.groupIdOfTail(`p.tail.${g}`), undefined, "the tail subject of one group before slots");
    assert.equal(n.groupIdOfTail(n.tail(g)), undefined, "the filter is no republished subject");
    assert.equal(n.groupIdOfTail(n.slot(g, 1)), undefined);
    assert.equal(n.groupIdOfTail(new NatsNames("q").tailSlot(g, 1)), undefined);
    for (const seq of ["0", "01", "-1", "1.5", "x", ""]) assert.equal(n.groupIdOfTail(`p.tail.${g}.${seq}`), undefined, seq);
    assert.equal(n.groupIdOfTail(`${n.tailSlot(g, 1)}.x`), undefined);
    assert.throws(() => n.tail("a.b"), (e) => isChatError(e, "InvalidArgument"));
  });

  it("makes the filters match exactly the subjects they are for (NATS token matching)", () => {
    const n = new NatsNames("p");
    const other = newId();
    const tailOf = (id: string, seq: number) => n.tailSlot(id, seq);
    // `*` matches one token, `>` one or more.
    const matches = (filter: string, subject: string): boolean => {
      const f = filter.split(".");
      const s = subject.split(".");
      for (let i = 0; i < f.length; i++) {
        if (f[i] === ">") return s.length > i;
        if (i >= s.length || (f[i] !== "*" && f[i] !== s[i])) return false;
      }
      return f.length === s.length;
    };
    assert.ok(matches(n.group(g), n.slot(g, 1)));
    assert.ok(matches(n.group(g), n.slot(g, 123456)));
    assert.ok(!matches(n.group(g), n.slot(other, 1)));
    assert.ok(!matches(n.group(g), `p.group.${g}`));
    assert.ok(!matches(n.group(g), tailOf(g, 1)));
    assert.ok(matches(n.tail(g), tailOf(g, 7)));
    assert.ok(!matches(n.tail(g), tailOf(other, 7)));
    assert.ok(!matches(n.tail(g), n.slot(g, 7)));
    assert.ok(matches(n.allGroups, n.slot(g, 1)));
    assert.ok(matches(n.allTails, tailOf(g, 1)));
    assert.ok(!matches(n.allGroups, tailOf(g, 1)));
  });
});
