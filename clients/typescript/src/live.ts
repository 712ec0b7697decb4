/**
 * LiveConnection: the one live connection of a client, with cursors kept per group.
 *
 * Guarantees:
 * - Each group's events reach the app once each and in seq order: an event at or below the group's cursor is
 *   dropped; the cursor advances (in memory and in the CursorStore) only after the app's handlers returned.
 * - Items are handled one at a time, in the order the server sent them; a reconnect waits until the items already
 *   received are handled, then resumes from the cursors, so nothing is lost or repeated at the seam.
 * - After any disconnect it reconnects with exponential backoff and full jitter, reset once a connection stayed
 *   live for `backoff.stableMs`; UNAUTHENTICATED refreshes the token first and retries at once (a second one in a
 *   row backs off). When the session cannot be refreshed it closes (the client emits `signedOut`). A connection
 *   that never opened for a reason the platform hid (a browser hides a refused WebSocket handshake's 401) is
 *   followed, once per run of such failures, by `checkToken`: a unary call that refreshes the token or signs out
 *   when the server refuses it.
 * - A connection that carried nothing for 2 × heartbeat_interval_seconds (from StreamReady), or that is not ready
 *   within `connectTimeoutMs`, is taken as dead and replaced.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { GroupCursorSchema, type SubscribeResponse } from "../../../gen/chat/v1/stream_service_pb.js";
import type { AuthSession } from "./auth-session.js";
import { type ResolvedBackoff, backoffDelay } from "./backoff.js";
import type { Emitter } from "./emitter.js";
import { type ClientEvents, type ConnectionState, toChatEvent } from "./events.js";
import { type LiveLink, isHiddenStatus } from "./link.js";
import type { Cursor, CursorStore } from "./stores.js";
import { sleep } from "./web.js";
import { LIVE_RETRYABLE } from "./errors.js";

/** ACK_DELAY_MS: acks (Group.acked_seq) are sent at most this often, so a busy group costs one ack a second. */
const ACK_DELAY_MS = 1_000;

/** LiveOptions configure a LiveConnection. */
export interface LiveOptions {
  readonly link: LiveLink;
  readonly auth: AuthSession;
  readonly store: CursorStore;
  readonly events: Emitter<ClientEvents>;
  readonly backoff: ResolvedBackoff;
  readonly connectTimeoutMs: number;
  /** reportError passes an error to the app (the `error` event). */
  reportError(e: unknown): void;
  /** checkToken makes one cheap authenticated unary call; an UNAUTHENTICATED answer refreshes the token or ends the session. */
  checkToken(): Promise<unknown>;
}

