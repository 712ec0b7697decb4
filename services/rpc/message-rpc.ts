import type { ConnectRouter } from "@connectrpc/connect";
import { MessageService } from "../../gen/chat/v1/message_service_pb.js";
import type { HistoryAnchor } from "../core/recent-history.js";
import { checkSeq } from "../core/validate.js";
import { messageToProto } from "../delivery/proto-convert.js";
import type { MessageService as MessageUseCases } from "../message/message-service.js";
import { principalOf } from "./interceptors.js";

/** messageRoutes serves chat.v1.MessageService: proto in, use-case, proto out. */
export function messageRoutes(router: ConnectRouter, messages: MessageUseCases): ConnectRouter {
  return router.service(MessageService, {
    async sendMessage(req, ctx) {
      const { message, duplicate } = await messages.send(principalOf(ctx.values), req.groupId, req.text, req.clientMessageId);
      return { message: messageToProto(message), duplicate };
    },
    async listMessages(req, ctx) {
      let anchor: HistoryAnchor = {};
      if (req.anchor.case === "beforeSeq") anchor = { beforeSeq: checkSeq("before_seq", req.anchor.value) };
      if (req.anchor.case === "afterSeq") anchor = { afterSeq: checkSeq("after_seq", req.anchor.value) };
      const page = await messages.list(principalOf(ctx.values), req.groupId, anchor, req.limit);
      return {
        messages: page.messages.map(messageToProto),
        hasMore: page.hasMore,
        headSeq: BigInt(page.headSeq),
        firstRetainedSeq: BigInt(page.firstRetainedSeq),
      };
    },
  });
}
