/** HistoryPager pages backwards through a group's messages with ListMessages. */
import type { Client } from "@connectrpc/connect";
import type { MessageService } from "../../../gen/chat/v1/message_service_pb.js";
import { type ChatMessage, toChatMessage } from "./events.js";

/** HistoryOptions: `pageSize` 1..200 (default 50); `beforeSeq` starts below that seq (default: the newest messages). */
export interface HistoryOptions {
  readonly pageSize?: number;
  readonly beforeSeq?: bigint;
}

/**
 * HistoryPager walks a group's messages from the newest (or from below `beforeSeq`) to the oldest retained.
 * Each page is in ascending seq order, and each page is older than the one before; seqs missing between messages
 * belong to membership events. `done` is true once the oldest retained message was returned.
 */
export class HistoryPager implements AsyncIterable<ChatMessage[]> {
  private before: bigint | undefined;
  private finished = false;
  /** headSeq is the group's newest seq as of the last page (0n before the first). */
  headSeq = 0n;
  /** firstRetainedSeq is the oldest seq still kept (older history is gone), as of the last page. */
  firstRetainedSeq = 0n;

  constructor(
    private readonly messages: Client<typeof MessageService>,
    readonly groupId: string,
    private readonly opts: HistoryOptions = {},
  ) {
    this.before = opts.beforeSeq;
  }

  /** done: no older messages remain. */
  get done(): boolean {
    return this.finished;
  }

  /** older returns the next older page (ascending); an empty array once done. */
  async older(): Promise<ChatMessage[]> {
    if (this.finished) return [];
    const res = await this.messages.listMessages({
      groupId: this.groupId,
      limit: this.opts.pageSize ?? 50,
      anchor: this.before === undefined ? { case: undefined } : { case: "beforeSeq", value: this.before },
    });
    this.headSeq = res.headSeq;
    this.firstRetainedSeq = res.firstRetainedSeq;
    const page = res.messages.map(toChatMessage);
    const oldest = page[0];
    if (oldest) this.before = oldest.seq;
    if (!res.hasMore || !oldest) this.finished = true;
    return page;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ChatMessage[]> {
    for (;;) {
      const page = await this.older();
      if (page.length > 0) yield page;
      if (this.finished) return;
    }
  }
}
