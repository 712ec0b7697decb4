import { ChatError } from "../core/errors.js";
import { mapLimit } from "../core/map-limit.js";
import type { GroupEvent } from "../core/model.js";
import type { Clock, EventBus, GroupStore, RefreshTokenStore, Subscription, UserNotice } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import { type CursorResetReason, type HubMetrics, noHubMetrics } from "./hub-metrics.js";
import { type OutboundItem, type StreamSink, eventItem, heartbeatItem, outbound, readMarkerItem } from "./outbound.js";
import type { StreamPresence } from "./presence-reporter.js";

/** HubSettings tune the delivery hub. */
export interface HubSettings {
  /**
   * Longest silence on a stream: a stream that wrote nothing for this long
   * gets a heartbeat (see StreamHub.beat for the exact bound).
   */
  readonly heartbeatMs: number;
  /** A stream whose sink buffers more than this many bytes is ended with ResourceExhausted. */
  readonly bufferMaxBytes: number;
  /** Events read from the store per catch-up query. */
  readonly catchUpBatch: number;
}

/** ClientCursor is a client's resume position in one group. */
export interface ClientCursor {
  readonly seq: number;
  /** Empty means "the current epoch". */
  readonly epoch: string;
}

/** StreamHandle lets the transport end a stream the hub holds. */
export interface StreamHandle {
  /** close ends the stream from the client side (disconnect); idempotent. */
  close(): void;
  /**
   * checkBuffer ends the stream with ResourceExhausted if its sink holds more
   * than the cap; call it after writing to the sink outside the hub (e.g.
   * replies on a bidirectional stream).
   */
  checkBuffer(): void;
}

/**
 * StreamHub delivers group timelines to the live streams of this process
 * (DESIGN flows 2 and 3).
 *
 * Guarantees, per stream and group (DESIGN invariants 3 to 5):
 * - events arrive exactly once and in seq order: each feed keeps a cursor,
 *   drops seqs at or below it, and repairs any gap from the store before it
 *   goes live again, so a lost or reordered bus event costs latency, never
 *   an event;
 * - a stream starts with StreamReady naming the position of every group,
 *   then replays from the client's cursors, then goes live with no gap or
 *   duplicate at the seam;
 * - a member_removed event for the stream's own user is the last event of
 *   that group on the stream;
 * - the sink's buffer is capped: past `bufferMaxBytes` the stream ends with
 *   ResourceExhausted and the client resumes from its cursors.
 *
 * A `read` notice (the user's read marker moved: MarkRead on any of their
 * devices) becomes a ReadMarker item on every stream of that user in this
 * process, encoded once; a stream still being set up gets the newest marker
 * of each group right after its StreamReady. Read markers are not timeline
 * events: they are not replayed, and one lost with the bus costs only the
 * badge's freshness until the next MarkRead or ListGroups.
 *
 * Per stream: it opens only for a live session. Every opening asks the
 * store whether the caller's session (the token's refresh family) was
 * revoked, after the user's notice subscription is active and before
 * StreamReady, and fails Unauthenticated if so; a `session_revoked` notice
 * ends the session's streams, including one still being set up. Since the
 * revocation is written before its notice is published, a revocation either
 * is seen by the store read or its notice reaches the stream — as long as
 * the bus delivers the notice. A bus that was cut off misses what was
 * published meanwhile and says so through onResync: then every session with
 * a local stream is read from the store again (see resync). Revoked
 * sessions are remembered (bounded) so a client retrying with a dead token
 * costs no store read; "alive" answers are never remembered.
 *
 * The hub subscribes to the bus once per group that has a local stream, and
 * encodes each live event once for all local recipients. It reports to its
 * HubMetrics once per event and fan-out batch, never once per stream.
 */
