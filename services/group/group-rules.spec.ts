/**
 * Unit tests of the group permission rules (group-rules.ts) on hand-built
 * GroupSnapshots: no store, no network.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type ErrorKind, isChatError } from "../core/errors.js";
import type { Member, Role } from "../core/model.js";
import type { GroupSnapshot } from "../core/ports.js";
import { actorRole, checkGroupCount, decideAdd, decideRemove, decideRename, decideSetRole } from "./group-rules.js";

const GROUP_ID = "0190a000-0000-7000-8000-000000000001";
const OWNER = "0190a000-0000-7000-8000-0000000000a1";
const OWNER2 = "0190a000-0000-7000-8000-0000000000a2";
const ADMIN = "0190a000-0000-7000-8000-0000000000b1";
const ADMIN2 = "0190a000-0000-7000-8000-0000000000b2";
const MEMBER = "0190a000-0000-7000-8000-0000000000c1";
const MEMBER2 = "0190a000-0000-7000-8000-0000000000c2";
const OUTSIDER = "0190a000-0000-7000-8000-0000000000d1";

const NAMES: Record<string, string> = {
  [OWNER]: "olga",
  [OWNER2]: "oscar",
  [ADMIN]: "ada",
  [ADMIN2]: "abe",
  [MEMBER]: "mia",
  [MEMBER2]: "max",
  [OUTSIDER]: "otto",
};

function ref(id: string) {
  return { id, username: NAMES[id] ?? "someone" };
}

/**
 * snap builds a snapshot whose members are `roles`; memberCount defaults to
 * their number and ownerCount to the owners among them (both overridable,
 * since a real snapshot holds only the members the caller asked for).
 */
function snap(roles: Record<string, Role>, opts: { memberCount?: number; ownerCount?: number } = {}): GroupSnapshot {
  const members = new Map<string, Member>();
  for (const [id, role] of Object.entries(roles)) {
    members.set(id, { groupId: GROUP_ID, user: ref(id), role, joinedAt: 1_700_000_000_000, ackedSeq: 0 });
  }
  const owners = Object.values(roles).filter((r) => r === "owner").length;
  return {
    group: {
      id: GROUP_ID,
      name: "team",
      createdAt: 1_700_000_000_000,
      epoch: "epoch-1",
      headSeq: 7,
      memberCount: opts.memberCount ?? members.size,
      // memberCount above may exceed the map: the snapshot holds only the asked-for members.
    },
    members,
    ownerCount: opts.ownerCount ?? owners,
  };
}

const NOT_A_MEMBER_MESSAGE = `group ${GROUP_ID} not found (or you are not a member)`;

/** throwsKind asserts that `fn` throws a ChatError of `kind` (and, if given, with exactly `message`). */
function throwsKind(fn: () => unknown, kind: ErrorKind, message?: string | RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isChatError(e), `expected a ChatError, got ${String(e)}`);
    assert.equal(e.kind, kind, `expected ${kind}, got ${e.kind}: ${e.message}`);
    if (typeof message === "string") assert.equal(e.message, message);
    else if (message) assert.match(e.message, message);
    return true;
  });
}

const FULL = { [OWNER]: "owner", [ADMIN]: "admin", [MEMBER]: "member" } as const satisfies Record<string, Role>;

describe("actorRole", () => {
  it("returns the actor's role", () => {
    const s = snap(FULL);
    assert.equal(actorRole(s, OWNER), "owner");
    assert.equal(actorRole(s, ADMIN), "admin");
    assert.equal(actorRole(s, MEMBER), "member");
  });

  it("answers a non-member exactly as for a missing group", () => {
    throwsKind(() => actorRole(snap(FULL), OUTSIDER), "NotFound", NOT_A_MEMBER_MESSAGE);
  });
});

