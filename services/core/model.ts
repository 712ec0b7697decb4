/**
 * Domain types. Plain data, no behaviour, no protobuf: the rpc layer converts
 * at the edge. Times are milliseconds since the Unix epoch (server clock).
 * Seqs are positive integers, dense per group from 1.
 */

/** Role of a member in a group, weakest first. */
export type Role = "member" | "admin" | "owner";

/** ROLE_RANK orders roles: a higher rank may do all a lower one may. */
export const ROLE_RANK: Readonly<Record<Role, number>> = { member: 1, admin: 2, owner: 3 };

/** User is a registered account (without secrets). */
export interface User {
  readonly id: string;
  /** Lower case, unique. */
  readonly username: string;
  readonly createdAt: number;
}

/** UserCredentials is a user with its argon2id password hash (PHC string). */
export interface UserCredentials extends User {
  readonly passwordHash: string;
}

/** UserRef names a user for display inside events. */
export interface UserRef {
  readonly id: string;
  readonly username: string;
}

/** Group is the group record; headSeq is the seq of its newest event. */
export interface Group {
  readonly id: string;
  readonly name: string;
  readonly createdAt: number;
  /** Random per timeline incarnation; cursors from another epoch are void. */
  readonly epoch: string;
  readonly headSeq: number;
  readonly memberCount: number;
}

/** Member is one membership. */
export interface Member {
  readonly groupId: string;
  readonly user: UserRef;
  readonly role: Role;
  readonly joinedAt: number;
  /** Highest seq the member acknowledged; 0 if none. */
  readonly ackedSeq: number;
}

/** Membership is a group as seen by one member. */
export interface Membership {
  readonly group: Group;
  readonly role: Role;
  /** Highest seq the member acknowledged; 0 if none. */
  readonly ackedSeq: number;
}

/** ChatMessage is a stored text message. */
export interface ChatMessage {
  readonly id: string;
  readonly groupId: string;
  readonly seq: number;
  readonly sender: UserRef;
  readonly text: string;
  readonly sentAt: number;
  readonly clientMessageId: string;
}

/** EventBody is what a timeline event says happened. */
export type EventBody =
  | { readonly type: "message"; readonly message: ChatMessage }
  | { readonly type: "member_added"; readonly member: UserRef; readonly role: Role }
  | { readonly type: "member_removed"; readonly member: UserRef }
  | { readonly type: "member_role_changed"; readonly member: UserRef; readonly role: Role }
  | { readonly type: "group_renamed"; readonly name: string };

/** GroupEvent is one entry of a group's timeline. */
export interface GroupEvent {
  readonly groupId: string;
  readonly seq: number;
  readonly at: number;
  readonly actor: UserRef;
  readonly body: EventBody;
}

/** RefreshTokenRecord is a stored refresh token (only its hash is kept). */
export interface RefreshTokenRecord {
  /** SHA-256 of the token, hex. */
  readonly tokenHash: string;
  readonly userId: string;
  /** All tokens rotated from one login share a family; the family is the session id. */
  readonly familyId: string;
  readonly expiresAt: number;
  /** Set when rotated (used); presenting it again is reuse. */
  readonly usedAt: number | null;
  /** Set when the family was revoked (logout or reuse). */
  readonly revokedAt: number | null;
}

/** PushKind names a push service a device is reached through. */
export type PushKind = "web_push" | "fcm" | "apns";

/**
 * Device is one registered push target of a user. `token` is what the push
 * service knows the device by: the subscription's endpoint URL (web_push),
 * the registration token (fcm), the device token in hex (apns).
 */
export interface Device {
  /** Server-assigned, opaque. */
  readonly id: string;
  readonly userId: string;
  readonly kind: PushKind;
  readonly token: string;
  /** web_push only: the subscription's P-256 public key, base64url; "" otherwise. */
  readonly p256dh: string;
  /** web_push only: the subscription's auth secret, base64url; "" otherwise. */
  readonly auth: string;
  /** apns only: the app's bundle id, sent as `apns-topic`; "" otherwise. */
  readonly topic: string;
  readonly createdAt: number;
}

/** NotifyLevel is a member's push setting for a group: "all" messages or "none". */
export type NotifyLevel = "all" | "none";

/** NotifySetting is a member's push setting for one group; `mutedUntil` (ms since the epoch, 0 = not muted) silences "all" until then. */
export interface NotifySetting {
  readonly level: NotifyLevel;
  readonly mutedUntil: number;
}

/** DEFAULT_NOTIFY is every member's setting until they change it. */
export const DEFAULT_NOTIFY: NotifySetting = Object.freeze({ level: "all", mutedUntil: 0 });

/**
 * MemberReadState is what a member has read of a group and how it wants to
 * be told of the rest. `lastReadSeq` starts at the seq of the member's
 * member_added event and only moves forward.
 */
export interface MemberReadState {
  readonly lastReadSeq: number;
  readonly notify: NotifySetting;
}