export class StreamHub {
  private readonly channels = new Map<string, GroupChannel>();
  private readonly users = new Map<string, UserChannel>();
  private readonly streams = new Set<HubStream>();
  /** Sessions known to be revoked, oldest first (bounded by REVOKED_SESSIONS_KEPT). */
  private readonly revokedSessions = new Set<string>();
  private readonly heartbeat: NodeJS.Timeout;
  /** Heartbeat ticks so far; a stream notes the count at each write (HubStream.lastTick). */
  private ticks = 0;
  private readonly metrics: HubMetrics;

  constructor(
    private readonly deps: {
      store: GroupStore & Pick<RefreshTokenStore, "isSessionRevoked">;
      bus: EventBus;
      clock: Clock;
      settings: HubSettings;
      metrics?: HubMetrics;
      /** presence hears when a stream of a user is set up and when it ends. */
      presence?: StreamPresence;
    },
  ) {
    this.metrics = deps.metrics ?? noHubMetrics;
    this.heartbeat = setInterval(() => this.beat(), deps.settings.heartbeatMs / HEARTBEAT_TICKS);
    this.heartbeat.unref();
    deps.bus.onResync(() => {
      this.resync().catch(() => {
        // Each group is retried at its next event, each session at the next resync; a failed store read here changes nothing.
      });
    });
  }

  /**
   * resync runs when the bus may have missed events and notices (it
   * reconnected). Each channel learns its group's head from the store and
   * its feeds catch up, so a quiet group does not wait for its next event to
   * repair the gap; and each distinct session among the open and opening
   * streams is asked once whether it was revoked (a session_revoked notice
   * published while the bus was cut off is lost), so a revoked session's
   * streams end with Unauthenticated instead of living until the access
   * token expires.
   */
  async resync(): Promise<void> {
    const [groups, sessions] = await Promise.allSettled([this.resyncGroups(), this.resyncSessions()]);
    if (groups.status === "rejected") throw groups.reason;
    if (sessions.status === "rejected") throw sessions.reason;
  }

  /**
   * resyncSessions re-checks the session of every open and opening stream:
   * one store read per distinct session (none for a session remembered as
   * revoked), RESYNC_SESSION_READS at a time. A revoked session is
   * remembered and all its streams end, including those opened meanwhile. A
   * failed read leaves that session's streams as they are.
   */
  private async resyncSessions(): Promise<void> {
    const sessions = [...new Set([...this.streams].map((s) => s.principal.sessionId))];
    await mapLimit(sessions, RESYNC_SESSION_READS, async (sessionId) => {
      if (!this.revokedSessions.has(sessionId)) {
        let revoked: boolean;
        try {
          revoked = await this.deps.store.isSessionRevoked(sessionId);
        } catch {
          return; // unknown: the stream stays; the next resync or the token's expiry decides
        }
        if (!revoked) return;
        this.rememberRevoked(sessionId);
      }
      for (const stream of [...this.streams]) {
        if (stream.principal.sessionId === sessionId) this.close(stream, sessionRevoked());
      }
    });
  }

  /** resyncGroups repairs every channel from its group's head in the store (see resync). */
  private async resyncGroups(): Promise<void> {
    for (const channel of [...this.channels.values()]) {
      const group = await this.deps.store.getGroup(channel.groupId);
      if (!group) continue;
      channel.noteSeq(group.headSeq);
      for (const feed of channel.feeds) if (feed.cursor < channel.lastSeq) this.catchUp(feed);
    }
  }

  /** size is the number of open streams. */
  get size(): number {
    return this.streams.size;
  }

  /**
   * open starts delivering the caller's groups to `sink`. It resolves once
   * StreamReady was written (or the stream failed and the sink was ended).
   */
  async open(principal: Principal, cursors: ReadonlyMap<string, ClientCursor>, sink: StreamSink): Promise<StreamHandle> {
    const stream = new HubStream(principal, sink, this.ticks);
    this.streams.add(stream);
    const handle: StreamHandle = {
      close: () => this.close(stream),
      checkBuffer: () => {
        if (stream.sink.bufferedBytes > this.deps.settings.bufferMaxBytes) this.overflow(stream);
      },
    };
    try {
      await this.setUp(stream, cursors);
    } catch (e) {
      this.close(stream, e instanceof ChatError ? e : new ChatError("Unavailable", "could not open the stream; retry", { cause: e }));
    }
    return handle;
  }

