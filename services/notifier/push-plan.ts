/**
 * Who gets a push for a group, and what it says: decided from the store's
 * current state when a coalescing window closes, so every notifier instance
 * and every retry decides the same for the same state.
 */
import { mapLimit } from "../core/map-limit.js";
import type { ChatMessage, Device, Member, MemberReadState } from "../core/model.js";
import type { Clock, DeviceStore, GroupStore, Presence, PushContent, ReadStateStore } from "../core/ports.js";

/** KnownMessage is a message of the group the notifier knows of, with the time it was sequenced (event `at`, else its sentAt). */
export interface KnownMessage {
  readonly message: ChatMessage;
  readonly at: number;
}

/** PushPlan is one member's push: its content, the devices it goes to, and the `at` of the newest message it tells of. */
export interface PushPlan {
  readonly userId: string;
  readonly devices: readonly Device[];
  readonly content: PushContent;
  readonly newestAt: number;
}

/**
 * SkipReason says why a member gets no push: the group is muted for them
 * ("muted"), they have a live stream ("online": it delivered the messages),
 * they read past the newest message from others ("read"), there is nothing
 * from others to tell ("own"), they wrote after the newest message from
 * others ("replied": they saw it), or they have no device ("no_device").
 */
export type SkipReason = "muted" | "online" | "read" | "own" | "replied" | "no_device";

/** PlanDeps are the reads a plan is made of. */
export interface PlanDeps {
  readonly store: GroupStore & ReadStateStore & DeviceStore;
  readonly presence: Presence;
  readonly clock: Clock;
  /** onSkip hears how many members were skipped for a reason (metrics). */
  readonly onSkip: (reason: SkipReason, members: number) => void;
  /** onPresenceError hears a presence failure; the members then count as offline (a push too many beats none). */
  readonly onPresenceError: (err: unknown) => void;
  readonly settings: PlanSettings;
}

/** PlanSettings bound the reads of one plan. */
export interface PlanSettings {
  /** The largest group (MAX_GROUP_MEMBERS): members are read in pages up to it. */
  readonly maxGroupMembers: number;
  /** The most groups a user is in (MAX_GROUPS_PER_USER): the badge reads memberships up to it. */
  readonly maxGroupsPerUser: number;
  /** Members worked on at once (devices, counts, badges). */
  readonly concurrency: number;
}

/** PAGE is how many members (or memberships) one read asks for. */
const PAGE = 500;

/** TAIL is how many of the group's newest messages a plan reads (besides the events it was given) to find each member's newest from others. */
export const TAIL = 50;

/** UNREAD_CAP caps a push's count and its badge: the counting reads stop there. */
export const UNREAD_CAP = 999;

/** PREVIEW_CODE_POINTS is the longest preview a plan puts in a push (the sender cuts it further to fit its payload). */
export const PREVIEW_CODE_POINTS = 200;

/**
 * planPushes decides the pushes for `groupId` from the current state: the
 * group, its members (paged), their read states, presence, the group's
 * newest TAIL messages plus `known` (the window's events; they cover a read
 * side that lags its log). For each member, in this order:
 * - skip if their setting is "none" or muted until after now;
 * - newest = the group's newest known message; skip its sender (they
 *   wrote after everything before it: "replied", or "own" when only they
 *   wrote), and skip if their read marker is at or past it ("read");
 * - skip if presence says they have a live stream ("online");
 * - skip if they have no device ("no_device");
 * - count = their unread messages from others after their marker (at least
 *   the known ones, at most UNREAD_CAP); skip if 0 ("read").
 * The push says count, the group's name, newest's sender and a preview of
 * its text, carries the group id and newest's seq, collapses per (user,
 * group) (key: the group id; devices are per user), and its badge is the
 * user's unread count over all their groups (capped at UNREAD_CAP).
 *
 * Store failures reject (the caller's events come again); presence
 * failures do not (see PlanDeps.onPresenceError). Returns [] if the group
 * is gone.
 */
export async function planPushes(deps: PlanDeps, groupId: string, known: ReadonlyMap<number, KnownMessage>): Promise<PushPlan[]> {
  const { store } = deps;
  const group = await store.getGroup(groupId);
  if (!group) return [];
  const messages = new Map(known);
  const tail = await store.listMessages(groupId, {}, TAIL);
  for (const m of tail.messages) if (!messages.has(m.seq)) messages.set(m.seq, { message: m, at: m.sentAt });
  const newestFirst = [...messages.values()].sort((a, b) => b.message.seq - a.message.seq);
  const now = deps.clock.now();
  const plans: PushPlan[] = [];
  const maxPages = Math.ceil(deps.settings.maxGroupMembers / PAGE) + 1;
  let after = "";
  for (let page = 0; page < maxPages; page++) {
    const members = await store.listMembers(groupId, after, PAGE);
    if (members.length === 0) break;
    after = members[members.length - 1]?.user.id ?? after;
    const states = await store.readStates(groupId, members.map((m) => m.user.id));
    const candidates = pickCandidates(deps, members, states, newestFirst, now);
    const online = await onlineOf(deps, candidates.map((c) => c.member.user.id));
    if (online.size > 0) deps.onSkip("online", online.size);
    const offline = candidates.filter((c) => !online.has(c.member.user.id));
    const made = await mapLimit(offline, deps.settings.concurrency, (c) => planFor(deps, group.name, groupId, c, messages));
    for (const p of made) if (p) plans.push(p);
    if (members.length < PAGE) break;
  }
  return plans;
}

