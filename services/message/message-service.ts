import { ChatError } from "../core/errors.js";
import type { Fanout } from "../core/fanout.js";
import { newId } from "../core/ids.js";
import type { Membership } from "../core/membership.js";
import type { ChatMessage } from "../core/model.js";
import type { AppendResult, Clock, GroupStore, RateLimit, RateLimiter, RecentMessages } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import { takeToken } from "../core/rate-limit.js";
import { type HistoryAnchor, pageFromRecent, recentScanFor } from "../core/recent-history.js";
import { RetentionEdges } from "../core/retention-edges.js";
import { checkClientMessageId, checkId, checkText, pageSize } from "../core/validate.js";

/** MessageSettings are the message use-cases' limits. */
export interface MessageSettings {
  /** Largest message text in UTF-8 bytes. */
  readonly maxTextBytes: number;
  /** Sends per user (one bucket per user across groups and processes). */
  readonly sendsPerUser: RateLimit;
  /**
   * Sends this process works on at once (accepted, not yet answered). A send
   * past it is refused at once with ResourceExhausted and a retry hint, so an
   * overloaded process keeps answering promptly instead of queueing without
   * bound; nothing of a refused send is written.
   */
  readonly maxSendsInFlight: number;
}

/** HistoryPage is a page of ListMessages. */
export interface HistoryPage {
  readonly messages: readonly ChatMessage[];
  readonly hasMore: boolean;
  readonly headSeq: number;
  readonly firstRetainedSeq: number;
}

/**
 * MessageService holds the send and history use-cases (DESIGN flows 1 and 4).
 * send returns only once the message is durable, and is idempotent on
 * (sender, group, client_message_id).
 */
export class MessageService {
  private readonly retentionEdges: RetentionEdges;
  private inFlight = 0;
  private refused = 0;

  constructor(
    private readonly deps: {
      store: GroupStore;
      membership: Membership;
      fanout: Fanout;
      /** Recent messages, fed by the fanout; pages it cannot prove complete come from the store. */
      recent: RecentMessages;
      limiter: RateLimiter;
      /** onCacheError hears a failed cache read (the page then comes from the store). */
      onCacheError?: (e: unknown) => void;
      /** onHistoryPage hears where each page came from. */
      onHistoryPage?: (source: "cache" | "store") => void;
      /**
       * onAppend hears how long each accepted send's append took, in seconds: the store's membership check and
       * the message made durable (production: the timeline's publish with its linger and the log's quorum),
       * whether it succeeded or not.
       */
      onAppend?: (seconds: number) => void;
      clock: Clock;
      settings: MessageSettings;
    },
  ) {
    this.retentionEdges = new RetentionEdges({ store: deps.store, clock: deps.clock });
  }

  /** sendsInFlight is how many sends this process is working on. */
  get sendsInFlight(): number {
    return this.inFlight;
  }

  /** sendsShed counts the sends refused because `maxSendsInFlight` were in progress. */
  get sendsShed(): number {
    return this.refused;
  }

  /**
   * send stores and publishes a message; NotFound if the group does not
   * exist or the caller is not a member (the store checks, once, as it
   * appends); ResourceExhausted (with a retry
   * hint) past the sender's rate limit, or when this process already works
   * on `maxSendsInFlight` sends (checked before anything is read or taken,
   * so a refused send costs no rate-limit token and writes nothing). A
   * duplicate is published again as well: subscribers drop seqs they have
   * seen, and this heals a publish that was lost between the write and a
   * crash.
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
    if (this.inFlight >= this.deps.settings.maxSendsInFlight) {
      this.refused += 1;
      throw busy(this.deps.settings.maxSendsInFlight);
    }
    this.inFlight += 1;
    try {
      // The token first: a refused send reads nothing else (a membership miss costs a store read,
      // and the per-user limit is what caps them).
      await takeToken(this.deps.limiter, `send:user:${caller.userId}`, this.deps.settings.sendsPerUser, "messages");
      // The send's one membership check is the store's: appendMessage refuses a non-member (NotFound, exactly as
      // for a missing group) at the event's place in the timeline, which a check made before it could not promise.
      const appendStarted = performance.now();
      let appended: AppendResult;
      try {
        appended = await this.deps.store.appendMessage({
          id: newId(),
          groupId,
          sender: { id: caller.userId, username: caller.username },
          text,
          clientMessageId,
          sentAt: this.deps.clock.now(),
        });
      } finally {
        this.deps.onAppend?.((performance.now() - appendStarted) / 1000);
      }
      const { event, duplicate } = appended;
      await this.deps.fanout.event(event);
      return { message: event.body.message, duplicate };
    } finally {
      this.inFlight -= 1;
    }
  }

  /**
   * list returns a page of retained history, ascending by seq; NotFound for
   * non-members. The page comes from the recent-messages cache when the
   * cache proves it complete against the store's head and retention (read
   * at the same time), else from the store: either way it is the page the
   * store holds.
   */
  async list(caller: Principal, groupId: string, anchor: HistoryAnchor, size: number): Promise<HistoryPage> {
    checkId("group_id", groupId);
    const limit = pageSize("limit", size, 50, 200);
    await this.deps.membership.requireMember(groupId, caller.userId);
    const [scan, group, firstRetainedSeq] = await Promise.all([
      this.deps.recent.scan(groupId, recentScanFor(anchor, limit)).catch((e: unknown) => {
        this.deps.onCacheError?.(e);
        return undefined;
      }),
      this.deps.store.getGroup(groupId),
      this.retentionEdges.firstRetainedSeq(groupId),
    ]);
    const headSeq = group?.headSeq ?? 0;
    const cached = scan && pageFromRecent(anchor, limit, scan, { headSeq, firstRetainedSeq });
    this.deps.onHistoryPage?.(cached ? "cache" : "store");
    const page = cached ?? (await this.deps.store.listMessages(groupId, anchor, limit));
    return { ...page, headSeq, firstRetainedSeq };
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

/**
 * busy is the refusal of a send past the in-flight limit. Its retry hint is
 * spread over 1-3 s (retry-after is in whole seconds: 1, 2 or 3), so that
 * refused clients do not all come back at once.
 */
function busy(limit: number): ChatError {
  return new ChatError("ResourceExhausted", `the server is busy (${limit} sends in progress); retry in 1-3 s with the same client_message_id`, {
    retryAfterMs: 1000 + Math.floor(Math.random() * 2000),
  });
}