  /** shutdown ends every stream with Unavailable (clients reconnect elsewhere) and stops the heartbeat. */
  shutdown(): void {
    clearInterval(this.heartbeat);
    for (const stream of [...this.streams]) {
      this.close(stream, new ChatError("Unavailable", "server is shutting down; reconnect with your cursors"));
    }
  }

  private async setUp(stream: HubStream, cursors: ReadonlyMap<string, ClientCursor>): Promise<void> {
    // The notice subscription is active before the store is asked: a revocation
    // the read misses was not yet written, so its notice is still to come.
    await this.acquireUser(stream);
    await this.requireLiveSession(stream.principal.sessionId);
    if (stream.closed) return;
    const groupIds = await this.allGroupIds(stream.principal.userId);
    // Each group's head and epoch come from its channel: read from the store
    // once when this process starts following the group (after subscribing),
    // then kept current by the live events, so an opening stream costs one
    // store read for its list of groups, not one per group.
    const channels = await this.acquireChannels(groupIds);
    const feeds: GroupFeed[] = [];
    const resets: PendingReset[] = [];
    const positions = [];
    try {
      for (const channel of channels) {
        const cursor = cursors.get(channel.groupId);
        await this.withCurrentHead(channel, cursor);
        const start = await this.startPosition(channel, cursor, resets);
        feeds.push(new GroupFeed(stream, channel, start));
        positions.push({
          $typeName: "chat.v1.GroupPosition" as const,
          groupId: channel.groupId,
          seq: BigInt(start),
          headSeq: BigInt(channel.lastSeq),
          epoch: channel.epoch,
        });
      }
    } catch (e) {
      for (const channel of channels) this.releaseChannel(channel);
      throw e;
    }
    if (stream.closed) {
      for (const channel of channels) this.releaseChannel(channel);
      return;
    }
    // From here on no await until every feed is live or catching up, so no
    // bus event can slip between StreamReady and the feeds' first delivery.
    for (const feed of feeds) feed.attach();
    this.send(
      stream,
      outbound({
        case: "ready",
        value: {
          $typeName: "chat.v1.StreamReady",
          groups: positions,
          // Rounded up: no silence on the stream is longer than the announced interval.
          heartbeatIntervalSeconds: Math.max(1, Math.ceil(this.deps.settings.heartbeatMs / 1000)),
        },
      }),
    );
    for (const reset of resets) {
      this.send(stream, reset.item);
      this.metrics.cursorReset(reset.reason);
    }
    for (const feed of feeds) {
      if (feed.cursor < feed.channel.lastSeq) this.catchUp(feed);
    }
    stream.ready = true;
    stream.present = true;
    this.deps.presence?.opened(stream.principal.userId);
    for (const join of stream.pendingJoins.splice(0)) this.startJoin(stream, join.groupId, join.seq - 1);
    for (const pending of stream.pendingReads.values()) this.send(stream, pending.item);
    stream.pendingReads.clear();
    this.scheduleExpiry(stream);
  }

  /** requireLiveSession throws Unauthenticated if the session was revoked (remembered, or one store read). */
  private async requireLiveSession(sessionId: string): Promise<void> {
    if (!this.revokedSessions.has(sessionId)) {
      if (!(await this.deps.store.isSessionRevoked(sessionId))) return;
      this.rememberRevoked(sessionId);
    }
    throw sessionRevoked();
  }

  /** rememberRevoked adds a revoked session to the bounded memory, dropping the oldest past the bound. */
  private rememberRevoked(sessionId: string): void {
    if (this.revokedSessions.has(sessionId)) return;
    this.revokedSessions.add(sessionId);
    if (this.revokedSessions.size > REVOKED_SESSIONS_KEPT) {
      const oldest = this.revokedSessions.values().next().value;
      if (oldest !== undefined) this.revokedSessions.delete(oldest);
    }
  }

