/**
 * ReplyScript holds the answers a test scripted for a push receiver's next
 * requests: a status with headers and body, or a stall (no answer at all, so
 * the sender's timeout fires). Scripted answers are used in order, each for
 * its number of times; an empty script means the receiver answers normally.
 */

/** ScriptedReply is one scripted answer; `stall` means never answer. */
export type ScriptedReply =
  | { readonly stall: false; readonly status: number; readonly headers: Readonly<Record<string, string>>; readonly body: string }
  | { readonly stall: true };

/** ReplyScript is the queue of scripted answers of one receiver endpoint. */
export class ReplyScript {
  private readonly queue: Array<{ reply: ScriptedReply; left: number }> = [];

  /** failNext answers the next `times` requests with `status`, `headers` and `body` (an object is sent as JSON). */
  failNext(status: number, headers: Readonly<Record<string, string>> = {}, body: string | object = "", times = 1): void {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    const h = typeof body === "string" || "content-type" in headers ? headers : { "content-type": "application/json", ...headers };
    this.queue.push({ reply: { stall: false, status, headers: h, body: text }, left: times });
  }

  /** stallNext leaves the next `times` requests unanswered (until the receiver closes). */
  stallNext(times = 1): void {
    this.queue.push({ reply: { stall: true }, left: times });
  }

  /** take returns the answer for the next request, or undefined to answer normally. */
  take(): ScriptedReply | undefined {
    const head = this.queue[0];
    if (head === undefined) return undefined;
    head.left -= 1;
    if (head.left <= 0) this.queue.shift();
    return head.reply;
  }
}
