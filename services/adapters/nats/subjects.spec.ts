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
    assert.equal(n.group(g), `chat.group.${g}`);
    assert.equal(n.user(u), `chat.user.${u}`);
    assert.equal(n.timelineStream, "CHAT_TIMELINE");
    assert.equal(n.allGroups, "chat.group.>");
    assert.equal(n.allUsers, "chat.user.>");
    assert.equal(n.tail(g), `chat.tail.${g}`);
    assert.equal(n.allTails, "chat.tail.>");
    assert.equal(n.persisted, "chat.persisted");
    assert.equal(n.msgId(g, 42), `${g}:42`);
    assert.deepEqual(
      DURABLE_CONSUMERS.map((c) => n.durable(c)),
      ["notifier", "persister"],
    );
  });

  it("keeps prefixes apart", () => {
    const a = new NatsNames("t1-run_a");
    const b = new NatsNames("t1-run_b");
    assert.equal(a.group(g), `t1-run_a.group.${g}`);
    assert.equal(a.timelineStream, "T1-RUN_A_TIMELINE");
    assert.notEqual(a.timelineStream, b.timelineStream);
    assert.notEqual(a.group(g), b.group(g));
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
      assert.throws(() => n.user(bad), (e) => isChatError(e, "InvalidArgument"), `user ${bad}`);
      assert.throws(() => n.msgId(bad, 1), (e) => isChatError(e, "InvalidArgument"), `msgId ${bad}`);
    }
  });

  it("rejects seqs that are not positive integers in msgId", () => {
    const n = new NatsNames();
    for (const bad of [0, -1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1]) {
      assert.throws(() => n.msgId(g, bad), (e) => isChatError(e, "InvalidArgument"), String(bad));
    }
  });

  it("reads the group id back from a group subject only", () => {
    const n = new NatsNames("p");
    assert.equal(n.groupIdOf(n.group(g)), g);
    assert.equal(n.groupIdOf(n.user(u)), undefined);
    assert.equal(n.groupIdOf(new NatsNames("q").group(g)), undefined);
    assert.equal(n.groupIdOf(`p.group.${g}.x`), undefined);
    assert.equal(n.groupIdOf(n.tail(g)), undefined);
  });

  it("reads the group id back from a tail subject only", () => {
    const n = new NatsNames("p");
    assert.equal(n.groupIdOfTail(n.tail(g)), g);
    assert.equal(n.groupIdOfTail(n.group(g)), undefined);
    assert.equal(n.groupIdOfTail(new NatsNames("q").tail(g)), undefined);
    assert.equal(n.groupIdOfTail(`p.tail.${g}.x`), undefined);
    assert.throws(() => n.tail("a.b"), (e) => isChatError(e, "InvalidArgument"));
  });
});
