import type { ChatError } from "../core/errors.js";
import type { OutboundItem, StreamSink } from "../delivery/outbound.js";

/**
 * QueueSink is a StreamSink for connect-node handlers: the hub writes into
 * a queue and the handler's async generator takes from it. `T` is what the
 * handler yields; `wrap` turns a hub item into it (Subscribe yields the
 * SubscribeResponse itself, Connect wraps it). Replies of the handler's own
 * go through `push`.
 */
export class QueueSink<T> implements StreamSink, AsyncIterable<T> {
  private readonly queue: { value: T; size: number }[] = [];
  private buffered = 0;
  private ended = false;
  private error: unknown;
  private wake: (() => void) | undefined;
  private readonly drainWaiters: (() => void)[] = [];

  constructor(private readonly wrap: (item: OutboundItem) => T) {}

  /** Once ended nothing more is accepted, so nothing is waited for: 0 (what was queued before a clean end still goes out). */
  get bufferedBytes(): number {
    return this.ended ? 0 : this.buffered;
  }

  /** isEnded is true once `end` was called. */
  get isEnded(): boolean {
    return this.ended;
  }

  write(item: OutboundItem): void {
    this.push(this.wrap(item), item.bytes.length);
  }

  /** push queues a value of the handler's own, counted as `size` bytes. */
  push(value: T, size: number): void {
    if (this.ended) return;
    this.queue.push({ value, size });
    this.buffered += size;
    this.notify();
  }

  drained(): Promise<void> {
    if (this.buffered === 0 || this.ended) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  end(error?: ChatError): void {
    this.fail(error);
  }

  /**
   * fail ends the stream as `end` does, with any error the handler's
   * generator should throw (e.g. a ConnectError from reading the request
   * side); undefined ends it cleanly.
   */
  fail(error: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.error = error;
    if (error) {
      this.queue.length = 0;
      this.buffered = 0;
    }
    this.notify();
    this.releaseDrainWaiters();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      const next = this.queue.shift();
      if (next) {
        this.buffered -= next.size;
        if (this.buffered === 0) this.releaseDrainWaiters();
        yield next.value;
        continue;
      }
      if (this.ended) {
        if (this.error !== undefined) throw this.error;
        return;
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private releaseDrainWaiters(): void {
    for (const resolve of this.drainWaiters.splice(0)) resolve();
  }
}
