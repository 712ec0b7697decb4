/**
 * Ports: what the core needs from the outside world. Each has one contract
 * suite under test/contract/ that every adapter passes (memory/SQLite for the
 * embedded default, NATS/Cassandra/Redis in production).
 *
 * Core code depends on these interfaces only; it never imports an adapter,
 * generated code or a transport.
 */
import type {
  ChatMessage,
  Device,
  Group,
  GroupEvent,
  Member,
  MemberReadState,
  Membership,
  NotifySetting,
  PushKind,
  RefreshTokenRecord,
  Role,
  User,
  UserCredentials,
  UserRef,
} from "./model.js";

/** Clock gives the server's time in milliseconds since the Unix epoch. */
export interface Clock {
  now(): number;
}

/** systemClock is the real clock. */
export const systemClock: Clock = { now: () => Date.now() };

/** UserStore keeps accounts. Usernames are unique (stored lower case). */
export interface UserStore {
  /** createUser inserts the user; throws ChatError AlreadyExists if the username is taken (atomically: two concurrent calls never both succeed). */
  createUser(user: UserCredentials): Promise<void>;
  /** findUserByName returns the user with its password hash, or undefined. */
  findUserByName(username: string): Promise<UserCredentials | undefined>;
  /** getUser returns the user, or undefined. */
  getUser(userId: string): Promise<User | undefined>;
}

/** RefreshTokenStore keeps refresh tokens by hash. */
export interface RefreshTokenStore {
  /** insertRefreshToken stores a new, unused token. */
  insertRefreshToken(record: RefreshTokenRecord): Promise<void>;
  /** findRefreshToken returns the record for a token hash, or undefined. */
  findRefreshToken(tokenHash: string): Promise<RefreshTokenRecord | undefined>;
  /**
   * markRefreshTokenUsed sets usedAt if it is still null and returns true;
   * returns false if the token was already used (or does not exist). Of two
   * concurrent calls for one token at most one returns true.
   */
  markRefreshTokenUsed(tokenHash: string, at: number): Promise<boolean>;
  /**
   * revokeRefreshFamily sets revokedAt on every token of the family and
   * marks the family (session) revoked for isSessionRevoked (idempotent).
   */
  revokeRefreshFamily(familyId: string, at: number): Promise<void>;
  /**
   * isSessionRevoked tells whether revokeRefreshFamily was called for the
   * family (the session that an access token's `sid` names). Read-your-writes
   * across processes: once a revokeRefreshFamily call has returned, every
   * call started after it, on any process and store instance, returns true
   * for at least as long as any token of the family can be valid: past the
   * expiry of every token it knew, and past a refresh-token lifetime after
   * the revocation, which covers a token inserted by a refresh racing the
   * revocation (revokeRefreshFamily may miss that token; revoking again
   * covers it). The mark is authoritative: AuthService.refresh checks it
   * after inserting the new token. A family never revoked, or unknown, is
   * not revoked (false). One store read; nothing is cached.
   */
  isSessionRevoked(familyId: string): Promise<boolean>;
}

/** GroupSnapshot is the state a group change is decided on, read inside the change's transaction. */
export interface GroupSnapshot {
  readonly group: Group;
  /** The members among the user ids the caller asked for (absent = not a member). */
  readonly members: ReadonlyMap<string, Member>;
  /** Number of owners of the group. */
  readonly ownerCount: number;
}

/**
 * GroupChange is one change to a group; each appends exactly one event.
 * An "add" with `maxGroups` adds the member only if they are in fewer than
 * that many groups (see GroupStore.changeGroup).
 */
export type GroupChange =
  | { readonly type: "add"; readonly member: UserRef; readonly role: Role; readonly maxGroups?: number }
  | { readonly type: "remove"; readonly member: UserRef }
  | { readonly type: "set_role"; readonly member: UserRef; readonly role: Role }
  | { readonly type: "rename"; readonly name: string };

