import type { Principal } from "../auth/access-tokens.js";
import { ChatError } from "../core/errors.js";
import { newId } from "../core/ids.js";
import type { ChatMessage } from "../core/model.js";
import type { Membership } from "../core/membership.js";
import type { Fanout } from "../core/fanout.js";
import type { Clock, GroupStore } from "../core/ports.js";
import { checkClientMessageId, checkId, checkText, pageSize } from "../core/validate.js";

/** MessageSettings are the message use-cases' limits. */
export interface MessageSettings {
  /** Largest message text in UTF-8 bytes. */
  readonly maxTextBytes: number;
}

/** HistoryPage is a page of ListMessages. */
export interface HistoryPage {
  readonly messages: readonly ChatMessage[];
  readonly hasMore: boolean;
  readonly headSeq: number;
  readonly firstRetainedSeq: number;
}

/** HistoryAnchor picks a page: before a seq (backwards), after a seq (forwards), or neither (newest). */
export type HistoryAnchor = { readonly beforeSeq?: number; readonly afterSeq?: number };

/**
 * MessageService holds the send and history use-cases (DESIGN flows 1 and 4).
 * send returns only once the message is durable, and is idempotent on
 * (sender, group, client_message_id).
 */
export class MessageService {
  constructor(
    private readonly deps: {
      store: GroupStore;
      membership: Membership;
      fanout: Fanout;
      clock: Clock;
      settings: MessageSettings;
    },
  ) {}

  /**
   * send stores and publishes a message. A duplicate is published again as
   * well: subscribers drop seqs they have seen, and this heals a publish
   * that was lost between the write and a crash.
   */
  async send(
    caller: Principal,
    groupId: string,
    text: string,
    clientMessageId: string,
  ): Promise<{ message: ChatMessage; duplicate: boolean }> {
    checkId("group_id", groupId);
    checkText(text, this.deps.settings.maxTextBytes);
    checkClientMessageId(clientMessageId);
    await this.deps.membership.requireMember(groupId, caller.userId);
    const { event, duplicate } = await this.deps.store.appendMessage({
      id: newId(),
      groupId,
      sender: { id: caller.userId, username: caller.username },
      text,
      clientMessageId,
      sentAt: this.deps.clock.now(),
    });
    await this.deps.fanout.event(event);
    return { message: event.body.message, duplicate };
  }

  /** list returns a page of retained history, ascending by seq; NotFound for non-members. */
  async list(caller: Principal, groupId: string, anchor: HistoryAnchor, size: number): Promise<HistoryPage> {
    checkId("group_id", groupId);
    const limit = pageSize("limit", size, 50, 200);
    await this.deps.membership.requireMember(groupId, caller.userId);
    const [page, group, firstRetainedSeq] = await Promise.all([
      this.deps.store.listMessages(groupId, anchor, limit),
      this.deps.store.getGroup(groupId),
      this.deps.store.firstRetainedSeq(groupId),
    ]);
    return { ...page, headSeq: group?.headSeq ?? 0, firstRetainedSeq };
  }

  /** ack raises the caller's acknowledged seq in the group; a seq beyond the group's head is InvalidArgument. */
  async ack(caller: Principal, groupId: string, seq: number): Promise<void> {
    checkId("group_id", groupId);
    await this.deps.membership.requireMember(groupId, caller.userId);
    const group = await this.deps.store.getGroup(groupId);
    if (!group || seq > group.headSeq) {
      throw new ChatError("InvalidArgument", `seq ${seq} is beyond the group's newest event (${group?.headSeq ?? 0})`);
    }
    await this.deps.store.ackMember(groupId, caller.userId, seq);
  }
}