describe("decideAdd", () => {
  const MAX = 10;
  const GROUPS = 5;

  it("lets the owner add every role", () => {
    for (const role of ["member", "admin", "owner"] as const) {
      assert.deepEqual(decideAdd(snap(FULL), OWNER, ref(OUTSIDER), role, MAX, GROUPS), { type: "add", member: ref(OUTSIDER), role, maxGroups: GROUPS });
    }
  });

  it("lets an admin add a plain member", () => {
    assert.deepEqual(decideAdd(snap(FULL), ADMIN, ref(OUTSIDER), "member", MAX, GROUPS), {
      type: "add",
      member: ref(OUTSIDER),
      role: "member",
      maxGroups: GROUPS,
    });
  });

  it("refuses an admin adding an admin or an owner", () => {
    throwsKind(() => decideAdd(snap(FULL), ADMIN, ref(OUTSIDER), "admin", MAX, GROUPS), "PermissionDenied");
    throwsKind(() => decideAdd(snap(FULL), ADMIN, ref(OUTSIDER), "owner", MAX, GROUPS), "PermissionDenied");
  });

  it("refuses a plain member adding anyone", () => {
    for (const role of ["member", "admin", "owner"] as const) {
      throwsKind(() => decideAdd(snap(FULL), MEMBER, ref(OUTSIDER), role, MAX, GROUPS), "PermissionDenied");
    }
  });

  it("answers a non-member actor NotFound, as for a missing group, before anything else", () => {
    // Even when the group is full and the target is a member already.
    throwsKind(() => decideAdd(snap(FULL, { memberCount: MAX }), OUTSIDER, ref(MEMBER), "member", MAX, GROUPS), "NotFound", NOT_A_MEMBER_MESSAGE);
  });

  it("refuses an existing member with AlreadyExists", () => {
    throwsKind(() => decideAdd(snap(FULL), OWNER, ref(MEMBER), "member", MAX, GROUPS), "AlreadyExists", /mia/);
    throwsKind(() => decideAdd(snap(FULL), OWNER, ref(ADMIN), "owner", MAX, GROUPS), "AlreadyExists");
  });

  it("admits up to the size limit and refuses past it with FailedPrecondition", () => {
    assert.equal(decideAdd(snap(FULL, { memberCount: MAX - 1 }), OWNER, ref(OUTSIDER), "member", MAX, GROUPS).type, "add");
    throwsKind(() => decideAdd(snap(FULL, { memberCount: MAX }), OWNER, ref(OUTSIDER), "member", MAX, GROUPS), "FailedPrecondition", /full/);
    throwsKind(() => decideAdd(snap(FULL, { memberCount: MAX + 5 }), ADMIN, ref(OUTSIDER), "member", MAX, GROUPS), "FailedPrecondition");
  });

  it("hands the store the per-user group limit with every add, for its own count inside the write", () => {
    const change = decideAdd(snap(FULL), OWNER, ref(OUTSIDER), "member", MAX, 3);
    assert.ok(change.type === "add");
    assert.equal(change.maxGroups, 3);
  });

  it("lets a plain member learn nothing about the size limit (permission first)", () => {
    throwsKind(() => decideAdd(snap(FULL, { memberCount: MAX }), MEMBER, ref(OUTSIDER), "member", MAX, GROUPS), "PermissionDenied");
  });
});

