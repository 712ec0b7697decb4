import type { ChatMessage, GroupEvent } from "../../core/model.js";
import type { RecentMessages, RecentScan, RecentScanResult } from "../../core/ports.js";

/** MemoryRecentMessagesOptions bound a MemoryRecentMessages. */
export interface MemoryRecentMessagesOptions {
  /** Messages held per group (the newest); >= 1. */
  readonly perGroup: number;
  /** Groups held; the least recently written group is dropped past it. >= 1. */
  readonly maxGroups: number;
}

interface Held {
  lo: number;
  hi: number;
  /** Ascending by seq; exactly the group's messages in [lo, hi]. */
  messages: ChatMessage[];
}

/**
 * MemoryRecentMessages is the in-process RecentMessages of the embedded
 * server: per group, the newest `perGroup` messages of one unbroken window,
 * for at most `maxGroups` groups (least recently written dropped first).
 */
export class MemoryRecentMessages implements RecentMessages {
  private readonly groups = new Map<string, Held>();

  constructor(private readonly opts: MemoryRecentMessagesOptions) {
    if (!(opts.perGroup >= 1 && opts.maxGroups >= 1)) throw new RangeError("perGroup and maxGroups must be >= 1");
  }

  async record(event: GroupEvent): Promise<void> {
    let held = this.groups.get(event.groupId);
    if (held && event.seq <= held.hi) return;
    if (!held || event.seq !== held.hi + 1) held = { lo: event.seq, hi: event.seq, messages: [] };
    held.hi = event.seq;
    if (event.body.type === "message") {
      held.messages.push(event.body.message);
      if (held.messages.length > this.opts.perGroup) {
        const dropped = held.messages.splice(0, held.messages.length - this.opts.perGroup);
        held.lo = dropped[dropped.length - 1]!.seq + 1;
      }
    }
    // Re-insert so Map order is least recently written first.
    this.groups.delete(event.groupId);
    this.groups.set(event.groupId, held);
    if (this.groups.size > this.opts.maxGroups) this.groups.delete(this.groups.keys().next().value!);
  }

  async scan(groupId: string, scan: RecentScan): Promise<RecentScanResult> {
    const held = this.groups.get(groupId);
    if (!held) return { window: undefined, messages: [] };
    const inRange = held.messages.filter((m) => m.seq >= scan.from && m.seq <= scan.to);
    const messages = scan.order === "asc" ? inRange.slice(0, scan.take) : inRange.reverse().slice(0, scan.take);
    return { window: { lo: held.lo, hi: held.hi }, messages };
  }
}
