/**
 * StreamReader consumes a Subscribe (or Connect) stream in the background
 * and lets a test wait for items with a timeout.
 */
import type { GroupEvent } from "../../gen/chat/v1/message_pb.js";
import type { GroupCursor, SubscribeResponse } from "../../gen/chat/v1/stream_service_pb.js";
import * as grpc from "@grpc/grpc-js";
import type { GrpcJsClient } from "./grpc-js-client.js";
import type { Clients } from "./test-server.js";

export class StreamReader {
  readonly items: SubscribeResponse[] = [];
  error: unknown = undefined;
  done = false;
  private waiters: (() => void)[] = [];
  readonly abort = new AbortController();

  constructor(source: (signal: AbortSignal) => AsyncIterable<SubscribeResponse>) {
    void (async () => {
      try {
        for await (const item of source(this.abort.signal)) {
          this.items.push(item);
          this.wake();
        }
      } catch (e) {
        this.error = e;
      } finally {
        this.done = true;
        this.wake();
      }
    })();
  }

  /** events are the group events received so far. */
  get events(): GroupEvent[] {
    return this.items.flatMap((i) => (i.payload.case === "event" ? [i.payload.value] : []));
  }

  /** eventsOf returns the received events of one group. */
  eventsOf(groupId: string): GroupEvent[] {
    return this.events.filter((e) => e.groupId === groupId);
  }

  /** waitFor resolves when `pred` holds, rejecting after `ms` with what was seen. */
  async waitFor(pred: (r: StreamReader) => boolean, ms = 5000, what = "condition"): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred(this)) {
      if (this.done && !pred(this)) {
        throw new Error(`stream ended before ${what}: ${String(this.error)} (items: ${this.items.length})`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what} (items: ${this.items.length})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** waitForEvents waits until at least `n` events of `groupId` arrived. */
  waitForEvents(groupId: string, n: number, ms = 5000): Promise<void> {
    return this.waitFor((r) => r.eventsOf(groupId).length >= n, ms, `${n} events of ${groupId}`);
  }

  /** waitReady waits for StreamReady. */
  waitReady(ms = 5000): Promise<void> {
    return this.waitFor((r) => r.items.some((i) => i.payload.case === "ready"), ms, "ready");
  }

  /** waitDone waits for the stream to end. */
  waitDone(ms = 5000): Promise<void> {
    return this.waitFor((r) => r.done, ms, "end of stream");
  }

  /** close cancels the stream from the client side. */
  close(): void {
    this.abort.abort();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/** subscribe opens a Subscribe stream for the clients' user. */
export function subscribe(c: Clients, cursors: Partial<GroupCursor>[] = []): StreamReader {
  return new StreamReader((signal) =>
    c.streams.subscribe(
      { cursors: cursors.map((x) => ({ groupId: x.groupId ?? "", seq: x.seq ?? 0n, epoch: x.epoch ?? "" })) },
      { signal },
    ),
  );
}

/** seqs lists the seqs of events as numbers. */
export function seqs(events: readonly GroupEvent[]): number[] {
  return events.map((e) => Number(e.seq));
}

/** GrpcJsStreamReader is a StreamReader over a grpc-js call, which it exposes (e.g. to pause reading). */
export interface GrpcJsStreamReader extends StreamReader {
  readonly call: grpc.ClientReadableStream<SubscribeResponse>;
}

/** grpcJsSubscribe opens Subscribe with a @grpc/grpc-js client (the gRPC fast path, as a mobile app would). */
export function grpcJsSubscribe(client: GrpcJsClient, token: string | undefined, cursors: Partial<GroupCursor>[] = []): GrpcJsStreamReader {
  let call: grpc.ClientReadableStream<SubscribeResponse> | undefined;
  const reader = new StreamReader((signal) => {
    const md = new grpc.Metadata();
    if (token) md.set("authorization", `Bearer ${token}`);
    const fn = client.subscribe as (req: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<SubscribeResponse>;
    const c = fn.call(client, { cursors: cursors.map((x) => ({ groupId: x.groupId ?? "", seq: x.seq ?? 0n, epoch: x.epoch ?? "" })) }, md);
    call = c;
    signal.addEventListener("abort", () => c.cancel(), { once: true });
    return c;
  });
  if (!call) throw new Error("grpc-js call was not started");
  return Object.assign(reader, { call });
}