describe("decideRemove", () => {
  it("lets anyone but the last owner leave", () => {
    assert.deepEqual(decideRemove(snap(FULL), MEMBER, MEMBER), { type: "remove", member: ref(MEMBER) });
    assert.deepEqual(decideRemove(snap(FULL), ADMIN, ADMIN), { type: "remove", member: ref(ADMIN) });
  });

  it("refuses the last owner leaving with FailedPrecondition", () => {
    throwsKind(() => decideRemove(snap(FULL), OWNER, OWNER), "FailedPrecondition", /last owner/);
    // ownerCount is what counts, not how many owners the snapshot happens to hold.
    throwsKind(() => decideRemove(snap({ [OWNER]: "owner" }, { ownerCount: 1, memberCount: 5 }), OWNER, OWNER), "FailedPrecondition");
  });

  it("lets an owner leave when another owner remains", () => {
    assert.deepEqual(decideRemove(snap({ ...FULL, [OWNER2]: "owner" }), OWNER, OWNER), { type: "remove", member: ref(OWNER) });
    assert.deepEqual(decideRemove(snap({ [OWNER]: "owner" }, { ownerCount: 2 }), OWNER, OWNER).type, "remove");
  });

  it("lets an owner remove anyone else, including another owner", () => {
    const s = snap({ ...FULL, [OWNER2]: "owner" });
    for (const target of [ADMIN, MEMBER, OWNER2]) {
      assert.deepEqual(decideRemove(s, OWNER, target), { type: "remove", member: ref(target) });
    }
  });

  it("lets an admin remove plain members only", () => {
    const s = snap({ ...FULL, [ADMIN2]: "admin", [OWNER2]: "owner" });
    assert.deepEqual(decideRemove(s, ADMIN, MEMBER), { type: "remove", member: ref(MEMBER) });
    throwsKind(() => decideRemove(s, ADMIN, ADMIN2), "PermissionDenied");
    throwsKind(() => decideRemove(s, ADMIN, OWNER), "PermissionDenied");
  });

  it("refuses a plain member removing others", () => {
    const s = snap({ ...FULL, [MEMBER2]: "member", [OWNER2]: "owner" });
    throwsKind(() => decideRemove(s, MEMBER, MEMBER2), "PermissionDenied");
    throwsKind(() => decideRemove(s, MEMBER, ADMIN), "PermissionDenied");
    throwsKind(() => decideRemove(s, MEMBER, OWNER), "PermissionDenied");
  });

  it("answers PermissionDenied, not FailedPrecondition, when a non-owner tries to remove the last owner", () => {
    throwsKind(() => decideRemove(snap(FULL), MEMBER, OWNER), "PermissionDenied");
    throwsKind(() => decideRemove(snap(FULL), ADMIN, OWNER), "PermissionDenied");
  });

  it("answers NotFound for a target who is not a member (the actor is one, so this is no oracle)", () => {
    throwsKind(() => decideRemove(snap(FULL), OWNER, OUTSIDER), "NotFound", new RegExp(OUTSIDER));
  });

  it("answers a non-member actor NotFound, as for a missing group, whoever the target is", () => {
    for (const target of [OUTSIDER, MEMBER, OWNER]) {
      throwsKind(() => decideRemove(snap(FULL), OUTSIDER, target), "NotFound", NOT_A_MEMBER_MESSAGE);
    }
  });
});