/** NewGroup is what createGroup stores. */
export interface NewGroup {
  readonly id: string;
  readonly name: string;
  readonly epoch: string;
  readonly createdAt: number;
  readonly owner: UserRef;
  /** When set, the group is created only if the owner is in fewer than this many groups (see GroupStore.createGroup). */
  readonly maxOwnerGroups?: number;
}

/** MessageDraft is a message before it has a seq. */
export interface MessageDraft {
  readonly id: string;
  readonly groupId: string;
  readonly sender: UserRef;
  readonly text: string;
  readonly clientMessageId: string;
  readonly sentAt: number;
}

/** AppendResult is the outcome of appendMessage. */
export interface AppendResult {
  /** The stored message event (the original one when duplicate). */
  readonly event: GroupEvent & { readonly body: { readonly type: "message"; readonly message: ChatMessage } };
  /** True when (groupId, sender, clientMessageId) was stored before; nothing was written. */
  readonly duplicate: boolean;
}

/**
 * RetainedEdge is a group's oldest retained event. Events with a lower seq
 * are past retention or missing: the expired never come back, so the edge
 * stays this event through `retainedUntil` unless a missing one is written
 * late (a store whose writes can leave gaps that are filled afterwards).
 */
export interface RetainedEdge {
  readonly seq: number;
  /** The last instant this event is retained (its time + the retention period), ms since the epoch. */
  readonly retainedUntil: number;
}

/** MessagePage is a page of history, ascending by seq. */
export interface MessagePage {
  readonly messages: readonly ChatMessage[];
  /** True when more messages lie further in the paging direction. */
  readonly hasMore: boolean;
}

/**
 * GroupStore keeps groups, memberships (both directions) and each group's
 * timeline: one dense, strictly increasing seq per group from 1, shared by
 * messages and membership events (DESIGN invariant 1).
 *
 * Every write that appends an event returns only once it is durable; the
 * event and the state it describes (membership, name) are written together
 * or not at all.
 *
 * Reads never return events older than the store's retention period, even
 * before they are physically purged.
 */
