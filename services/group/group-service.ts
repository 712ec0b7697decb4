import { ChatError, groupNotFound, isChatError, tooManyGroups } from "../core/errors.js";
import type { Fanout } from "../core/fanout.js";
import { newId } from "../core/ids.js";
import { mapLimit } from "../core/map-limit.js";
import type { Membership } from "../core/membership.js";
import { DEFAULT_NOTIFY, type GroupEvent, type Member, type Membership as MembershipView, type NotifySetting, type Role, type User, type UserRef } from "../core/model.js";
import type { Clock, GroupStore, Presence, ReadStateStore, UserStore } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import { checkGroupName, checkId, normalizeUsername, pageSize } from "../core/validate.js";
import { decideAdd, decideRemove, decideRename, decideSetRole } from "./group-rules.js";

/** GroupSettings are the group use-cases' limits. */
export interface GroupSettings {
  readonly maxMembers: number;
  /** The most groups one user may be in (MAX_GROUPS_PER_USER); at most MAX_CURSORS, so every group can be resumed. */
  readonly maxGroupsPerUser: number;
}

/**
 * GroupView is a group as its member sees it, with what the member has read
 * of it and how it is told of the rest.
 */
export interface GroupView extends MembershipView {
  /** The member's read marker (MarkRead); 0 if the store has none for them. */
  readonly lastReadSeq: number;
  /** Retained messages of others after lastReadSeq, at most UNREAD_CAP (UNREAD_CAP means that many or more). */
  readonly unreadCount: number;
  /** The member's push setting for the group. */
  readonly notify: NotifySetting;
}

/** UNREAD_CAP is the most unread messages counted per group: a count of UNREAD_CAP means UNREAD_CAP or more. */
export const UNREAD_CAP = 999;

/** UserSelector names a user by id or by username. */
export type UserSelector = { readonly userId: string } | { readonly username: string };

/**
 * GroupService holds the group use-cases. Every change is authorized inside
 * the store's transaction (group-rules.ts), made durable with its timeline
 * event, then published; the membership cache is invalidated before the
 * call returns.
 */
export class GroupService {
  constructor(
    private readonly deps: {
      store: GroupStore & UserStore & ReadStateStore;
      membership: Membership;
      fanout: Fanout;
      presence: Presence;
      /** onPresenceError hears a failed presence read (the page then names nobody online). */
      onPresenceError?: (e: unknown) => void;
      clock: Clock;
      settings: GroupSettings;
    },
  ) {}

  /**
   * createGroup creates a group owned by the caller, then adds
   * `memberUsernames` as members.
   *
   * MAX_GROUPS_PER_USER: FailedPrecondition (tooManyGroups), with nothing
   * written, if the caller or any listed member is in that many groups
   * already; the listed members are counted before the group is created
   * (PRE_COUNTS at a time) and every one at the limit is named, so the
   * client can drop them and retry once. The store checks the caller inside
   * the creation and each member inside their addition; a listed member who
   * reaches the limit between the two (joining other groups concurrently) is
   * left out: the group is created all the same, with everyone else, and
   * `notAddedUsernames` names them. The call succeeds because the group
   * exists: an error would invite a retry that creates a second group.
   */
  async createGroup(
    caller: Principal,
    rawName: string,
    memberUsernames: readonly string[],
  ): Promise<{ membership: GroupView; notAddedUsernames: string[] }> {
    const name = checkGroupName(rawName);
    const { maxMembers, maxGroupsPerUser } = this.deps.settings;
    const usernames = [...new Set(memberUsernames.map(normalizeUsername))].filter((u) => u !== caller.username);
    if (usernames.length + 1 > maxMembers) {
      throw new ChatError("InvalidArgument", `a group has at most ${maxMembers} members`);
    }
    const members = await Promise.all(usernames.map((u) => this.findUser({ username: u })));
    const counts = await mapLimit(members, PRE_COUNTS, (m) => this.deps.store.countMemberships(m.id, maxGroupsPerUser));
    const atLimit = members.filter((_, i) => (counts[i] ?? 0) >= maxGroupsPerUser);
    if (atLimit.length > 0) throw tooManyGroups(atLimit, maxGroupsPerUser);
    const owner = refOf(caller);
    const event = await this.deps.store.createGroup({
      id: newId(),
      name,
      epoch: newId(),
      createdAt: this.deps.clock.now(),
      owner,
      maxOwnerGroups: maxGroupsPerUser,
    });
    await this.published(event, owner.id);
    // The creator's own open streams (other devices) learn of the group as any added member does.
    await this.deps.fanout.notice(owner.id, { type: "joined", groupId: event.groupId, seq: event.seq });
    const notAddedUsernames: string[] = [];
    for (const member of members) {
      try {
        await this.addMember(caller, event.groupId, { userId: member.id }, "member");
      } catch (e) {
        // Only the race above: the member count was checked before, and nobody else knows the group yet.
        if (!isChatError(e, "FailedPrecondition")) throw e;
        notAddedUsernames.push(member.username);
      }
    }
    return { membership: await this.getGroup(caller, event.groupId), notAddedUsernames };
  }

