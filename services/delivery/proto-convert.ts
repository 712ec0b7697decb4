/**
 * Conversions between core types and chat.v1 messages, in one place. Seqs
 * are numbers in the core and uint64 (bigint) on the wire.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type UserRef as PbUserRef, UserRefSchema, type User as PbUser, UserSchema } from "../../gen/chat/v1/common_pb.js";
import {
  type Group as PbGroup,
  GroupSchema,
  type Member as PbMember,
  MemberRole,
  MemberSchema,
  type NotificationSetting as PbNotificationSetting,
  NotificationSettingSchema,
  NotifyLevel as PbNotifyLevel,
} from "../../gen/chat/v1/group_pb.js";
import { type Device as PbDevice, DeviceSchema } from "../../gen/chat/v1/notification_service_pb.js";
import { type GroupEvent as PbGroupEvent, GroupEventSchema, type Message as PbMessage, MessageSchema } from "../../gen/chat/v1/message_pb.js";
import { ChatError } from "../core/errors.js";
import type { ChatMessage, Device, GroupEvent, Member, Membership, NotifyLevel, NotifySetting, Role, User, UserRef } from "../core/model.js";
import type { GroupView } from "../group/group-service.js";

/** userRefToProto converts a UserRef. */
export function userRefToProto(u: UserRef): PbUserRef {
  return create(UserRefSchema, { userId: u.id, username: u.username });
}

/** userToProto converts a User. */
export function userToProto(u: User): PbUser {
  return create(UserSchema, { userId: u.id, username: u.username, createdAt: timestampFromMs(u.createdAt) });
}

/** roleToProto converts a Role. */
export function roleToProto(role: Role): MemberRole {
  switch (role) {
    case "member":
      return MemberRole.MEMBER;
    case "admin":
      return MemberRole.ADMIN;
    case "owner":
      return MemberRole.OWNER;
  }
}

/** roleFromProto converts a MemberRole; UNSPECIFIED maps to `fallback` or fails InvalidArgument. */
export function roleFromProto(role: MemberRole, fallback?: Role): Role {
  switch (role) {
    case MemberRole.MEMBER:
      return "member";
    case MemberRole.ADMIN:
      return "admin";
    case MemberRole.OWNER:
      return "owner";
    default:
      if (role === MemberRole.UNSPECIFIED && fallback) return fallback;
      throw new ChatError("InvalidArgument", "role must be MEMBER_ROLE_MEMBER, MEMBER_ROLE_ADMIN or MEMBER_ROLE_OWNER");
  }
}

/**
 * membershipToProto converts a group as seen by a member; a GroupView also
 * fills last_read_seq, unread_count and notifications.
 */
export function membershipToProto(m: Membership | GroupView): PbGroup {
  const reads = "lastReadSeq" in m ? { lastReadSeq: BigInt(m.lastReadSeq), unreadCount: m.unreadCount, notifications: notifySettingToProto(m.notify) } : {};
  return create(GroupSchema, {
    groupId: m.group.id,
    name: m.group.name,
    createdAt: timestampFromMs(m.group.createdAt),
    memberCount: m.group.memberCount,
    headSeq: BigInt(m.group.headSeq),
    epoch: m.group.epoch,
    myRole: roleToProto(m.role),
    ackedSeq: BigInt(m.ackedSeq),
    ...reads,
  });
}

/** notifySettingToProto converts a push setting; mutedUntil 0 (not muted) leaves muted_until unset. */
export function notifySettingToProto(n: NotifySetting): PbNotificationSetting {
  return create(NotificationSettingSchema, {
    level: n.level === "all" ? PbNotifyLevel.ALL : PbNotifyLevel.NONE,
    ...(n.mutedUntil > 0 ? { mutedUntil: timestampFromMs(n.mutedUntil) } : {}),
  });
}

/** notifyLevelFromProto converts a NotifyLevel; undefined for UNSPECIFIED or an unknown value (the use-case refuses it). */
export function notifyLevelFromProto(level: PbNotifyLevel): NotifyLevel | undefined {
  switch (level) {
    case PbNotifyLevel.ALL:
      return "all";
    case PbNotifyLevel.NONE:
      return "none";
    default:
      return undefined;
  }
}

/** deviceToProto converts a registered device, its target by kind. */
export function deviceToProto(d: Device): PbDevice {
  return create(DeviceSchema, { deviceId: d.id, target: deviceTarget(d), createdAt: timestampFromMs(d.createdAt) });
}

function deviceTarget(d: Device): PbDevice["target"] {
  switch (d.kind) {
    case "web_push":
      return { case: "webPush", value: { $typeName: "chat.v1.WebPushSubscription", endpoint: d.token, p256dh: d.p256dh, auth: d.auth } };
    case "fcm":
      return { case: "fcm", value: { $typeName: "chat.v1.FcmRegistration", token: d.token } };
    case "apns":
      return { case: "apns", value: { $typeName: "chat.v1.ApnsRegistration", deviceToken: d.token, topic: d.topic } };
  }
}

/** memberToProto converts a Member. */
export function memberToProto(m: Member): PbMember {
  return create(MemberSchema, { user: userRefToProto(m.user), role: roleToProto(m.role), joinedAt: timestampFromMs(m.joinedAt) });
}

/** messageToProto converts a ChatMessage. */
export function messageToProto(m: ChatMessage): PbMessage {
  return create(MessageSchema, {
    messageId: m.id,
    groupId: m.groupId,
    seq: BigInt(m.seq),
    sender: userRefToProto(m.sender),
    text: m.text,
    sentAt: timestampFromMs(m.sentAt),
    clientMessageId: m.clientMessageId,
  });
}

/** eventToProto converts a GroupEvent. */
export function eventToProto(e: GroupEvent): PbGroupEvent {
  return create(GroupEventSchema, {
    groupId: e.groupId,
    seq: BigInt(e.seq),
    occurredAt: timestampFromMs(e.at),
    actor: userRefToProto(e.actor),
    kind: eventKind(e),
  });
}

function eventKind(e: GroupEvent): PbGroupEvent["kind"] {
  const b = e.body;
  switch (b.type) {
    case "message":
      return { case: "message", value: messageToProto(b.message) };
    case "member_added":
      return { case: "memberAdded", value: { $typeName: "chat.v1.MemberAdded", member: userRefToProto(b.member), role: roleToProto(b.role) } };
    case "member_removed":
      return { case: "memberRemoved", value: { $typeName: "chat.v1.MemberRemoved", member: userRefToProto(b.member) } };
    case "member_role_changed":
      return {
        case: "memberRoleChanged",
        value: { $typeName: "chat.v1.MemberRoleChanged", member: userRefToProto(b.member), role: roleToProto(b.role) },
      };
    case "group_renamed":
      return { case: "groupRenamed", value: { $typeName: "chat.v1.GroupRenamed", name: b.name } };
  }
}