export interface GroupStore {
  /**
   * createGroup stores the group with `owner` as its only member (role
   * owner) and appends member_added(owner) as seq 1. With `maxOwnerGroups`,
   * it fails with core/errors.ts tooManyGroups (FailedPrecondition) and
   * writes nothing if the owner is already in that many groups.
   */
  createGroup(group: NewGroup): Promise<GroupEvent>;
  /** getGroup returns the group, or undefined. */
  getGroup(groupId: string): Promise<Group | undefined>;
  /** getMember returns the membership, or undefined if the user is not a member. */
  getMember(groupId: string, userId: string): Promise<Member | undefined>;
  /** listMembers returns up to `limit` members with user id > afterUserId ("" = from the start), ordered by user id. */
  listMembers(groupId: string, afterUserId: string, limit: number): Promise<Member[]>;
  /** listMemberships returns up to `limit` of the user's groups with group id > afterGroupId ("" = from the start), ordered by group id. */
  listMemberships(userId: string, afterGroupId: string, limit: number): Promise<Membership[]>;
  /**
   * listGroupIdsOf returns up to `limit` ids of the user's groups with id >
   * afterGroupId ("" = from the start), ordered by id: listMemberships
   * without the group rows (one read of the user's memberships; a stream
   * opening takes each group's head and epoch from where it follows it).
   */
  listGroupIdsOf(userId: string, afterGroupId: string, limit: number): Promise<string[]>;
  /** countMemberships returns how many groups the user is in, counting at most `upTo` (so min(count, upTo)). */
  countMemberships(userId: string, upTo: number): Promise<number>;
  /**
   * changeGroup reads a snapshot of the group (with the members among
   * `userIds`), calls `decide` on it, and applies the change it returns
   * together with a new event (seq = head + 1, at = `at`, actor = `actor`)
   * atomically. If `decide` throws, nothing is written and the error is
   * rethrown. `decide` may be called more than once (optimistic retry) and
   * must be pure. Throws ChatError NotFound if the group does not exist.
   *
   * The store enforces the change's own preconditions as well: "add" fails
   * AlreadyExists if the user is a member; "remove" and "set_role" fail
   * NotFound if not. An "add" with `maxGroups` fails with tooManyGroups
   * (FailedPrecondition) if the user is already in that many groups.
   *
   * Group-count limits (`maxGroups`, `maxOwnerGroups`) hold under concurrency
   * where the store serialises writes (SQLite: counted inside the write
   * transaction). A store that cannot (Cassandra: the count is read before
   * the change is sequenced, and joins to different groups are not
   * serialised) may let concurrent joins of one user to different groups
   * pass together: the limit is then exceeded by at most the number of such
   * concurrent joins. On Cassandra "concurrent" includes persistence lag: the
   * count reads groups_by_user, which is written after the change is
   * sequenced (by the writer, or by the persister after a crash), so joins
   * within that lag of each other do not see each other either.
   */
  changeGroup(
    groupId: string,
    userIds: readonly string[],
    actor: UserRef,
    at: number,
    decide: (snapshot: GroupSnapshot) => GroupChange,
  ): Promise<GroupEvent>;
  /**
   * appendMessage stores a message as the group's next event, idempotently:
   * if a message with the same (groupId, sender id, clientMessageId) is
   * retained, it returns that one with duplicate = true and writes nothing.
   * Throws ChatError NotFound if the group does not exist or the sender is
   * not a member at the time of the write.
   */
  appendMessage(draft: MessageDraft): Promise<AppendResult>;
  /** readEvents returns up to `limit` retained events with seq > afterSeq, ascending. */
  readEvents(groupId: string, afterSeq: number, limit: number): Promise<GroupEvent[]>;
  /**
   * listMessages returns up to `limit` retained messages: with `beforeSeq`,
   * the newest ones with seq < beforeSeq; with `afterSeq`, the oldest ones
   * with seq > afterSeq; with neither, the newest. Always ascending.
   */
  listMessages(groupId: string, anchor: { beforeSeq?: number; afterSeq?: number }, limit: number): Promise<MessagePage>;
  /**
   * firstRetained returns the group's oldest retained event (the lowest seq
   * not yet past retention), or undefined if none is retained.
   */
  firstRetained(groupId: string): Promise<RetainedEdge | undefined>;
  /** ackMember raises the member's acked seq to `seq` (never lowers it); no-op for non-members. */
  ackMember(groupId: string, userId: string, seq: number): Promise<void>;
  /** purgeExpired deletes events older than the retention period; returns how many. */
  purgeExpired(): Promise<number>;
}

/**
 * ReadStateStore keeps each member's read marker and push setting for a
 * group (issue 14). The state lives and dies with the membership: a removed
 * member's state is gone, and a member added again starts afresh (marker =
 * the seq of the new member_added event, setting DEFAULT_NOTIFY).
 */
export interface ReadStateStore {
  /**
   * markRead raises the member's read marker to `seq`; it never lowers it,
   * also under concurrent or reordered calls from several processes (the
   * highest seq any call passed wins). Returns the marker after the call, or
   * undefined (writing nothing) if the user is not a member. The caller
   * clamps `seq` to the group's head.
   */
  markRead(groupId: string, userId: string, seq: number): Promise<number | undefined>;
  /** readStates returns the state of each of `userIds` that is a member of the group (absent = not a member). */
  readStates(groupId: string, userIds: readonly string[]): Promise<Map<string, MemberReadState>>;
  /** readStatesOfUser returns the user's state in each of `groupIds` the user is a member of (absent = not a member). */
  readStatesOfUser(userId: string, groupIds: readonly string[]): Promise<Map<string, MemberReadState>>;
  /** setNotify replaces the member's push setting; false (writing nothing) if the user is not a member. Last write wins. */
  setNotify(groupId: string, userId: string, notify: NotifySetting): Promise<boolean>;
  /**
   * countUnread counts the group's retained message events with seq >
   * afterSeq that `userId` did not send, counting at most `cap` (so
   * min(count, cap)); reads at most about `cap` + (events of other types in
   * the range) rows.
   */
  countUnread(groupId: string, userId: string, afterSeq: number, cap: number): Promise<number>;
}

