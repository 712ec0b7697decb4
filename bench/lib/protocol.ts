/**
 * Messages between the bench (parent) and its load-generator processes
 * (subscriber workers and the sender), over the fork IPC channel.
 */

/** StreamSpec is one subscriber stream a worker opens: one user's device, with its own HTTP/2 connection. */
export interface StreamSpec {
  readonly id: number;
  readonly url: string;
  readonly token: string;
  /** The groups this stream's user is in (for the head check at the end). */
  readonly groups: readonly string[];
}

/** ToWorker is a command for a subscriber worker. */
export type ToWorker =
  | {
      type: "open";
      streams: StreamSpec[];
      connectConcurrency: number;
      /** How each stream is opened: Subscribe over HTTP/2 (gRPC) or over WebSocket (always a connection per stream). */
      transport: "grpc" | "websocket";
      /** Share one HTTP/2 session among this many streams (1 = a connection per stream). */
      streamsPerSession: number;
      maxReconnects: number;
      openTimeoutMs: number;
    }
  | {
      type: "collect";
      /** Phases whose histograms are sent (and reset). */
      phases: number[];
      /** Each group's final seq: wait until every stream has reached it (or waitMs passed). */
      heads: Record<string, number>;
      waitMs: number;
    }
  | { type: "snapshot" }
  | { type: "close" };

/**
 * LoopDelay is how late a worker's event loop ran (ms) since its streams
 * opened or the previous collect: a delivery arriving during such a stall is timestamped late, so
 * delivery latencies near these values may be the reader's, not the server's.
 */
export interface LoopDelay {
  p50: number;
  p99: number;
  max: number;
}

/** PhaseStats are the deliveries of one phase seen by one worker (or merged). */
export interface PhaseStats {
  deliveries: number;
  /** hdr-histogram-js encodeIntoCompressedBase64 of send→receive latency in µs. */
  histogram: string;
}

/** WorkerTotals are a worker's counters over the whole run. */
export interface WorkerTotals {
  streams: number;
  ready: number;
  failedToOpen: number;
  /** Message events received (all phases, including messages without a bench stamp). */
  messageEvents: number;
  /** Other events (member changes etc.). */
  otherEvents: number;
  heartbeats: number;
  duplicates: number;
  /** Seqs skipped by the stream (a gap the server never repaired: a lost delivery). */
  gapSeqs: number;
  cursorResets: number;
  /** Seqs given up because of CursorReset. */
  resetSeqs: number;
  reconnects: number;
  /** How streams ended unexpectedly, by gRPC code ("-1" = transport). */
  ends: Record<string, number>;
  /** First few end messages, for the report. */
  endMessages: string[];
  /** At collect time: streams whose cursor is below the group's head, and by how many seqs in total. */
  behindStreams: number;
  behindSeqs: number;
  /** Deliveries per wall-clock second (epoch s → count) and the max latency seen in that second (µs). */
  perSecond: Record<string, [number, number]>;
}

/** emptyTotals is a WorkerTotals with every counter at zero. */
export function emptyTotals(): WorkerTotals {
  return {
    streams: 0,
    ready: 0,
    failedToOpen: 0,
    messageEvents: 0,
    otherEvents: 0,
    heartbeats: 0,
    duplicates: 0,
    gapSeqs: 0,
    cursorResets: 0,
    resetSeqs: 0,
    reconnects: 0,
    ends: {},
    endMessages: [],
    behindStreams: 0,
    behindSeqs: 0,
    perSecond: {},
  };
}

/** FromWorker is a worker's report. */
export type FromWorker =
  | { type: "progress"; opened: number; ready: number; failed: number }
  | { type: "opened"; ready: number; failed: number; errors: string[]; openSeconds: number }
  | { type: "collected"; phases: Record<number, PhaseStats>; totals: WorkerTotals; waitedMs: number; loopDelay: LoopDelay }
  | { type: "snapshot"; deliveries: number; ready: number }
  | { type: "closed" }
  | { type: "error"; message: string };

/** SenderPhase is one phase of the sender's schedule. */
export interface SenderPhase {
  /** Phase number carried in every message text (the subscribers' histogram key). */
  readonly phase: number;
  /** Messages per second, open loop. */
  readonly rate: number;
  readonly durationMs: number;
  /**
   * groups: picks only among the sender's groups [from, to) (default all); with pick "sequential" each phase starts
   * at `from` and takes them in turn.
   */
  readonly groups?: { readonly from: number; readonly to: number };
}

/** SenderGroup is one group the sender may post to, with its members' tokens. */
export interface SenderGroup {
  readonly groupId: string;
  readonly tokens: readonly string[];
}

/** ToSender is a command for the sender. */
export type ToSender =
  | {
      type: "init";
      /** Server(s) to call, round-robin (production: every message process). */
      url: string | string[];
      groups: SenderGroup[];
      textBytes: number;
      sessions: number;
      timeoutMs: number;
      maxInFlight: number;
      /** "send": SendMessage to random groups; "list": ListMessages (history mode). */
      op: "send" | "list";
      /** list: page size and how the anchor is chosen. */
      listLimit: number;
      listAnchor: "newest" | "deep";
      /** list, deep: the highest seq of each group (by group id) to pick a random before_seq below. */
      groupHeads?: Record<string, number>;
      /** How calls pick their group: at random (default) or each group in turn (e.g. every group's first read after a restart). */
      pick?: "random" | "sequential";
    }
  | { type: "run"; phases: SenderPhase[]; startAtMs: number }
  | { type: "close" };

/** SenderPhaseStats is what the sender measured in one phase. */
export interface SenderPhaseStats {
  phase: number;
  rate: number;
  durationMs: number;
  /** Calls issued. */
  issued: number;
  ok: number;
  /** Calls not answered OK, by gRPC code ("-1" = transport, "4" includes the client's own deadline). */
  errors: Record<string, number>;
  /** Calls not issued because maxInFlight was reached (the server fell behind). */
  skipped: number;
  /** Successful sends × members of their group: deliveries the subscribers must see. */
  expectedDeliveries: number;
  /** SendMessage / ListMessages latency from the scheduled send time to the response, µs (compressed base64). */
  histogram: string;
  /** Lateness of the sender's own schedule (actual issue time − scheduled time), µs. */
  lagHistogram: string;
  /** Actual wall-clock span of the phase (first scheduled send to last response), ms. */
  spanMs: number;
  /** list: messages returned in total. */
  listedMessages: number;
}

/** FromSender is the sender's report. */
export type FromSender =
  | { type: "ready" }
  | { type: "phaseDone"; stats: SenderPhaseStats }
  | { type: "done"; heads: Record<string, number>; firstError: string | undefined }
  | { type: "closed" }
  | { type: "error"; message: string };