  /** firstRetainedSeq is the group's oldest retained seq in the store, or 0 if none is retained (read each time: resume must be exact). */
  private async firstRetainedSeq(groupId: string): Promise<number> {
    return (await this.deps.store.firstRetained(groupId))?.seq ?? 0;
  }

  /**
   * withCurrentHead raises the channel's head to the group's current head in
   * the store when the client's cursor is ahead of it: the channel may not
   * have heard the newest events yet (the bus is not synchronous with an
   * append's ack, and a store may read a head that lags the timeline:
   * production's Cassandra head_seq), so the head is read again
   * (GroupStore.getGroup merges the log) before the cursor is called ahead.
   * Only on that path: one read per such group.
   */
  private async withCurrentHead(channel: GroupChannel, cursor: ClientCursor | undefined): Promise<void> {
    if (!cursor || cursor.seq <= channel.lastSeq) return;
    const group = await this.deps.store.getGroup(channel.groupId);
    if (group) channel.noteSeq(group.headSeq);
  }

  /** startPosition decides where a group's feed starts; a cursor it cannot honour adds a CursorReset. */
  private async startPosition(channel: GroupChannel, cursor: ClientCursor | undefined, resets: PendingReset[]): Promise<number> {
    const { groupId: id, lastSeq: headSeq, epoch } = channel;
    if (!cursor) return headSeq;
    if (cursor.epoch !== "" && cursor.epoch !== epoch) {
      const first = await this.firstRetainedSeq(id);
      const start = first === 0 ? headSeq : first - 1;
      resets.push({ item: resetItem(id, cursor.seq, start + 1, epoch), reason: "epoch" });
      return start;
    }
    if (cursor.seq > headSeq) {
      resets.push({ item: resetItem(id, cursor.seq, headSeq + 1, epoch), reason: "ahead" });
      return headSeq;
    }
    return cursor.seq;
  }

  private async allGroupIds(userId: string): Promise<string[]> {
    const all: string[] = [];
    for (let after = ""; ; ) {
      const page = await this.deps.store.listGroupIdsOf(userId, after, 500);
      all.push(...page);
      const last = page.at(-1);
      if (page.length < 500 || !last) return all;
      after = last;
    }
  }

  /**
   * acquireChannels acquires the channel of each group that exists (a group
   * whose row is gone is left out), in the order given, at most
   * CHANNEL_SETUPS set up at once; if any fails, every channel acquired is
   * released (also those whose setup ends after the failure) and the error
   * is thrown.
   */
  private async acquireChannels(groupIds: readonly string[]): Promise<GroupChannel[]> {
    const acquired = new Set<GroupChannel>();
    let failed = false;
    try {
      const channels = await mapLimit(groupIds, CHANNEL_SETUPS, async (groupId) => {
        if (failed) return undefined;
        const channel = await this.acquireChannel(groupId);
        if (failed || !channel.found) {
          this.releaseChannel(channel);
          return undefined;
        }
        acquired.add(channel);
        return channel;
      });
      return channels.filter((c): c is GroupChannel => c !== undefined);
    } catch (e) {
      failed = true;
      for (const channel of acquired) this.releaseChannel(channel);
      throw e;
    }
  }

  /**
   * onEvent fans one bus event out to the group's local feeds, encoding it at
   * most once. Metrics cost two clock reads per event, not per stream.
   */
  private onEvent(channel: GroupChannel, event: GroupEvent): void {
    const clock = this.deps.clock;
    this.metrics.busEvent(clock.now() - event.at);
    channel.noteSeq(event.seq);
    let item: OutboundItem | undefined;
    let written = 0;
    for (const feed of channel.feeds) {
      if (feed.catchingUp || event.seq <= feed.cursor) continue;
      if (event.seq === feed.cursor + 1) {
        item ??= eventItem(event);
        this.deliver(feed, event, item);
        written++;
      } else {
        this.catchUp(feed);
      }
    }
    if (written > 0) this.metrics.liveDelivered(written, clock.now() - event.at);
  }