/**
 * DeviceStore keeps users' push targets. A (kind, token) belongs to one user
 * at a time: registering it again replaces the earlier registration (of the
 * same or another user), so a device is never stored twice.
 */
export interface DeviceStore {
  /**
   * registerDevice stores `device`. If the same user had the same (kind,
   * token), that device is updated in place and keeps its id and createdAt
   * (the returned device says which id is stored); another user's
   * registration of it is removed. Fails with core/errors.ts tooManyDevices
   * (FailedPrecondition), writing nothing, when the user already has
   * `maxDevices` other devices; concurrent registrations of one user may
   * exceed the cap by at most their number.
   */
  registerDevice(device: Device, maxDevices: number): Promise<Device>;
  /** unregisterDevice removes the user's device; false if the user has no device with that id. */
  unregisterDevice(userId: string, deviceId: string): Promise<boolean>;
  /** listDevices returns the user's devices, oldest first (then by id). */
  listDevices(userId: string): Promise<Device[]>;
  /**
   * removeDeviceToken removes the device the push service rejected, only if
   * it still has `token` (a re-registration with a new token survives);
   * no-op if gone.
   */
  removeDeviceToken(userId: string, deviceId: string, token: string): Promise<void>;
}

/**
 * PushLedger makes a push happen at most once per (device, group, newest
 * seq) across every notifier process and restart: the notifier claims a
 * push before sending it.
 */
export interface PushLedger {
  /**
   * claimPush returns true to exactly one of all callers (across processes
   * and store instances) for the key while its record lives (`ttlMs` from
   * the first claim, at least), false to every other.
   */
  claimPush(deviceId: string, groupId: string, newestSeq: number, ttlMs: number): Promise<boolean>;
}

/** Store is everything the embedded or production store provides. */
export interface Store extends UserStore, RefreshTokenStore, GroupStore, ReadStateStore, DeviceStore, PushLedger {
  /** close releases the store's resources; pending writes finish first. */
  close(): Promise<void>;
}

/** Subscription is a live subscription to a bus subject. */
export interface Subscription {
  /** unsubscribe stops delivery; idempotent. No handler call starts after it returns. */
  unsubscribe(): void;
}

/** UserNotice is a per-user control event. */
export type UserNotice =
  /** The user was added to a group; its member_added event has `seq`. */
  | { readonly type: "joined"; readonly groupId: string; readonly seq: number }
  /** The session (refresh family) was revoked: its live streams end. */
  | { readonly type: "session_revoked"; readonly sessionId: string }
  /** The user's read marker in the group moved to `seq` (MarkRead on one device; the others show it). */
  | { readonly type: "read"; readonly groupId: string; readonly seq: number };

/**
 * EventBus fans out group events (after they are durable) and per-user
 * notices to every process that subscribed. Publishing and subscribing may
 * fail with ChatError Unavailable after a bounded wait when a remote bus is
 * unreachable; a notice published while a subscriber is disconnected is lost
 * for it (notices are hints; the store has the truth).
 *
 * Delivery is at-least-once and per group in publish order in the common
 * case, but a subscriber may miss events (e.g. across a reconnect): it must
 * detect gaps by seq and repair them from the GroupStore, and drop seqs it
 * has already seen.
 */
