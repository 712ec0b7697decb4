/**
 * JsRequests: request/reply on one NATS connection for the sequencer's hot
 * path (JetStream publishes with an ack, direct gets), without nats.js's
 * per-request machinery.
 *
 * `nc.request()` (which `js.publish()` and `jsm.direct.getMessage()` use)
 * builds two or three Error objects per call (async stack traces, a
 * TimeoutError made in advance, a RequestError to settle the request after
 * it was answered) and arms a timer per call; on the send path that was a
 * visible share of the CPU per message (issue 4's profiles). Here every
 * request is a plain publish with the reply subject `<inbox>.<n>`, answered
 * through one wildcard subscription, and a single timer serves every pending
 * request: all requests share one timeout, so the oldest pending request is
 * always the next to expire. Errors are only built for requests that fail.
 * The requests of one turn of the event loop are published together (see
 * sendAll).
 *
 * Replies are handed back as they are (status headers included): the caller
 * interprets them (see JetStreamSequencer).
 */
import { createInbox } from "@nats-io/transport-node";
import type { Msg, MsgHdrs, NatsConnection, Subscription } from "@nats-io/transport-node";

/** RequestTimeoutError: no reply within the timeout (the request may or may not have been acted on). */
export class RequestTimeoutError extends Error {
  constructor(subject: string, timeoutMs: number) {
    super(`no reply to ${subject} within ${timeoutMs} ms`);
    this.name = "RequestTimeoutError";
  }
}

/** RequestsClosedError: the JsRequests was closed before the reply came. */
export class RequestsClosedError extends Error {
  constructor() {
    super("the request was abandoned: closed");
    this.name = "RequestsClosedError";
  }
}

interface Pending {
  readonly subject: string;
  readonly deadline: number;
  readonly resolve: (m: Msg) => void;
  readonly reject: (e: unknown) => void;
}

/**
 * JsRequests sends requests on `nc` and resolves each with its first reply,
 * or rejects with RequestTimeoutError after `timeoutMs`, with the
 * connection's error if the publish cannot be made (closed connection), or
 * with RequestsClosedError on close(). A reply that arrives after the
 * timeout is dropped. Not for requests with several replies.
 */
export class JsRequests {
  private readonly inbox: string;
  private readonly pending = new Map<number, Pending>();
  private sub: Subscription | undefined;
  private next = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly outbox: { id: number; subject: string; data: Uint8Array; headers: MsgHdrs | undefined }[] = [];
  private sendScheduled = false;
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    readonly timeoutMs: number,
  ) {
    this.inbox = createInbox();
  }

  /** size is the number of requests waiting for a reply. */
  get size(): number {
    return this.pending.size;
  }

  /** request publishes `data` (with `headers`) to `subject` and resolves with the reply (see the class comment). */
  request(subject: string, data: Uint8Array, headers?: MsgHdrs): Promise<Msg> {
    if (this.closed) return Promise.reject(new RequestsClosedError());
    this.sub ??= this.nc.subscribe(`${this.inbox}.*`, {
      callback: (err, m) => {
        if (err) {
          // The subscription is gone (e.g. a permissions error): the next request subscribes again.
          this.sub = undefined;
          this.failAll(err);
        } else {
          this.answer(m);
        }
      },
    });
    const id = ++this.next;
    return new Promise<Msg>((resolve, reject) => {
      this.pending.set(id, { subject, deadline: Date.now() + this.timeoutMs, resolve, reject });
      this.timer ??= setTimeout(this.expire, this.timeoutMs);
      this.outbox.push({ id, subject, data, headers });
      if (!this.sendScheduled) {
        this.sendScheduled = true;
        setImmediate(this.sendAll);
      }
    });
  }

  /**
   * sendAll publishes the requests of this turn of the event loop together,
   * in its check phase: nats.js writes what is published before its
   * microtask flush with one syscall, which under load would otherwise be
   * one request per HTTP request callback.
   */
  private readonly sendAll = (): void => {
    this.sendScheduled = false;
    for (const r of this.outbox.splice(0)) {
      const p = this.pending.get(r.id);
      if (!p) continue;
      try {
        const reply = `${this.inbox}.${r.id}`;
        this.nc.publish(r.subject, r.data, r.headers ? { reply, headers: r.headers } : { reply });
      } catch (e) {
        this.pending.delete(r.id);
        p.reject(e);
      }
    }
  };

  /** close rejects every pending request and stops listening for replies. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new RequestsClosedError());
    try {
      this.sub?.unsubscribe();
    } catch {
      // The connection is closed already: nothing to release.
    }
  }

  private answer(m: Msg): void {
    const id = Number(m.subject.slice(this.inbox.length + 1));
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    p.resolve(m);
  }

  private readonly expire = (): void => {
    this.timer = undefined;
    const now = Date.now();
    for (const [id, p] of this.pending) {
      if (p.deadline > now) {
        this.timer = setTimeout(this.expire, p.deadline - now);
        return;
      }
      this.pending.delete(id);
      p.reject(new RequestTimeoutError(p.subject, this.timeoutMs));
    }
  };

  private failAll(err: unknown): void {
    this.outbox.length = 0;
    clearTimeout(this.timer);
    this.timer = undefined;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(err);
  }
}