  /** deliver writes one event to a feed whose cursor is exactly event.seq - 1. */
  private deliver(feed: GroupFeed, event: GroupEvent, item: OutboundItem): void {
    const stream = feed.stream;
    this.send(stream, item);
    feed.cursor = event.seq;
    if (stream.sink.bufferedBytes > this.deps.settings.bufferMaxBytes) {
      this.overflow(stream);
      return;
    }
    if (event.body.type === "member_removed" && event.body.member.id === stream.principal.userId) {
      this.detach(feed);
      void this.recheckMembership(stream, event.groupId, event.seq);
    }
  }

  /**
   * catchUp replays a feed from the store until it reaches everything the
   * channel has seen, then leaves it live. At most one runs per feed.
   */
  private catchUp(feed: GroupFeed): void {
    if (feed.catchingUp || !feed.attached) return;
    feed.catchingUp = true;
    this.replay(feed).catch((e: unknown) => {
      feed.catchingUp = false;
      this.close(feed.stream, new ChatError("Unavailable", "could not replay the timeline; reconnect", { cause: e }));
    });
  }

  /**
   * replay runs the catch-up loop. It clears `catchingUp` in the same
   * synchronous step as its final "caught up" check, so no live event can
   * fall between the replay's end and live delivery.
   */
  private async replay(feed: GroupFeed): Promise<void> {
    const { store, settings } = this.deps;
    const groupId = feed.channel.groupId;
    const sink = feed.stream.sink;
    let stalls = 0;
    for (;;) {
      if (!feed.attached || feed.cursor >= feed.channel.lastSeq) {
        feed.catchingUp = false;
        return;
      }
      const events = await store.readEvents(groupId, feed.cursor, settings.catchUpBatch);
      let progressed = false;
      for (const event of events) {
        // Replay at the client's pace: never fill more than half the buffer cap.
        while (feed.attached && sink.bufferedBytes > settings.bufferMaxBytes / 2) await sink.drained();
        if (!feed.attached) break;
        if (event.seq <= feed.cursor) continue;
        if (event.seq !== feed.cursor + 1 && !(await this.skipExpired(feed, event.seq))) break;
        if (!feed.attached) break;
        this.deliver(feed, event, eventItem(event));
        this.metrics.replayDelivered(1);
        progressed = true;
      }
      if (!progressed && events.length === 0 && feed.attached && (await this.skipAllExpired(feed))) progressed = true;
      if (progressed) {
        stalls = 0;
      } else if (++stalls > 500) {
        // ~10 s: long enough for another process's persister to fill a gap its writer left (ack wait 5 s).
        throw new Error(`timeline of group ${groupId} has a gap after seq ${feed.cursor} that did not fill`);
      } else {
        await sleep(20);
      }
    }
  }

  /**
   * skipExpired handles a gap before `nextSeq` found while replaying: if the
   * missing seqs are past retention, the feed jumps over them (announcing a
   * CursorReset unless the client asked for everything with cursor 0) and
   * true is returned; otherwise the gap is transient and false is returned.
   */
  private async skipExpired(feed: GroupFeed, nextSeq: number): Promise<boolean> {
    const first = await this.firstRetainedSeq(feed.channel.groupId);
    if (!feed.attached || first === 0 || feed.cursor + 1 >= first || nextSeq !== first) return false;
    this.jump(feed, first - 1);
    return true;
  }

  /**
   * skipAllExpired handles a replay that found nothing after the cursor
   * although the channel knows of later events: if the store retains no
   * event of the group at all, everything up to the known head expired, and
   * the feed jumps to the head.
   */
  private async skipAllExpired(feed: GroupFeed): Promise<boolean> {
    const first = await this.firstRetainedSeq(feed.channel.groupId);
    if (!feed.attached || first !== 0) return false;
    this.jump(feed, feed.channel.lastSeq);
    return true;
  }