/** LiveConnection is described at the top of the file. */
export class LiveConnection {
  private readonly cursors = new Map<string, Cursor>();
  private userId = "";
  private stop = new AbortController();
  private running: Promise<void> | undefined;
  private conn: AbortController | undefined;
  private current: ConnectionState = "closed";
  /** acks are the positions not yet acknowledged to the server, by group. */
  private readonly acks = new Map<string, bigint>();
  private ackTimer: ReturnType<typeof setTimeout> | undefined;
  /** queue is the chain of item handlers: each item is handled after the one before it. */
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly o: LiveOptions) {}

  /** state is the connection's state now. */
  get state(): ConnectionState {
    return this.current;
  }

  /** cursor returns the group's cursor (the last seq handed to the app), if any. */
  cursor(groupId: string): Cursor | undefined {
    return this.cursors.get(groupId);
  }

  /** start loads the user's cursors and starts the loop (no-op when running). */
  async start(): Promise<void> {
    if (this.running) return;
    const session = this.o.auth.session;
    if (!session) throw new ConnectError("not signed in; call login() or register() first", Code.Unauthenticated);
    this.stop = new AbortController();
    this.userId = session.userId;
    this.cursors.clear();
    for (const [id, c] of await this.o.store.load(this.userId)) this.cursors.set(id, c);
    this.running = this.loop().finally(() => {
      this.running = undefined;
    });
  }

  /**
   * close ends the connection and the loop: items not yet handled are dropped (they come again on the next start),
   * the handler in progress finishes and its ack goes out before the connection closes; then the cursor store is
   * flushed (a failure to persist is reported as an `error` event).
   */
  async close(): Promise<void> {
    this.stop.abort();
    await this.queue;
    this.flushAcks();
    this.conn?.abort("closed by the client");
    await this.running;
    await this.queue;
    this.clearAckTimer();
    try {
      await this.o.store.flush?.();
    } catch (e) {
      this.o.reportError(e);
    }
  }

  /** reconnect drops the current connection as a network failure would; the loop resumes from the cursors. */
  reconnect(): void {
    this.conn?.abort("reconnect requested by the client");
  }

  private async setState(state: ConnectionState, extra: { error?: Error; retryInMs?: number } = {}): Promise<void> {
    this.current = state;
    await this.o.events.emit("state", { state, ...extra }, (e) => this.o.reportError(e));
  }

  private async loop(): Promise<void> {
    let attempt = 0;
    let first = true;
    let unauthenticatedInARow = 0;
    let tokenChecked = false;
    while (!this.stop.signal.aborted) {
      if (first) await this.setState("connecting");
      first = false;
      let token: string;
      try {
        token = await this.o.auth.accessToken();
      } catch (e) {
        const err = ConnectError.from(e);
        if (err.code === Code.Unauthenticated) break; // signed out: nothing to reconnect with
        const delay = backoffDelay(this.o.backoff, attempt++);
        await this.setState("reconnecting", { error: err, retryInMs: delay });
        await sleep(delay, this.stop.signal);
        continue;
      }
      if (this.stop.signal.aborted) break; // closed while the token was fetched: open nothing
      const conn = new AbortController();
      this.conn = conn;
      let liveSince: number | undefined;
      let watchdog: ReturnType<typeof setTimeout> | undefined;
      let idleLimitMs = this.o.connectTimeoutMs;
      let stalled = false;
      const arm = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => {
          stalled = true;
          conn.abort("no message within the heartbeat limit");
        }, idleLimitMs);
      };
      arm();
      const cursors = [...this.cursors].map(([groupId, c]) => create(GroupCursorSchema, { groupId, seq: c.seq, epoch: c.epoch }));
      const onItem = (item: SubscribeResponse) => {
        if (item.payload.case === "ready") {
          const hb = item.payload.value.heartbeatIntervalSeconds;
          if (hb > 0) idleLimitMs = 2 * hb * 1000;
        }
        arm();
        this.queue = this.queue.then(async () => {
          if (this.stop.signal.aborted) return; // closing: the item comes again on the next start
          if (item.payload.case === "ready") {
            liveSince = Date.now();
            unauthenticatedInARow = 0;
          }
          await this.handle(item);
        }).catch((e: unknown) => this.o.reportError(e)); // a failure here must not stop the items after it
      };
      let failure = await this.o.link.run({ accessToken: token, cursors, signal: conn.signal, onItem });
      clearTimeout(watchdog);
      this.conn = undefined;
      await this.queue; // handle what arrived before resuming from the cursors
      if (this.stop.signal.aborted) break;
      if (stalled) failure = new ConnectError(`no heartbeat from the server within ${idleLimitMs} ms`, Code.Unavailable);
      if (liveSince !== undefined && Date.now() - liveSince >= this.o.backoff.stableMs) attempt = 0;
      if (!isHiddenStatus(failure)) tokenChecked = false;
      if (isHiddenStatus(failure) && !tokenChecked) {
        tokenChecked = true;
        try {
          await this.o.checkToken();
        } catch (e) {
          if (ConnectError.from(e).code === Code.Unauthenticated && !this.o.auth.session) break; // the session is gone
        }
        if (this.o.auth.session && this.o.auth.session.accessToken !== token) {
          await this.setState("reconnecting", { error: failure, retryInMs: 0 });
          continue; // the check refreshed the token: retry with the new one at once
        }
      } else if (failure.code === Code.Unauthenticated) {
        unauthenticatedInARow++;
        try {
          await this.o.auth.refresh(token);
        } catch (e) {
          const err = ConnectError.from(e);
          if (err.code === Code.Unauthenticated) break; // the session is gone
        }
        if (unauthenticatedInARow === 1) {
          await this.setState("reconnecting", { error: failure, retryInMs: 0 });
          continue;
        }
      } else if (!LIVE_RETRYABLE.has(failure.code)) {
        this.o.reportError(failure);
      }
      const delay = backoffDelay(this.o.backoff, attempt++);
      await this.setState("reconnecting", { error: failure, retryInMs: delay });
      await sleep(delay, this.stop.signal);
    }
    this.stop.abort();
    await this.setState("closed");
  }

  /** stopNow ends the loop without waiting (the session ended); close() still flushes. */
  stopNow(): void {
    this.stop.abort();
    this.conn?.abort("closed");
    this.clearAckTimer();
  }

  private clearAckTimer(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
  }

  /** queueAck records that the app processed a group up to seq; acks go out at most every ACK_DELAY_MS, the newest per group. */
  private queueAck(groupId: string, seq: bigint): void {
    this.acks.set(groupId, seq);
    this.scheduleAcks();
  }

  private scheduleAcks(): void {
    this.ackTimer ??= setTimeout(() => {
      this.ackTimer = undefined;
      this.flushAcks();
    }, ACK_DELAY_MS);
  }

  /** flushAcks sends the pending acks over the connection, when it can carry them; the rest wait for the next flush. */
  private flushAcks(): void {
    this.clearAckTimer();
    for (const [groupId, seq] of this.acks) if (this.o.link.ack(groupId, seq)) this.acks.delete(groupId);
  }

  private async persist(groupId: string, c: Cursor | null): Promise<void> {
    if (c === null) this.cursors.delete(groupId);
    else this.cursors.set(groupId, c);
    try {
      await this.o.store.set(this.userId, groupId, c);
    } catch (e) {
      this.o.reportError(e);
    }
  }

  private async handle(item: SubscribeResponse): Promise<void> {
    const p = item.payload;
    const report = (e: unknown) => this.o.reportError(e);
    switch (p.case) {
      case "ready": {
        const listed = new Set<string>();
        for (const pos of p.value.groups) {
          listed.add(pos.groupId);
          const at = this.cursors.get(pos.groupId);
          // A group without a cursor starts at its head: remember it, so a later start resumes from here.
          if (!at) await this.persist(pos.groupId, { seq: pos.seq, epoch: pos.epoch });
          else if (at.epoch === "" && pos.epoch !== "") await this.persist(pos.groupId, { seq: at.seq, epoch: pos.epoch });
        }
        for (const id of [...this.cursors.keys()]) if (!listed.has(id)) await this.persist(id, null); // no longer a member
        await this.setState("live");
        if (this.acks.size > 0) this.scheduleAcks(); // acks that could not go out on the last connection
        return;
      }
      case "event": {
        const e = p.value;
        const at = this.cursors.get(e.groupId);
        if (at && e.seq <= at.seq) return; // seen already (replay overlap)
        const event = toChatEvent(e);
        await this.o.events.emit("event", event, report);
        const leftGroup = event.type === "memberRemoved" && event.member.userId === this.userId;
        await this.persist(e.groupId, leftGroup ? null : { seq: e.seq, epoch: at?.epoch ?? "" });
        if (leftGroup) this.acks.delete(e.groupId);
        else this.queueAck(e.groupId, e.seq);
        return;
      }
      case "cursorReset": {
        const r = p.value;
        await this.o.events.emit(
          "cursorReset",
          { groupId: r.groupId, requestedSeq: r.requestedSeq, firstAvailableSeq: r.firstAvailableSeq, epoch: r.epoch },
          report,
        );
        await this.persist(r.groupId, { seq: r.firstAvailableSeq > 0n ? r.firstAvailableSeq - 1n : 0n, epoch: r.epoch });
        return;
      }
      case "groupJoined": {
        await this.o.events.emit("groupJoined", { groupId: p.value.groupId, epoch: p.value.epoch }, report);
        if (!this.cursors.has(p.value.groupId)) await this.persist(p.value.groupId, { seq: 0n, epoch: p.value.epoch });
        return;
      }
      case "readMarker":
        await this.o.events.emit("readMarker", { groupId: p.value.groupId, seq: p.value.seq }, report);
        return;
      default:
        return; // heartbeat (the watchdog was re-armed when it arrived) or an item kind this SDK does not know
    }
  }
}
