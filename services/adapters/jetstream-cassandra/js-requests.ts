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
 * sendAll), and with a linger (`lingerMs` > 0) the requests of up to that
 * many milliseconds: a request made less than `lingerMs` after the last
 * batch went out waits for the next batch, at most `lingerMs` after the
 * last; one made later goes out at once (in this turn's batch). Under load
 * the requests then reach nats-server in bursts, which its raft layer
 * replicates in fewer rounds (bench/tools/jetstream-cost.ts --sweep: an R3
 * publish costs the three servers ~0.8-1.1 ms of CPU at 500 single
 * publishes/s, ~0.36 ms in bursts every 10 ms); an idle connection adds no
 * delay.
 *
 * Replies are handed back as they are (status headers included): the caller
 * interprets them (see JetStreamSequencer).
 *
 * Connection loss (issue 12, point 10): a request sent before the connection
 * dropped can never be answered (the server that had it is gone, or nats.js
 * discarded it unsent when it redialled), so it is failed at once with
 * RequestInterruptedError instead of waiting out the timeout; the caller
 * decides whether to send it again. Each sent request remembers the
 * connection epoch it was sent in (the epoch moves on at every "disconnect"
 * and "reconnect" status event): on either event every request sent in an
 * earlier epoch fails, so a request handed to nats.js while it was in fact
 * down (this instance was made during an outage, or missed the
 * "disconnect") fails at the "reconnect" instead of waiting out the timeout.
 * Requests made while the connection is known to be down are held here,
 * unsent (nats.js would buffer them and then drop them at its next reconnect
 * attempt), and sent as soon as it is back; they still time out after
 * `timeoutMs`, and a held request that times out leaves nothing behind. When
 * the connection closes for good (its "close" status event, or the end of
 * its status events) every pending request fails at once with
 * ConnectionClosedError, and so does every later one.
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

/** ConnectionClosedError: the connection closed for good before the reply came (it will not reconnect). */
export class ConnectionClosedError extends Error {
  constructor(subject?: string) {
    super(subject === undefined ? "the NATS connection is closed" : `the NATS connection closed before the reply to ${subject}`);
    this.name = "ConnectionClosedError";
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
  /** The connection epoch it was published in (meaningful once sent). */
  epoch: number;
}

/** Held is a request waiting in the outbox to be published. */
interface Held {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: MsgHdrs | undefined;
}

/**
 * connectedNow reads whether nats.js's connection is up right now. nats.js
 * (3.x) keeps it on its protocol handler, outside its public types; if it is
 * not there the connection is taken as up (it was when connect() resolved),
 * and a wrong guess only costs an interrupted request at the next status
 * event (see the epochs in the module comment).
 */
function connectedNow(nc: NatsConnection): boolean {
  if (nc.isClosed()) return false;
  const connected = (nc as unknown as { protocol?: { connected?: unknown } }).protocol?.connected;
  return typeof connected === "boolean" ? connected : true;
}

/**
 * JsRequests sends requests on `nc` and resolves each with its first reply,
 * or rejects with RequestTimeoutError after `timeoutMs`, with
 * RequestInterruptedError as soon as the connection is lost after the
 * request was sent (or at the next reconnect, for one sent while nats.js was
 * down unbeknown to this instance), with ConnectionClosedError once the
 * connection has closed for good (or the connection's error if the publish
 * cannot be made), or with RequestsClosedError on close(). While the
 * connection is down requests are held unsent and go out when it is back. A
 * reply that arrives after the timeout is dropped. Not for requests with
 * several replies.
 */
export class JsRequests {
  private readonly inbox: string;
  private readonly pending = new Map<number, Pending>();
  private sub: Subscription | undefined;
  private next = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Requests not yet published, by id, in request order; every one is also in `pending` (they leave together). */
  private readonly outbox = new Map<number, Held>();
  private sendScheduled = false;
  /** When the last batch went out (Date.now()), for the linger. */
  private lastSend = 0;
  private closed = false;
  /** Whether the connection is up: its state at construction, then as its status events last said. */
  private up: boolean;
  /** The connection epoch: moves on at every "disconnect" and "reconnect" event. */
  private epoch = 0;
  /** Set once the connection has closed for good (its "close" event or the end of its status events). */
  private connectionClosed = false;
  private stopStatus: (() => void) | undefined;

  constructor(
    private readonly nc: NatsConnection,
    readonly timeoutMs: number,
    /** lingerMs: the least time between two batches of requests going out (0: every turn of the event loop). */
    readonly lingerMs = 0,
  ) {
    this.inbox = createInbox();
    // Read the state and subscribe to the status events in one synchronous step, so no change falls between them.
    this.up = connectedNow(nc);
    this.watchStatus();
  }

  /** size is the number of requests waiting for a reply (held ones included). */
  get size(): number {
    return this.pending.size;
  }

  /** held is the number of requests waiting in the outbox to be published (for tests and metrics). */
  get held(): number {
    return this.outbox.size;
  }

  /** request publishes `data` (with `headers`) to `subject` and resolves with the reply (see the class comment). */
  request(subject: string, data: Uint8Array, headers?: MsgHdrs): Promise<Msg> {
    if (this.closed) return Promise.reject(new RequestsClosedError());
    if (this.connectionClosed) return Promise.reject(new ConnectionClosedError(subject));
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
      this.pending.set(id, { subject, deadline: Date.now() + this.timeoutMs, resolve, reject, sent: false, epoch: this.epoch });
      this.timer ??= setTimeout(this.expire, this.timeoutMs);
      this.outbox.set(id, { subject, data, headers });
      this.scheduleSend();
    });
  }

  /** scheduleSend arranges for the outbox to go out: in this turn's check phase, or at the end of the linger. */
  private scheduleSend(): void {
    if (this.sendScheduled) return;
    this.sendScheduled = true;
    const wait = this.lingerMs > 0 ? this.lastSend + this.lingerMs - Date.now() : 0;
    if (wait > 0) setTimeout(this.sendAll, wait);
    else setImmediate(this.sendAll);
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
    this.lastSend = Date.now();
    const batch = [...this.outbox];
    this.outbox.clear();
    for (const [id, r] of batch) {
      const p = this.pending.get(id);
      if (!p) continue;
      try {
        const reply = `${this.inbox}.${id}`;
        this.nc.publish(r.subject, r.data, r.headers ? { reply, headers: r.headers } : { reply });
        p.sent = true;
        p.epoch = this.epoch;
      } catch (e) {
        this.pending.delete(id);
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
   * held; on "reconnect" every request sent in an earlier epoch fails the
   * same way and the held ones are sent; on "close", or when the events end
   * (the connection closed), every pending request fails with
   * ConnectionClosedError.
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
          else if (s.type === "close") break;
        }
      } catch {
        // The status events ended with an error: the connection is gone all the same.
      }
      // Only close() (which fails everything itself) or the connection's close ends the events.
      if (!this.closed) this.connectionGone();
    })();
  }

  /** connectionLost fails every request already sent (its reply can never come) and holds new ones. */
  private connectionLost(): void {
    this.up = false;
    this.epoch++;
    this.failSentBefore(this.epoch);
  }

  /**
   * connectionBack fails every request sent in an earlier epoch (nats.js
   * discarded it on redial, or the server that had it is gone) and sends the
   * requests held while the connection was down.
   */
  private connectionBack(): void {
    this.up = true;
    this.epoch++;
    this.failSentBefore(this.epoch);
    if (this.outbox.size > 0 && !this.sendScheduled) {
      this.sendScheduled = true;
      setImmediate(this.sendAll);
    }
  }

  /** failSentBefore fails with RequestInterruptedError every sent request of an epoch before `epoch`. */
  private failSentBefore(epoch: number): void {
    for (const [id, p] of this.pending) {
      if (!p.sent || p.epoch >= epoch) continue;
      this.pending.delete(id);
      p.reject(new RequestInterruptedError(p.subject));
    }
  }

  /** connectionGone fails every pending request, and every later one, with ConnectionClosedError: the connection will not come back. */
  private connectionGone(): void {
    this.up = false;
    this.connectionClosed = true;
    this.outbox.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(new ConnectionClosedError(p.subject));
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
      // A held request leaves the outbox with it: nothing of it stays behind however long the connection is down.
      this.outbox.delete(id);
      p.reject(new RequestTimeoutError(p.subject, this.timeoutMs));
    }
  };

  private failAll(err: unknown): void {
    this.outbox.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(err);
  }
}