  /** jump moves a feed's cursor over expired events, saying so with a CursorReset unless the client asked for everything (cursor 0). */
  private jump(feed: GroupFeed, to: number): void {
    if (feed.cursor > 0) {
      this.send(feed.stream, resetItem(feed.channel.groupId, feed.cursor, to + 1, feed.channel.epoch));
      this.metrics.cursorReset("expired");
    }
    feed.cursor = to;
  }

  /** onNotice handles a per-user notice for the user's local streams. */
  private onNotice(userId: string, notice: UserNotice): void {
    if (notice.type === "session_revoked") this.rememberRevoked(notice.sessionId);
    const user = this.users.get(userId);
    if (!user) return;
    if (notice.type === "read") {
      this.onRead(user, notice.groupId, notice.seq);
      return;
    }
    for (const stream of [...user.streams]) {
      if (notice.type === "session_revoked") {
        // Streams still being set up are in user.streams too: they end here as well.
        if (stream.principal.sessionId === notice.sessionId) this.close(stream, sessionRevoked());
      } else if (!stream.ready) {
        stream.pendingJoins.push({ groupId: notice.groupId, seq: notice.seq });
      } else {
        this.startJoin(stream, notice.groupId, notice.seq - 1);
      }
    }
  }

  /** onRead writes one ReadMarker item to each of the user's ready streams; one being set up keeps it (the newest per group) for after StreamReady. */
  private onRead(user: UserChannel, groupId: string, seq: number): void {
    const item = readMarkerItem(groupId, seq);
    for (const stream of [...user.streams]) {
      if (!stream.ready) {
        const pending = stream.pendingReads.get(groupId);
        if (!pending || pending.seq < seq) stream.pendingReads.set(groupId, { seq, item });
        continue;
      }
      this.send(stream, item);
      if (stream.sink.bufferedBytes > this.deps.settings.bufferMaxBytes) this.overflow(stream);
    }
  }

  private startJoin(stream: HubStream, groupId: string, cursor: number): void {
    if (stream.feeds.has(groupId)) return;
    this.join(stream, groupId, cursor).catch((e: unknown) =>
      this.close(stream, new ChatError("Unavailable", "could not add the group to the stream; reconnect", { cause: e })),
    );
  }

  /** join adds a group to an open stream, replaying from after `cursor`. */
  private async join(stream: HubStream, groupId: string, cursor: number): Promise<void> {
    const channel = await this.acquireChannel(groupId);
    if (stream.closed || stream.feeds.has(groupId)) {
      this.releaseChannel(channel);
      return;
    }
    channel.noteSeq(cursor + 1);
    const feed = new GroupFeed(stream, channel, cursor);
    feed.attach();
    this.send(stream, outbound({ case: "groupJoined", value: { $typeName: "chat.v1.GroupJoined", groupId, epoch: channel.epoch } }));
    this.catchUp(feed);
  }

  /**
   * recheckMembership runs after the stream's user was removed from a
   * group: if the user is a member again (re-added before the removal was
   * delivered), the group continues on the stream right after the removal.
   */
  private async recheckMembership(stream: HubStream, groupId: string, removedAt: number): Promise<void> {
    const member = await this.deps.store.getMember(groupId, stream.principal.userId);
    if (member && !stream.closed) this.startJoin(stream, groupId, removedAt);
  }

  private detach(feed: GroupFeed): void {
    if (!feed.attached) return;
    feed.detach();
    this.releaseChannel(feed.channel);
  }

  /** overflow ends a stream whose buffer passed the cap (DESIGN invariant 5). */
  private overflow(stream: HubStream): void {
    if (stream.closed) return;
    this.metrics.bufferOverflow();
    this.close(stream, bufferFull());
  }

  private close(stream: HubStream, error?: ChatError): void {
    if (stream.closed) return;
    stream.closed = true;
    if (stream.present) this.deps.presence?.closed(stream.principal.userId);
    this.streams.delete(stream);
    if (stream.expiry) clearTimeout(stream.expiry);
    for (const feed of [...stream.feeds.values()]) this.detach(feed);
    this.releaseUser(stream);
    stream.sink.end(error);
  }