export interface EventBus {
  /** publishEvent publishes a durable event to its group's subscribers. */
  publishEvent(event: GroupEvent): Promise<void>;
  /** subscribeGroup calls `handler` for every event of the group published after the subscription is active (when the promise resolves). */
  subscribeGroup(groupId: string, handler: (event: GroupEvent) => void): Promise<Subscription>;
  /** publishUser publishes a notice to the user's subscribers. */
  publishUser(userId: string, notice: UserNotice): Promise<void>;
  /** subscribeUser calls `handler` for every notice to the user published after the subscription is active. */
  subscribeUser(userId: string, handler: (notice: UserNotice) => void): Promise<Subscription>;
  /**
   * onResync registers a handler called whenever this bus may have missed
   * events (e.g. after its connection to a remote bus came back): a
   * subscriber should then repair its groups from the GroupStore. An
   * in-process bus never misses events and never calls it.
   */
  onResync(handler: () => void): void;
  /** close ends all subscriptions. */
  close(): Promise<void>;
}

/**
 * MembershipCache remembers members' roles to spare the store on the send
 * path. It may be stale only until `invalidate` is called for the pair,
 * which every membership change does after it is durable.
 *
 * A reader fills the cache after reading the store, so a read that raced a
 * change could write the old answer back after the invalidation. To close
 * that window, `invalidate` holds the pair for a few seconds (an
 * implementation-defined hold, at least 1 s): `setRole` for it is ignored
 * until the hold ends, and `getRole` misses.
 */
export interface MembershipCache {
  /** getRole returns the cached role, null if cached as "not a member", undefined if not cached. */
  getRole(groupId: string, userId: string): Promise<Role | null | undefined>;
  /** setRole caches a role (or null for "not a member"), unless the pair is held after an invalidation. */
  setRole(groupId: string, userId: string, role: Role | null): Promise<void>;
  /** invalidate drops the cached entry and holds the pair (see above). */
  invalidate(groupId: string, userId: string): Promise<void>;
}

/** RateLimit describes a token bucket: `burst` tokens, refilled at `perSecond`. */
export interface RateLimit {
  readonly burst: number;
  readonly perSecond: number;
}

/** RateDecision is the outcome of RateLimiter.take. */
export interface RateDecision {
  readonly allowed: boolean;
  /** When not allowed: how long until a token is available. */
  readonly retryAfterMs: number;
}

/** RateLimiter is a set of token buckets by key. */
export interface RateLimiter {
  /** take removes one token from the bucket `key` if it has one. */
  take(key: string, limit: RateLimit): Promise<RateDecision>;
}

/** RecentWindow is the seq range a RecentMessages cache is complete for: it holds every message of the group with lo <= seq <= hi. */
export interface RecentWindow {
  readonly lo: number;
  readonly hi: number;
}

/** RecentScan asks for up to `take` held messages with from <= seq <= to: the lowest ones ascending ("asc") or the highest ones descending ("desc"). */
export interface RecentScan {
  readonly order: "asc" | "desc";
  readonly from: number;
  readonly to: number;
  readonly take: number;
}

/** RecentScanResult is what one scan saw, atomically. */
export interface RecentScanResult {
  /** The group's window; undefined when nothing is known about the group (then `messages` is empty). */
  readonly window: RecentWindow | undefined;
  /** Held messages in the scan's range and order; all lie inside `window`. */
  readonly messages: readonly ChatMessage[];
}

/**
 * RecentMessages keeps each group's newest messages for history reads (the
 * read side of DESIGN flow 4), fed with every durable event after its write.
 *
 * Guarantee: for each group it knows, it holds every message whose seq lies
 * in its window [lo, hi] — never a partial range — so a reader can tell
 * from the window alone whether a page it asks for is complete. Events may
 * be recorded in any order and more than once: an event at hi + 1 extends
 * the window; one beyond it (a gap: an event recorded elsewhere was lost,
 * e.g. its writer crashed) starts a new window at that seq; one at or below
 * hi is ignored. The window may shrink from below (capacity, expiry) or
 * vanish (eviction, a flushed or restarted cache) at any time; it never
 * claims a message it does not hold. It knows nothing of retention or of
 * the store's head: readers check both against the store.
 */