describe("decideSetRole", () => {
  it("lets the owner promote and demote others", () => {
    assert.deepEqual(decideSetRole(snap(FULL), OWNER, MEMBER, "admin"), { type: "set_role", member: ref(MEMBER), role: "admin" });
    assert.deepEqual(decideSetRole(snap(FULL), OWNER, ADMIN, "member"), { type: "set_role", member: ref(ADMIN), role: "member" });
    assert.deepEqual(decideSetRole(snap(FULL), OWNER, MEMBER, "owner"), { type: "set_role", member: ref(MEMBER), role: "owner" });
  });

  it("refuses admins and members changing roles", () => {
    throwsKind(() => decideSetRole(snap(FULL), ADMIN, MEMBER, "admin"), "PermissionDenied");
    throwsKind(() => decideSetRole(snap(FULL), ADMIN, ADMIN, "owner"), "PermissionDenied");
    throwsKind(() => decideSetRole(snap(FULL), MEMBER, MEMBER, "admin"), "PermissionDenied");
    // Not even to demote the last owner: permission first.
    throwsKind(() => decideSetRole(snap(FULL), ADMIN, OWNER, "member"), "PermissionDenied");
  });

  it("refuses demoting the last owner with FailedPrecondition", () => {
    throwsKind(() => decideSetRole(snap(FULL), OWNER, OWNER, "admin"), "FailedPrecondition", /last owner/);
    throwsKind(() => decideSetRole(snap(FULL), OWNER, OWNER, "member"), "FailedPrecondition", /last owner/);
  });

  it("lets an owner demote an owner (also itself) when another owner remains", () => {
    const s = snap({ ...FULL, [OWNER2]: "owner" });
    assert.deepEqual(decideSetRole(s, OWNER, OWNER, "member"), { type: "set_role", member: ref(OWNER), role: "member" });
    assert.deepEqual(decideSetRole(s, OWNER, OWNER2, "admin"), { type: "set_role", member: ref(OWNER2), role: "admin" });
  });

  it("refuses setting the role a member already has", () => {
    throwsKind(() => decideSetRole(snap(FULL), OWNER, ADMIN, "admin"), "FailedPrecondition");
    throwsKind(() => decideSetRole(snap(FULL), OWNER, OWNER, "owner"), "FailedPrecondition");
  });

  it("answers NotFound for a target who is not a member", () => {
    throwsKind(() => decideSetRole(snap(FULL), OWNER, OUTSIDER, "admin"), "NotFound", new RegExp(OUTSIDER));
  });

  it("answers a non-member actor NotFound, as for a missing group", () => {
    throwsKind(() => decideSetRole(snap(FULL), OUTSIDER, MEMBER, "admin"), "NotFound", NOT_A_MEMBER_MESSAGE);
    throwsKind(() => decideSetRole(snap(FULL), OUTSIDER, OUTSIDER, "owner"), "NotFound", NOT_A_MEMBER_MESSAGE);
  });
});

describe("decideRename", () => {
  it("lets the owner rename", () => {
    assert.deepEqual(decideRename(snap(FULL), OWNER, "new name"), { type: "rename", name: "new name" });
  });

  it("refuses admins and members", () => {
    throwsKind(() => decideRename(snap(FULL), ADMIN, "x"), "PermissionDenied");
    throwsKind(() => decideRename(snap(FULL), MEMBER, "x"), "PermissionDenied");
  });

  it("answers a non-member NotFound, as for a missing group", () => {
    throwsKind(() => decideRename(snap(FULL), OUTSIDER, "x"), "NotFound", NOT_A_MEMBER_MESSAGE);
  });
});

describe("purity", () => {
  it("decide* neither mutate the snapshot nor depend on call count (the store may retry them)", () => {
    const s = snap({ ...FULL, [OWNER2]: "owner" }, { memberCount: 4 });
    const before = structuredClone({ group: s.group, members: [...s.members], ownerCount: s.ownerCount });
    const calls = [
      () => decideAdd(s, OWNER, ref(OUTSIDER), "admin", 10, 5),
      () => decideRemove(s, ADMIN, MEMBER),
      () => decideSetRole(s, OWNER, OWNER2, "member"),
      () => decideRename(s, OWNER, "renamed"),
    ];
    for (const call of calls) assert.deepEqual(call(), call());
    assert.deepEqual({ group: s.group, members: [...s.members], ownerCount: s.ownerCount }, before);
  });
});

describe("checkGroupCount", () => {
  it("admits a user below the per-user group limit and refuses one at it with FailedPrecondition naming the limit", () => {
    checkGroupCount(ref(OUTSIDER), 4, 5);
    checkGroupCount(undefined, 0, 5);
    throwsKind(() => checkGroupCount(ref(OUTSIDER), 5, 5), "FailedPrecondition", /^otto is already in 5 groups, the most a user may be in \(MAX_GROUPS_PER_USER\); they must leave a group/);
    throwsKind(() => checkGroupCount(undefined, 7, 5), "FailedPrecondition", /^you are already in 5 groups, .*leave a group before creating another$/);
  });
});