  private scheduleExpiry(stream: HubStream): void {
    const ms = Math.max(0, stream.principal.expiresAt - this.deps.clock.now());
    stream.expiry = setTimeout(
      () => this.close(stream, new ChatError("Unauthenticated", "access token expired; reconnect with a fresh token and your cursors")),
      Math.min(ms, 2 ** 31 - 1),
    );
    stream.expiry.unref();
  }

  /** send writes an item to a stream and marks it not idle as of the current heartbeat tick. */
  private send(stream: HubStream, item: OutboundItem): void {
    stream.lastTick = this.ticks;
    stream.sink.write(item);
  }

  /**
   * beat runs HEARTBEAT_TICKS times per heartbeat interval and sends a
   * heartbeat (one encoding for all) to every stream that wrote nothing
   * during the last HEARTBEAT_TICKS ticks. A stream's last write fell
   * between two ticks, so its heartbeat comes after more than
   * (HEARTBEAT_TICKS - 1) / HEARTBEAT_TICKS of the interval and at most the
   * interval of silence (plus timer lateness): no gap between two items of a
   * stream exceeds heartbeatMs. Cost per tick: one pass over the streams,
   * an integer compare each; writes note the tick count, not the clock.
   */
  private beat(): void {
    const now = ++this.ticks;
    let item: OutboundItem | undefined;
    for (const stream of this.streams) {
      // A stream still being set up gets nothing before its StreamReady.
      if (now - stream.lastTick < HEARTBEAT_TICKS || !stream.ready) continue;
      item ??= heartbeatItem(this.deps.clock.now());
      stream.lastTick = now;
      stream.sink.write(item);
    }
  }

  /**
   * acquireChannel returns the group's channel, set up once per process:
   * subscribed on the bus first, then the group read from the store (epoch,
   * head), so an event appended after the read arrives live and one before
   * it is at or below the head read. A setup that fails is forgotten (and
   * its subscription ended), so the next acquirer tries again.
   */
  private async acquireChannel(groupId: string): Promise<GroupChannel> {
    let channel = this.channels.get(groupId);
    if (!channel) {
      const created = new GroupChannel(groupId);
      channel = created;
      this.channels.set(groupId, created);
      const subscription = this.deps.bus.subscribeGroup(groupId, (event) => this.onEvent(created, event));
      created.subscription = subscription;
      created.setup = subscription.then(async () => {
        const group = await this.deps.store.getGroup(groupId);
        if (!group) return;
        created.epoch = group.epoch;
        created.noteSeq(group.headSeq);
        created.found = true;
      });
      created.setup.catch(() => {
        if (this.channels.get(groupId) === created) this.channels.delete(groupId);
        void subscription.then((s) => s.unsubscribe()).catch(() => {});
      });
    }
    channel.refs++;
    try {
      await channel.setup;
    } catch (e) {
      channel.refs--;
      throw e;
    }
    return channel;
  }

  private releaseChannel(channel: GroupChannel): void {
    if (--channel.refs > 0) return;
    if (this.channels.get(channel.groupId) === channel) this.channels.delete(channel.groupId);
    void channel.subscription?.then((s) => s.unsubscribe()).catch(() => {});
  }

  private async acquireUser(stream: HubStream): Promise<void> {
    const userId = stream.principal.userId;
    let user = this.users.get(userId);
    if (!user) {
      const created = new UserChannel();
      user = created;
      this.users.set(userId, created);
      created.subscription = this.deps.bus.subscribeUser(userId, (notice) => this.onNotice(userId, notice));
      created.subscription.catch(() => {
        if (this.users.get(userId) === created) this.users.delete(userId);
      });
    }
    user.streams.add(stream);
    stream.userChannel = user;
    await user.subscription;
  }

  private releaseUser(stream: HubStream): void {
    const user = stream.userChannel;
    if (!user) return;
    stream.userChannel = undefined;
    user.streams.delete(stream);
    if (user.streams.size > 0) return;
    const userId = stream.principal.userId;
    if (this.users.get(userId) === user) this.users.delete(userId);
    void user.subscription?.then((s) => s.unsubscribe()).catch(() => {});
  }
}

