import type { MessagePage, RecentScan, RecentScanResult } from "./ports.js";

/** HistoryAnchor picks a page: the newest messages before a seq, the oldest after one, or (neither) the newest. */
export interface HistoryAnchor {
  readonly beforeSeq?: number;
  readonly afterSeq?: number;
}

/** StoreBounds are the store's facts a cached page is checked against, read alongside the scan. */
export interface StoreBounds {
  /** The group's newest event seq in the store. */
  readonly headSeq: number;
  /** The oldest retained event's seq, 0 if none is retained. */
  readonly firstRetainedSeq: number;
}

/**
 * recentScanFor is the RecentMessages scan that can answer a history page:
 * one more message than the page holds, to learn whether there are more.
 * It depends only on the anchor, so it can run in parallel with the store
 * reads that give the bounds.
 */
export function recentScanFor(anchor: HistoryAnchor, limit: number): RecentScan {
  const to = anchor.beforeSeq !== undefined ? anchor.beforeSeq - 1 : Number.MAX_SAFE_INTEGER;
  if (anchor.afterSeq !== undefined) return { order: "asc", from: anchor.afterSeq + 1, to, take: limit + 1 };
  return { order: "desc", from: 1, to, take: limit + 1 };
}

/**
 * pageFromRecent answers a history page from a scan (made by recentScanFor
 * with the same anchor and limit), or returns undefined when the cached
 * window cannot prove the page complete; the caller then reads the store.
 *
 * A returned page equals what GroupStore.listMessages would return for the
 * store state described by `bounds`: only messages with
 * firstRetainedSeq <= seq <= headSeq count, and the page is given only if
 * the window covers every seq the answer depends on — from the anchor
 * through the (limit + 1)-th message in the paging direction, or to the end
 * of the retained range when there are fewer.
 */
export function pageFromRecent(
  anchor: HistoryAnchor,
  limit: number,
  scan: RecentScanResult,
  bounds: StoreBounds,
): MessagePage | undefined {
  // The retained range the page is drawn from: [bottom, top].
  const floor = Math.max(bounds.firstRetainedSeq, 1);
  const top = Math.min(bounds.headSeq, anchor.beforeSeq !== undefined ? anchor.beforeSeq - 1 : Number.MAX_SAFE_INTEGER);
  const bottom = Math.max(floor, anchor.afterSeq !== undefined ? anchor.afterSeq + 1 : floor);
  if (bottom > top || bounds.firstRetainedSeq === 0) return { messages: [], hasMore: false };
  const w = scan.window;
  if (!w) return undefined;
  // [knownLo, knownHi]: the seqs for which the scan returned every message there is.
  const asked = recentScanFor(anchor, limit);
  const full = scan.messages.length >= asked.take;
  const last = scan.messages[scan.messages.length - 1];
  const knownLo = Math.max(w.lo, asked.order === "desc" && full && last ? last.seq : asked.from);
  const knownHi = Math.min(w.hi, asked.order === "asc" && full && last ? last.seq : asked.to);
  const kept = scan.messages.filter((m) => m.seq >= bottom && m.seq <= top);

  if (asked.order === "asc") {
    // Oldest first from `bottom`: known from it on, up to `top` unless the page fills first.
    if (knownLo > bottom) return undefined;
    if (kept.length > limit) return { messages: kept.slice(0, limit), hasMore: true };
    return knownHi >= top ? { messages: kept, hasMore: false } : undefined;
  }
  // Newest first from `top`: known from it down, to `bottom` unless the page fills first.
  if (knownHi < top) return undefined;
  if (kept.length > limit) return { messages: kept.slice(0, limit).reverse(), hasMore: true };
  return knownLo <= bottom ? { messages: kept.reverse(), hasMore: false } : undefined;
}