  /** getGroup returns the group as the caller sees it, with the caller's read state; NotFound for non-members. */
  async getGroup(caller: Principal, groupId: string): Promise<GroupView> {
    checkId("group_id", groupId);
    const member = await this.deps.store.getMember(groupId, caller.userId);
    const group = member && (await this.deps.store.getGroup(groupId));
    if (!member || !group) throw groupNotFound(groupId);
    const [view] = await this.withReads(caller.userId, [{ group, role: member.role, ackedSeq: member.ackedSeq }]);
    if (!view) throw groupNotFound(groupId);
    return view;
  }

  /**
   * listGroups pages through the caller's groups by group id, each with the
   * caller's read marker, unread count and push setting: one read-state
   * read for the page, then one bounded count per group with anything
   * unread (UNREAD_COUNTS at a time).
   */
  async listGroups(caller: Principal, size: number, pageToken: string): Promise<{ groups: GroupView[]; next: string }> {
    const limit = pageSize("page_size", size, 100, 500);
    if (pageToken !== "") checkId("page_token", pageToken);
    const listed = await this.deps.store.listMemberships(caller.userId, pageToken, limit);
    const last = listed.at(-1);
    return { groups: await this.withReads(caller.userId, listed), next: listed.length === limit && last ? last.group.id : "" };
  }

  /**
   * markRead moves the caller's read marker of the group forward to `seq`
   * and returns the marker after the call. A seq above the group's head is
   * taken as the head; a lower seq than the marker leaves it as it is (the
   * store never lowers it). InvalidArgument for a seq below 1; NotFound for
   * a non-member, as for a group that does not exist. When the call may
   * have moved the marker (it now equals the clamped seq), a "read" notice
   * goes to the caller's streams on every device, which show a ReadMarker.
   */
  async markRead(caller: Principal, groupId: string, seq: number): Promise<number> {
    checkId("group_id", groupId);
    if (!Number.isSafeInteger(seq) || seq < 1) throw new ChatError("InvalidArgument", "seq must be at least 1: the newest seq you have read");
    await this.deps.membership.requireMember(groupId, caller.userId);
    const group = await this.deps.store.getGroup(groupId);
    if (!group) throw groupNotFound(groupId);
    const target = Math.min(seq, group.headSeq);
    const marker = await this.deps.store.markRead(groupId, caller.userId, target);
    if (marker === undefined) throw groupNotFound(groupId);
    if (marker === target) await this.deps.fanout.notice(caller.userId, { type: "read", groupId, seq: marker });
    return marker;
  }

  /** renameGroup renames the group (owners only). */
  async renameGroup(caller: Principal, groupId: string, rawName: string): Promise<{ group: GroupView; seq: number }> {
    checkId("group_id", groupId);
    const name = checkGroupName(rawName);
    const event = await this.change(caller, groupId, [], (snap) => decideRename(snap, caller.userId, name));
    return { group: await this.getGroup(caller, groupId), seq: event.seq };
  }

  /** addMember adds a user; `role` defaults to member. */
  async addMember(caller: Principal, groupId: string, who: UserSelector, role: Role = "member"): Promise<{ member: Member; seq: number }> {
    checkId("group_id", groupId);
    // Authorize before resolving the user, so non-members learn nothing about users either.
    await this.deps.membership.requireMember(groupId, caller.userId);
    const user = await this.findUser(who);
    const target: UserRef = { id: user.id, username: user.username };
    const event = await this.change(caller, groupId, [user.id], (snap) =>
      decideAdd(snap, caller.userId, target, role, this.deps.settings.maxMembers, this.deps.settings.maxGroupsPerUser),
    );
    await this.deps.fanout.notice(user.id, { type: "joined", groupId, seq: event.seq });
    return { member: { groupId, user: target, role, joinedAt: event.at, ackedSeq: 0 }, seq: event.seq };
  }