/** GroupChannel is this process's one bus subscription for a group, shared by its local feeds. */
class GroupChannel {
  /** Highest seq known to be durable (from the bus or a store read). */
  lastSeq = 0;
  epoch = "";
  refs = 0;
  readonly feeds = new Set<GroupFeed>();
  subscription: Promise<Subscription> | undefined;
  /** Resolves once subscribed and the group was read (see StreamHub.acquireChannel). */
  setup: Promise<void> | undefined;
  /** Whether the setup's read found the group; a stream leaves out a group that is not found. */
  found = false;

  constructor(readonly groupId: string) {}

  noteSeq(seq: number): void {
    if (seq > this.lastSeq) this.lastSeq = seq;
  }
}

/** UserChannel is the bus subscription for one user's notices, shared by the user's local streams. */
class UserChannel {
  readonly streams = new Set<HubStream>();
  subscription: Promise<Subscription> | undefined;
}

/** HubStream is one open client stream. */
class HubStream {
  closed = false;
  /** Set once StreamReady is written; joins before that wait in pendingJoins. */
  ready = false;
  readonly pendingJoins: { groupId: string; seq: number }[] = [];
  /** The newest read marker per group that came while the stream was being set up; written after StreamReady. */
  readonly pendingReads = new Map<string, { seq: number; item: OutboundItem }>();
  readonly feeds = new Map<string, GroupFeed>();
  expiry: NodeJS.Timeout | undefined;
  userChannel: UserChannel | undefined;
  /** Set once the stream was reported to presence as opened (so close reports it closed). */
  present = false;

  constructor(
    readonly principal: Principal,
    readonly sink: StreamSink,
    /** The hub's tick count at the stream's last write (set by every write); the heartbeat goes to streams idle for HEARTBEAT_TICKS ticks. */
    public lastTick: number,
  ) {}
}

/** GroupFeed is one group on one stream; cursor is the last seq written to the stream. */
class GroupFeed {
  catchingUp = false;
  attached = false;

  constructor(
    readonly stream: HubStream,
    readonly channel: GroupChannel,
    public cursor: number,
  ) {}

  attach(): void {
    this.attached = true;
    this.channel.feeds.add(this);
    this.stream.feeds.set(this.channel.groupId, this);
  }

  detach(): void {
    this.attached = false;
    this.channel.feeds.delete(this);
    if (this.stream.feeds.get(this.channel.groupId) === this) this.stream.feeds.delete(this.channel.groupId);
  }
}

/** PendingReset is a CursorReset decided while a stream is set up, written after StreamReady. */
interface PendingReset {
  readonly item: OutboundItem;
  readonly reason: CursorResetReason;
}

/** HEARTBEAT_TICKS is how many times per heartbeat interval the hub looks for idle streams (see StreamHub.beat). */
const HEARTBEAT_TICKS = 4;

/** RESYNC_SESSION_READS bounds the concurrent store reads of a resync's session check. */
const RESYNC_SESSION_READS = 16;

/** Channels an opening stream sets up at once (each: a bus subscription, then one store read). */
const CHANNEL_SETUPS = 16;

/** REVOKED_SESSIONS_KEPT bounds the revoked sessions a hub remembers (about 100 bytes each). */
const REVOKED_SESSIONS_KEPT = 10_000;

function sessionRevoked(): ChatError {
  return new ChatError("Unauthenticated", "session was revoked; log in again");
}

function bufferFull(): ChatError {
  return new ChatError("ResourceExhausted", "stream buffer is full because the client reads too slowly; reconnect with your cursors");
}

function resetItem(groupId: string, requested: number, first: number, epoch: string): OutboundItem {
  return outbound({
    case: "cursorReset",
    value: {
      $typeName: "chat.v1.CursorReset",
      groupId,
      requestedSeq: BigInt(requested),
      firstAvailableSeq: BigInt(first),
      epoch,
    },
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
