/**
 * Group permission rules as pure functions over a GroupSnapshot. They run
 * inside the store's change transaction, so they decide on fresh state.
 * Each throws ChatError; a non-member actor gets NotFound (no existence
 * oracle), a member without the right gets PermissionDenied.
 */
import { ChatError, groupNotFound, tooManyGroups } from "../core/errors.js";
import { ROLE_RANK, type Role, type UserRef } from "../core/model.js";
import type { GroupChange, GroupSnapshot } from "../core/ports.js";

/** actorRole returns the actor's role or throws NotFound. */
export function actorRole(snap: GroupSnapshot, actorId: string): Role {
  const actor = snap.members.get(actorId);
  if (!actor) throw groupNotFound(snap.group.id);
  return actor.role;
}

/**
 * decideAdd: owners add any role; admins add members only; the group size is
 * capped, and so is the number of groups the target may be in: the change
 * carries `maxGroupsPerUser` for the store to check on its own fresh count.
 */
export function decideAdd(
  snap: GroupSnapshot,
  actorId: string,
  target: UserRef,
  role: Role,
  maxMembers: number,
  maxGroupsPerUser: number,
): GroupChange {
  const mine = actorRole(snap, actorId);
  if (mine === "member") throw new ChatError("PermissionDenied", "only owners and admins can add members");
  if (mine === "admin" && role !== "member") throw new ChatError("PermissionDenied", "only owners can add admins or owners");
  if (snap.members.has(target.id)) throw new ChatError("AlreadyExists", `${target.username} is already a member`);
  if (snap.group.memberCount >= maxMembers) {
    throw new ChatError("FailedPrecondition", `group is full (${maxMembers} members at most)`);
  }
  return { type: "add", member: target, role, maxGroups: maxGroupsPerUser };
}

/**
 * checkGroupCount throws tooManyGroups if a user in `groups` groups may not
 * join another (`user` undefined: the caller). A store check on its own
 * count stays the authority; this one answers early, before anything is
 * written.
 */
export function checkGroupCount(user: UserRef | undefined, groups: number, maxGroupsPerUser: number): void {
  if (groups >= maxGroupsPerUser) throw tooManyGroups(user, maxGroupsPerUser);
}

/**
 * decideRemove: anyone may leave, except the last owner; owners remove
 * anyone; admins remove plain members.
 */
export function decideRemove(snap: GroupSnapshot, actorId: string, targetId: string): GroupChange {
  const mine = actorRole(snap, actorId);
  const target = snap.members.get(targetId);
  if (!target) throw new ChatError("NotFound", `user ${targetId} is not a member of this group`);
  // Permission first: someone who may not remove the target at all gets PermissionDenied, not the last-owner rule.
  if (targetId !== actorId) {
    if (mine === "member") throw new ChatError("PermissionDenied", "only owners and admins can remove members");
    if (mine === "admin" && target.role !== "member") throw new ChatError("PermissionDenied", "admins can remove only members");
  }
  if (target.role === "owner" && snap.ownerCount === 1) {
    throw new ChatError(
      "FailedPrecondition",
      targetId === actorId
        ? "you are the group's last owner: make another member owner before leaving"
        : "cannot remove the group's last owner",
    );
  }
  return { type: "remove", member: target.user };
}

/** decideSetRole: only owners change roles, and the last owner cannot be demoted. */
export function decideSetRole(snap: GroupSnapshot, actorId: string, targetId: string, role: Role): GroupChange {
  const mine = actorRole(snap, actorId);
  if (mine !== "owner") throw new ChatError("PermissionDenied", "only owners can change roles");
  const target = snap.members.get(targetId);
  if (!target) throw new ChatError("NotFound", `user ${targetId} is not a member of this group`);
  if (target.role === role) throw new ChatError("FailedPrecondition", `${target.user.username} already has role ${role}`);
  if (target.role === "owner" && ROLE_RANK[role] < ROLE_RANK.owner && snap.ownerCount === 1) {
    throw new ChatError("FailedPrecondition", "cannot demote the group's last owner: make another member owner first");
  }
  return { type: "set_role", member: target.user, role };
}

/** decideRename: only owners rename. */
export function decideRename(snap: GroupSnapshot, actorId: string, name: string): GroupChange {
  if (actorRole(snap, actorId) !== "owner") throw new ChatError("PermissionDenied", "only owners can rename the group");
  return { type: "rename", name };
}
