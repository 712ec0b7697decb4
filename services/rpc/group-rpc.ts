import type { ConnectRouter } from "@connectrpc/connect";
import { GroupService } from "../../gen/chat/v1/group_service_pb.js";
import { ChatError } from "../core/errors.js";
import { checkSeq } from "../core/validate.js";
import { memberToProto, membershipToProto, roleFromProto } from "../delivery/proto-convert.js";
import type { GroupService as GroupUseCases, UserSelector } from "../group/group-service.js";
import { principalOf } from "./interceptors.js";

/** groupRoutes serves chat.v1.GroupService: proto in, use-case, proto out. */
export function groupRoutes(router: ConnectRouter, groups: GroupUseCases): ConnectRouter {
  return router.service(GroupService, {
    async createGroup(req, ctx) {
      const created = await groups.createGroup(principalOf(ctx.values), req.name, req.memberUsernames);
      return { group: membershipToProto(created.membership), notAddedUsernames: created.notAddedUsernames };
    },
    async getGroup(req, ctx) {
      return { group: membershipToProto(await groups.getGroup(principalOf(ctx.values), req.groupId)) };
    },
    async listGroups(req, ctx) {
      const page = await groups.listGroups(principalOf(ctx.values), req.pageSize, req.pageToken);
      return { groups: page.groups.map(membershipToProto), nextPageToken: page.next };
    },
    async updateGroup(req, ctx) {
      const { group, seq } = await groups.renameGroup(principalOf(ctx.values), req.groupId, req.name);
      return { group: membershipToProto(group), seq: BigInt(seq) };
    },
    async addMember(req, ctx) {
      const role = roleFromProto(req.role, "member");
      const { member, seq } = await groups.addMember(principalOf(ctx.values), req.groupId, selector(req.user), role);
      return { member: memberToProto(member), seq: BigInt(seq) };
    },
    async removeMember(req, ctx) {
      const { seq } = await groups.removeMember(principalOf(ctx.values), req.groupId, req.userId);
      return { seq: BigInt(seq) };
    },
    async updateMemberRole(req, ctx) {
      const { member, seq } = await groups.setRole(principalOf(ctx.values), req.groupId, req.userId, roleFromProto(req.role));
      return { member: memberToProto(member), seq: BigInt(seq) };
    },
    async listMembers(req, ctx) {
      const page = await groups.listMembers(principalOf(ctx.values), req.groupId, req.pageSize, req.pageToken);
      return {
        members: page.members.map(memberToProto),
        nextPageToken: page.next,
        onlineUserIds: page.members.filter((m) => page.online.has(m.user.id)).map((m) => m.user.id),
      };
    },
    async markRead(req, ctx) {
      const marker = await groups.markRead(principalOf(ctx.values), req.groupId, checkSeq("seq", req.seq));
      return { lastReadSeq: BigInt(marker) };
    },
  });
}

function selector(user: { case: "userId" | "username"; value: string } | { case: undefined; value?: undefined }): UserSelector {
  switch (user.case) {
    case "userId":
      return { userId: user.value };
    case "username":
      return { username: user.value };
    default:
      throw new ChatError("InvalidArgument", "set user_id or username");
  }
}
