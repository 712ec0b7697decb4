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
 *
 * Connection loss (issue 12, point 10): a request sent before the connection
 * dropped can never be answered (the server that had it is gone, or nats.js
 * discarded it unsent when it redialled), so it is failed at once with
 * RequestInterruptedError instead of waiting out the timeout; the caller
 * decides whether to send it again. Requests made while the connection is
 * down are held here, unsent (nats.js would buffer them and then drop them at
 * its next reconnect attempt), and sent as soon as it is back; they still
 * time out after `timeoutMs`.
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

/**
 * RequestInterruptedError: the connection was lost after the request was
 * sent and before its reply came (the request may or may not have been acted
 * on).
 */
export class RequestInterruptedError extends Error {
  constructor(subject: string) {
    super(`the connection was lost before the reply to ${subject}`);
    this.name = "RequestInterruptedError";
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
  /** True once published on the connection (until then it waits in the outbox). */
  sent: boolean;
}

/**
 * JsRequests sends requests on `nc` and resolves each with its first reply,
 * or rejects with RequestTimeoutError after `timeoutMs`, with
 * RequestInterruptedError as soon as the connection is lost after the
 * request was sent, with the connection's error if the publish cannot be
 * made (closed connection), or with RequestsClosedError on close(). While
 * the connection is down requests are held unsent and go out when it is
 * back. A reply that arrives after the timeout is dropped. Not for requests
 * with several replies.
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
  /** Whether the connection is up, as its status events last said. */
  private up = true;
  private stopStatus: (() => void) | undefined;

  constructor(
    private readonly nc: NatsConnection,
    readonly timeoutMs: number,
  ) {
    this.inbox = createInbox();
    this.watchStatus();
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
      this.pending.set(id, { subject, deadline: Date.now() + this.timeoutMs, resolve, reject, sent: false });
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
   * one request per HTTP request callback. While the connection is down the
   * outbox is kept for the reconnect.
   */
  private readonly sendAll = (): void => {
    this.sendScheduled = false;
    if (!this.up) return;
    for (const r of this.outbox.splice(0)) {
      const p = this.pending.get(r.id);
      if (!p) continue;
      try {
        const reply = `${this.inbox}.${r.id}`;
        this.nc.publish(r.subject, r.data, r.headers ? { reply, headers: r.headers } : { reply });
        p.sent = true;
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
    this.stopStatus?.();
    try {
      this.sub?.unsubscribe();
    } catch {
      // The connection is closed already: nothing to release.
    }
  }

  /**
   * watchStatus follows the connection's status events: on "disconnect" every
   * request already sent fails with RequestInterruptedError and new ones are
   * held; on "reconnect" the held ones are sent.
   */
  private watchStatus(): void {
    const status = this.nc.status();
    // nats.js's status iterator can be stopped (QueuedIterator), though its type does not say so.
    this.stopStatus = () => (status as { stop?: () => void }).stop?.();
    void (async () => {
      try {
        for await (const s of status) {
          if (this.closed) return;
          if (s.type === "disconnect") this.connectionLost();
          else if (s.type === "reconnect") this.connectionBack();
        }
      } catch {
        // The connection closed: nothing left to watch.
      }
    })();
  }

  /** connectionLost fails every request already sent (its reply can never come) and holds new ones. */
  private connectionLost(): void {
    this.up = false;
    for (const [id, p] of this.pending) {
      if (!p.sent) continue;
      this.pending.delete(id);
      p.reject(new RequestInterruptedError(p.subject));
    }
  }

  /** connectionBack sends the requests held while the connection was down. */
  private connectionBack(): void {
    this.up = true;
    if (this.outbox.length > 0 && !this.sendScheduled) {
      this.sendScheduled = true;
      setImmediate(this.sendAll);
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