export interface RecentMessages {
  /** record notes one durable event of a group (messages are kept; other events only advance the window). */
  record(event: GroupEvent): Promise<void>;
  /** scan returns the group's window and the held messages the scan asks for, read together atomically. */
  scan(groupId: string, scan: RecentScan): Promise<RecentScanResult>;
}

/**
 * Presence tells which users have a live stream anywhere (for member lists
 * now, offline push later). Each process (a "holder") reports the users it
 * holds streams for; an entry lives `ttlMs` unless refreshed, so the users
 * of a process that died stop counting as online after at most ttlMs.
 * Answers may lag a change by one round trip; it is a hint, never used for
 * authorization or delivery.
 */
export interface Presence {
  /** setOnline marks the users as holding a live stream on `holder` until now + ttlMs (call again to refresh). */
  setOnline(holder: string, userIds: readonly string[], ttlMs: number): Promise<void>;
  /** setOffline drops the users' entries of `holder` (their last stream there ended); other holders' entries stay. */
  setOffline(holder: string, userIds: readonly string[]): Promise<void>;
  /** online returns those of `userIds` with a live entry on any holder. */
  online(userIds: readonly string[]): Promise<ReadonlySet<string>>;
}

/**
 * EventFeed delivers every durable group event (messages and changes, of
 * every group) to named durable followers such as the notifier: at least
 * once, starting after the last event the follower's name acknowledged (a
 * new name starts at the events appended after its first follow call).
 * An event is acknowledged when the handler's promise for it resolves; one
 * that rejects, or is not done within `ackWaitMs`, comes again (maybe to
 * another instance), and so do the unacknowledged ones of a follower that
 * died. Instances following one name share the events: each goes to one of
 * them at a time. At most `maxPending` events are handed out and not yet
 * acknowledged per instance. Events of a group come in seq order to one
 * instance in the common case; redelivery can break that, so a follower must
 * not depend on order.
 */
export interface EventFeed {
  /**
   * follow starts delivery to `handler` under `name` (1-32 of a-z 0-9 _ -,
   * starting with a letter or digit; ChatError InvalidArgument otherwise, as
   * for `maxPending` or `ackWaitMs` below 1); it resolves once delivery is
   * set up, so events appended after that reach the name. The subscription
   * stops it (events in flight are not acknowledged).
   */
  follow(name: string, handler: (event: GroupEvent) => Promise<void>, opts: { readonly maxPending: number; readonly ackWaitMs: number }): Promise<Subscription>;
}

/** PushContent is what one coalesced push says. */
export interface PushContent {
  readonly groupId: string;
  readonly groupName: string;
  /** The newest message's seq: the app fetches history up to it. */
  readonly newestSeq: number;
  /** How many new messages the push stands for ("N new messages in <group>"). */
  readonly count: number;
  readonly latestSender: string;
  /** A short preview of the newest message (already cut to fit). */
  readonly preview: string;
  /** The user's total unread count over all groups. */
  readonly badge: number;
  /** Collapses pushes of one (user, group) on the device: APNs apns-collapse-id, FCM collapse key, Web Push Topic. */
  readonly collapseKey: string;
}

/**
 * PushOutcome is what one delivery attempt achieved: "sent"; "invalid" (the
 * service says the device is gone: remove it); "retry" (429/5xx or a
 * network error: try again, not before `afterMs` when the service said
 * so); "failed" (rejected for another reason: do not retry).
 */
export type PushOutcome =
  | { readonly kind: "sent" }
  | { readonly kind: "invalid"; readonly reason: string }
  | { readonly kind: "retry"; readonly reason: string; readonly afterMs?: number }
  | { readonly kind: "failed"; readonly reason: string };

/** PushSender delivers one push to one device of its kind, in one attempt (retries are the caller's). Never throws: failures are outcomes. */
export interface PushSender {
  readonly kind: PushKind;
  send(device: Device, content: PushContent): Promise<PushOutcome>;
}
