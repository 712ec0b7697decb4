/** The typed events a client hands to the app: plain objects with a `type`, converted from chat.v1's protobuf oneofs. */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { UserRef } from "../../../gen/chat/v1/common_pb.js";
import { MemberRole } from "../../../gen/chat/v1/group_pb.js";
import type { GroupEvent, Message } from "../../../gen/chat/v1/message_pb.js";

export { MemberRole };

/** UserInfo names a user: a stable id and the username for display. */
export interface UserInfo {
  readonly userId: string;
  readonly username: string;
}

/** ChatMessage is a stored message (from the live connection, history or send). */
export interface ChatMessage {
  readonly messageId: string;
  readonly groupId: string;
  /** seq is the message's position in its group's timeline (shared with membership events). */
  readonly seq: bigint;
  readonly sender: UserInfo;
  readonly text: string;
  readonly sentAt: Date;
  readonly clientMessageId: string;
}

interface EventBase {
  readonly groupId: string;
  readonly seq: bigint;
  readonly occurredAt: Date;
  /** actor is who caused the event. */
  readonly actor: UserInfo;
  /** raw is the event as chat.v1 sent it (e.g. for toJson with GroupEventSchema). */
  readonly raw: GroupEvent;
}

/**
 * ChatEvent is one event of a group's timeline, switch on `type`. Every event takes its group's next seq, so the
 * events of a group are one dense list; `unknown` is an event kind this SDK does not know yet (a newer server).
 */
export type ChatEvent =
  | (EventBase & { readonly type: "message"; readonly message: ChatMessage })
  | (EventBase & { readonly type: "memberAdded"; readonly member: UserInfo; readonly role: MemberRole })
  | (EventBase & { readonly type: "memberRemoved"; readonly member: UserInfo })
  | (EventBase & { readonly type: "memberRoleChanged"; readonly member: UserInfo; readonly role: MemberRole })
  | (EventBase & { readonly type: "groupRenamed"; readonly name: string })
  | (EventBase & { readonly type: "unknown" });

/** CursorResetEvent: the group's cursor could not be resumed without a gap; reload the group (e.g. its history). */
export interface CursorResetEvent {
  readonly groupId: string;
  /** requestedSeq is the cursor the client resumed from. */
  readonly requestedSeq: bigint;
  /** firstAvailableSeq is where delivery continues (the oldest retained event). */
  readonly firstAvailableSeq: bigint;
  readonly epoch: string;
}

/** GroupJoinedEvent: the user was added to a group while connected; its events follow, member_added first. */
export interface GroupJoinedEvent {
  readonly groupId: string;
  readonly epoch: string;
}

/** ReadMarkerEvent: the user's read marker of a group moved (MarkRead on any of the user's devices). */
export interface ReadMarkerEvent {
  readonly groupId: string;
  readonly seq: bigint;
}

/** ConnectionState is the live connection's state: show "reconnecting…" while it is `reconnecting`. */
export type ConnectionState = "connecting" | "live" | "reconnecting" | "closed";

/** StateEvent is a change of the live connection's state; `error` says why it is reconnecting, if known. */
export interface StateEvent {
  readonly state: ConnectionState;
  readonly error?: Error;
  /** retryInMs: when reconnecting, the delay before the next attempt. */
  readonly retryInMs?: number;
}

/** SignedOutEvent: the session ended (its refresh failed: revoked, reused, expired); log in again. */
export interface SignedOutEvent {
  readonly reason: string;
}

/** ClientEvents maps each event name of ChatClient.on to its value. */
export interface ClientEvents {
  event: ChatEvent;
  state: StateEvent;
  cursorReset: CursorResetEvent;
  groupJoined: GroupJoinedEvent;
  readMarker: ReadMarkerEvent;
  signedOut: SignedOutEvent;
  error: Error;
}

/** toUserInfo converts a UserRef (absent: empty strings). */
export function toUserInfo(u: UserRef | undefined): UserInfo {
  return { userId: u?.userId ?? "", username: u?.username ?? "" };
}

/** toChatMessage converts a chat.v1 Message. */
export function toChatMessage(m: Message): ChatMessage {
  return {
    messageId: m.messageId,
    groupId: m.groupId,
    seq: m.seq,
    sender: toUserInfo(m.sender),
    text: m.text,
    sentAt: m.sentAt ? timestampDate(m.sentAt) : new Date(0),
    clientMessageId: m.clientMessageId,
  };
}

/** toChatEvent converts a chat.v1 GroupEvent. */
export function toChatEvent(e: GroupEvent): ChatEvent {
  const base: EventBase = {
    groupId: e.groupId,
    seq: e.seq,
    occurredAt: e.occurredAt ? timestampDate(e.occurredAt) : new Date(0),
    actor: toUserInfo(e.actor),
    raw: e,
  };
  const k = e.kind;
  switch (k.case) {
    case "message":
      return { ...base, type: "message", message: toChatMessage(k.value) };
    case "memberAdded":
      return { ...base, type: "memberAdded", member: toUserInfo(k.value.member), role: k.value.role };
    case "memberRemoved":
      return { ...base, type: "memberRemoved", member: toUserInfo(k.value.member) };
    case "memberRoleChanged":
      return { ...base, type: "memberRoleChanged", member: toUserInfo(k.value.member), role: k.value.role };
    case "groupRenamed":
      return { ...base, type: "groupRenamed", name: k.value.name };
    default:
      return { ...base, type: "unknown" };
  }
}
