/**
 * Conversions between core types and chat.v1 messages, in one place. Seqs
 * are numbers in the core and uint64 (bigint) on the wire.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type UserRef as PbUserRef, UserRefSchema, type User as PbUser, UserSchema } from "../../gen/chat/v1/common_pb.js";
import { type Group as PbGroup, GroupSchema, type Member as PbMember, MemberRole, MemberSchema } from "../../gen/chat/v1/group_pb.js";
import { type GroupEvent as PbGroupEvent, GroupEventSchema, type Message as PbMessage, MessageSchema } from "../../gen/chat/v1/message_pb.js";
import { ChatError } from "../core/errors.js";
import type { ChatMessage, GroupEvent, Member, Membership, Role, User, UserRef } from "../core/model.js";

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

/** membershipToProto converts a group as seen by a member. */
export function membershipToProto(m: Membership): PbGroup {
  return create(GroupSchema, {
    groupId: m.group.id,
    name: m.group.name,
    createdAt: timestampFromMs(m.group.createdAt),
    memberCount: m.group.memberCount,
    headSeq: BigInt(m.group.headSeq),
    epoch: m.group.epoch,
    myRole: roleToProto(m.role),
    ackedSeq: BigInt(m.ackedSeq),
  });
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