/** Candidate is a member who should hear of `newest`, pending presence, devices and the count. */
interface Candidate {
  readonly member: Member;
  readonly state: MemberReadState;
  readonly newest: KnownMessage;
}

function pickCandidates(
  deps: PlanDeps,
  members: readonly Member[],
  states: ReadonlyMap<string, MemberReadState>,
  newestFirst: readonly KnownMessage[],
  now: number,
): Candidate[] {
  const skipped = new Map<SkipReason, number>();
  const skip = (reason: SkipReason) => skipped.set(reason, (skipped.get(reason) ?? 0) + 1);
  const out: Candidate[] = [];
  // Every push of a plan tells of the group's newest message; its own sender wrote after everything before it
  // (so saw it) and hears nothing.
  const newest = newestFirst[0];
  const othersWrote = newest !== undefined && newestFirst.some((k) => k.message.sender.id !== newest.message.sender.id);
  for (const member of members) {
    const state = states.get(member.user.id);
    if (!state) continue; // left since the page was read
    if (state.notify.level === "none" || state.notify.mutedUntil > now) {
      skip("muted");
      continue;
    }
    if (!newest || newest.message.sender.id === member.user.id) {
      skip(othersWrote ? "replied" : "own");
      continue;
    }
    if (state.lastReadSeq >= newest.message.seq) {
      skip("read");
      continue;
    }
    out.push({ member, state, newest });
  }
  for (const [reason, n] of skipped) deps.onSkip(reason, n);
  return out;
}

async function onlineOf(deps: PlanDeps, userIds: readonly string[]): Promise<ReadonlySet<string>> {
  if (userIds.length === 0) return new Set();
  try {
    return await deps.presence.online(userIds);
  } catch (err) {
    deps.onPresenceError(err);
    return new Set();
  }
}

async function planFor(
  deps: PlanDeps,
  groupName: string,
  groupId: string,
  c: Candidate,
  messages: ReadonlyMap<number, KnownMessage>,
): Promise<PushPlan | undefined> {
  const userId = c.member.user.id;
  const devices = await deps.store.listDevices(userId);
  if (devices.length === 0) {
    deps.onSkip("no_device", 1);
    return undefined;
  }
  let knownUnread = 0;
  for (const k of messages.values()) if (k.message.seq > c.state.lastReadSeq && k.message.sender.id !== userId) knownUnread++;
  const stored = await deps.store.countUnread(groupId, userId, c.state.lastReadSeq, UNREAD_CAP);
  const count = Math.min(UNREAD_CAP, Math.max(stored, knownUnread));
  if (count === 0) {
    deps.onSkip("read", 1);
    return undefined;
  }
  const badge = await badgeOf(deps, userId, groupId, count);
  const newest = c.newest.message;
  return {
    userId,
    devices,
    newestAt: c.newest.at,
    content: {
      groupId,
      groupName,
      newestSeq: newest.seq,
      count,
      latestSender: newest.sender.username,
      preview: previewOf(newest.text),
      badge,
      collapseKey: groupId,
    },
  };
}

/**
 * badgeOf is the user's unread count over all their groups, at most
 * UNREAD_CAP: `here` for `groupId`, plus countUnread for each other group
 * whose head is past the user's marker, stopping at the cap.
 */
async function badgeOf(deps: PlanDeps, userId: string, groupId: string, here: number): Promise<number> {
  const { store } = deps;
  let total = here;
  let after = "";
  const maxPages = Math.ceil(deps.settings.maxGroupsPerUser / PAGE) + 1;
  for (let page = 0; page < maxPages && total < UNREAD_CAP; page++) {
    const memberships = await store.listMemberships(userId, after, PAGE);
    if (memberships.length === 0) break;
    after = memberships[memberships.length - 1]?.group.id ?? after;
    const others = memberships.filter((m) => m.group.id !== groupId);
    const states = others.length > 0 ? await store.readStatesOfUser(userId, others.map((m) => m.group.id)) : new Map<string, MemberReadState>();
    for (const m of others) {
      const state = states.get(m.group.id);
      if (!state || m.group.headSeq <= state.lastReadSeq) continue;
      total += await store.countUnread(m.group.id, userId, state.lastReadSeq, UNREAD_CAP - total);
      if (total >= UNREAD_CAP) break;
    }
    if (memberships.length < PAGE) break;
  }
  return Math.min(total, UNREAD_CAP);
}

/** previewOf is a message's text on one line (whitespace runs become one space), at most PREVIEW_CODE_POINTS code points ending in "…" when cut. */
export function previewOf(text: string): string {
  const line = text.replace(/\s+/g, " ").trim();
  const points = Array.from(line);
  return points.length <= PREVIEW_CODE_POINTS ? line : `${points.slice(0, PREVIEW_CODE_POINTS - 1).join("")}…`;
}