  /** removeMember removes a member; removing yourself leaves the group. */
  async removeMember(caller: Principal, groupId: string, userId: string): Promise<{ seq: number }> {
    checkId("group_id", groupId);
    checkId("user_id", userId);
    const event = await this.change(caller, groupId, [userId], (snap) => decideRemove(snap, caller.userId, userId));
    return { seq: event.seq };
  }

  /** setRole changes a member's role (owners only). */
  async setRole(caller: Principal, groupId: string, userId: string, role: Role): Promise<{ member: Member; seq: number }> {
    checkId("group_id", groupId);
    checkId("user_id", userId);
    const event = await this.change(caller, groupId, [userId], (snap) => decideSetRole(snap, caller.userId, userId, role));
    const member = await this.deps.store.getMember(groupId, userId);
    if (!member) throw new ChatError("NotFound", `user ${userId} is no longer a member of this group`);
    return { member, seq: event.seq };
  }

  /** listMembers pages through the members by user id, with those of the page that have a live stream; NotFound for non-members. */
  async listMembers(
    caller: Principal,
    groupId: string,
    size: number,
    pageToken: string,
  ): Promise<{ members: Member[]; next: string; online: ReadonlySet<string> }> {
    checkId("group_id", groupId);
    const limit = pageSize("page_size", size, 100, 1000);
    if (pageToken !== "") checkId("page_token", pageToken);
    await this.deps.membership.requireMember(groupId, caller.userId);
    const members = await this.deps.store.listMembers(groupId, pageToken, limit);
    const online = await this.deps.presence.online(members.map((m) => m.user.id)).catch((e: unknown) => {
      this.deps.onPresenceError?.(e);
      return new Set<string>();
    });
    const last = members.at(-1);
    return { members, next: members.length === limit && last ? last.user.id : "", online };
  }

  private async change(
    caller: Principal,
    groupId: string,
    userIds: string[],
    decide: Parameters<GroupStore["changeGroup"]>[4],
  ): Promise<GroupEvent> {
    const ids = [...new Set([caller.userId, ...userIds])];
    const event = await this.deps.store.changeGroup(groupId, ids, refOf(caller), this.deps.clock.now(), decide);
    const body = event.body;
    await this.published(event, body.type === "group_renamed" || body.type === "message" ? undefined : body.member.id);
    return event;
  }

  /** withReads adds the user's read state to each listed membership (absent state: not a member any more, shown as nothing read, nothing unread). */
  private async withReads(userId: string, listed: readonly MembershipView[]): Promise<GroupView[]> {
    if (listed.length === 0) return [];
    const { store } = this.deps;
    const states = await store.readStatesOfUser(userId, listed.map((m) => m.group.id));
    return mapLimit(listed, UNREAD_COUNTS, async (m) => {
      const state = states.get(m.group.id);
      const lastReadSeq = state?.lastReadSeq ?? 0;
      const unreadCount = state && m.group.headSeq > lastReadSeq ? await store.countUnread(m.group.id, userId, lastReadSeq, UNREAD_CAP) : 0;
      return { ...m, lastReadSeq, unreadCount, notify: state?.notify ?? DEFAULT_NOTIFY };
    });
  }

  /** published runs after an event is durable: invalidate the cache, then fan out. */
  private async published(event: GroupEvent, changedUserId: string | undefined): Promise<void> {
    if (changedUserId !== undefined) await this.deps.membership.changed(event.groupId, changedUserId);
    await this.deps.fanout.event(event);
  }

  private async findUser(who: UserSelector): Promise<User> {
    const user =
      "userId" in who
        ? await this.deps.store.getUser(checkId("user_id", who.userId))
        : await this.deps.store.findUserByName(normalizeUsername(who.username));
    if (!user) {
      const name = "userId" in who ? who.userId : who.username;
      throw new ChatError("NotFound", `user ${name} not found`);
    }
    return { id: user.id, username: user.username, createdAt: user.createdAt };
  }
}

function refOf(p: Principal): UserRef {
  return { id: p.userId, username: p.username };
}

/** UNREAD_COUNTS bounds the concurrent unread counts of one ListGroups page (each one bounded range read). */
const UNREAD_COUNTS = 16;

/** PRE_COUNTS bounds the concurrent group-count reads of CreateGroup's listed members (each one partition read on Cassandra). */
const PRE_COUNTS = 8;

