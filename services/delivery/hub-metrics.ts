/**
 * HubMetrics is what the StreamHub reports about delivery. The hub calls it
 * on the delivery path, so implementations must be cheap (a few additions):
 * it is called once per event and fan-out batch, never once per stream.
 * server/metrics.ts implements it with Prometheus metrics (HubMetrics lives
 * here, in delivery, so the hub imports nothing of the server);
 * the hub itself knows nothing of Prometheus.
 */
export interface HubMetrics {
  /**
   * busEvent: a group event arrived from the bus (once per event per
   * process: the hub has one bus subscription per group), `lagMs` after its
   * `at` (may be negative across processes whose clocks differ).
   */
  busEvent(lagMs: number): void;
  /**
   * liveDelivered: a live event (from the bus) was written to `streams`
   * local streams, the last of them `latencyMs` after the event's `at`.
   */
  liveDelivered(streams: number, latencyMs: number): void;
  /** replayDelivered: `events` events read back from the store were written to a stream (resume, gap repair, join). */
  replayDelivered(events: number): void;
  /** bufferOverflow: a stream was ended with ResourceExhausted because its buffer passed the cap. */
  bufferOverflow(): void;
  /** cursorReset: a CursorReset was written to a stream. */
  cursorReset(reason: CursorResetReason): void;
}

/**
 * CursorResetReason says why a cursor could not be honoured: `epoch` (the
 * cursor is from another timeline incarnation), `ahead` (past the group's
 * head) or `expired` (the events after it are past retention).
 */
export type CursorResetReason = "epoch" | "ahead" | "expired";

/** noHubMetrics records nothing (unit tests, tools). */
export const noHubMetrics: HubMetrics = {
  busEvent() {},
  liveDelivered() {},
  replayDelivered() {},
  bufferOverflow() {},
  cursorReset() {},
};
