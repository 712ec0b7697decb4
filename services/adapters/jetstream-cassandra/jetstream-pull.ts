/**
 * PendingPuller: pulls of everything a durable pull consumer has pending
 * *now*, in one burst (`no_wait`), for the persister.
 *
 * Why not consume(): a consume() keeps a pull request open, so JetStream
 * hands each event over as it is stored, and on an R3 consumer every hand-over
 * is a replicated "delivered" update of its own (a raft round per publish
 * burst). A `no_wait` pull of what is pending is answered at once with all of
 * it, so its delivered updates are proposed together, and its acks (sent in
 * one turn by the persister) too: issue 13.4's third session measured the
 * consumer's share of nats-server CPU per event cut by a quarter to a half
 * (`bench/tools/jetstream-cost.ts --consumer`, docs/production.md).
 *
 * nats-server 2.9.10 answers a `no_wait` pull with the pending events (up to
 * the batch) followed by a `408 Request Timeout` status, or with `404 No
 * Messages` when nothing is pending; the request does not stay open, so no
 * pull outlives its caller (an open pull nobody listens to any more is what
 * 2.9.10 mishandles on a redelivery: jetstream-event-feed.ts). Every pull goes
 * to one inbox subscription, one pull at a time; an event that arrives when no
 * pull waits (after a timeout) is nak'ed, so JetStream hands it out again at
 * once; after close() nothing listens, and such an event is redelivered after
 * the consumer's ack_wait.
 */
import { createInbox } from "@nats-io/transport-node";
import type { Msg, MsgHdrs, NatsConnection, Subscription } from "@nats-io/transport-node";

const ACK = "+ACK";
const WORKING = "+WPI";
const TERM = "+TERM";
const NAK = "-NAK";

/** PulledMsg is one event handed over by a pull; settle it exactly once (working() may come before). */
export class PulledMsg {
  private settled = false;
  constructor(
    private readonly nc: NatsConnection,
    readonly subject: string,
    readonly data: Uint8Array,
    readonly headers: MsgHdrs | undefined,
    /** seq is the event's stream sequence (from the ack subject). */
    readonly seq: number,
    private readonly reply: string,
  ) {}

  ack(): void {
    this.respond(ACK, true);
  }

  /** nak hands the event back, to be redelivered after `delayMs` (at once without it). */
  nak(delayMs?: number): void {
    this.respond(delayMs ? `${NAK} ${JSON.stringify({ delay: delayMs * 1_000_000 })}` : NAK, true);
  }

  /** working restarts the consumer's ack_wait for this event. */
  working(): void {
    this.respond(WORKING, false);
  }

  /** term tells JetStream never to redeliver it. */
  term(): void {
    this.respond(TERM, true);
  }

  private respond(payload: string, final: boolean): void {
    if (this.settled) return;
    this.settled = final;
    // A publish on a closed connection throws; the event is then redelivered after ack_wait.
    try {
      this.nc.publish(this.reply, payload);
    } catch {
      // nothing to do
    }
  }
}

/** streamSeqOfAck reads the stream sequence from a JetStream ack subject (with or without a domain). */
export function streamSeqOfAck(reply: string): number | undefined {
  const t = reply.split(".");
  if (t[0] !== "$JS" || t[1] !== "ACK") return undefined;
  // $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
  // $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<token>
  const s = t.length === 9 ? t[5] : t.length >= 11 ? t[7] : undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** PullResult is what one pull brought, and whether JetStream ended it (else it timed out or was cut by close). */
export interface PullResult {
  readonly msgs: PulledMsg[];
  readonly ended: boolean;
  /** status is the code JetStream ended it with (404 nothing pending, 408 the pending ones sent, 409 refused). */
  readonly status?: number;
}

/** PendingPuller pulls what a durable consumer has pending, one pull at a time (see the module comment). */
export class PendingPuller {
  private readonly inbox = createInbox();
  private readonly sub: Subscription;
  private waiting: { msgs: PulledMsg[]; done: (r: PullResult) => void; timer: NodeJS.Timeout } | undefined;
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly stream: string,
    private readonly consumer: string,
  ) {
    this.sub = nc.subscribe(this.inbox, { callback: (_err, m) => this.receive(m) });
  }

  /**
   * pull asks for up to `batch` pending events and resolves once JetStream
   * ended the pull, or after `timeoutMs` with what came (ended false: the
   * server did not answer, e.g. a lost connection or a missing consumer).
   * Never rejects; one pull at a time.
   */
  pull(batch: number, timeoutMs: number): Promise<PullResult> {
    if (this.waiting) throw new Error("PendingPuller: one pull at a time");
    if (this.closed) return Promise.resolve({ msgs: [], ended: false });
    return new Promise<PullResult>((resolve) => {
      const w = {
        msgs: [] as PulledMsg[],
        done: resolve,
        timer: setTimeout(() => this.finish({ msgs: w.msgs, ended: false }), timeoutMs),
      };
      this.waiting = w;
      try {
        this.nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${this.stream}.${this.consumer}`, JSON.stringify({ batch, no_wait: true }), {
          reply: this.inbox,
        });
      } catch {
        this.finish({ msgs: [], ended: false });
      }
    });
  }

  /** close ends a waiting pull with what it got (ended false) and stops listening; later events are redelivered after ack_wait. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.waiting) this.finish({ msgs: this.waiting.msgs, ended: false });
    try {
      this.sub.unsubscribe();
    } catch {
      // the connection is closed already: nothing to stop
    }
  }

  private finish(r: PullResult): void {
    const w = this.waiting;
    if (!w) return;
    this.waiting = undefined;
    clearTimeout(w.timer);
    w.done(r);
  }

  private receive(m: Msg): void {
    const seq = m.reply ? streamSeqOfAck(m.reply) : undefined;
    if (m.reply && seq !== undefined) {
      const pulled = new PulledMsg(this.nc, m.subject, m.data, m.headers, seq, m.reply);
      if (this.waiting && !this.closed) this.waiting.msgs.push(pulled);
      else pulled.nak();
      return;
    }
    // A status (no payload): 404 nothing pending, 408 the pending ones were sent, 409 refused (e.g. consumer deleted).
    const status = m.headers?.code;
    if (this.waiting) this.finish({ msgs: this.waiting.msgs, ended: true, ...(status ? { status } : {}) });
  }
}
