/**
 * StreamReader consumes a Subscribe (or Connect) stream in the background
 * and lets a test wait for items with a timeout.
 */
import type { GroupEvent } from "../../gen/chat/v1/message_pb.js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type GroupCursor, type SubscribeResponse, SubscribeRequestSchema, SubscribeResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import WebSocket from "ws";
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

/** WsStreamEnd is how a WebSocket Subscribe ended: the close code, and the gRPC status it stands for (code - 4000). */
export class WsStreamEnd extends Error {
  constructor(
    readonly closeCode: number,
    readonly reason: string,
  ) {
    super(`websocket closed ${closeCode}: ${reason}`);
  }

  /** code is the gRPC status code of an error close (4000 + code), else undefined. */
  get code(): number | undefined {
    return this.closeCode >= 4000 && this.closeCode < 4100 ? this.closeCode - 4000 : undefined;
  }
}

/** WsStreamReader is a StreamReader over Subscribe on WebSocket, which it exposes (e.g. to pause reading). */
export interface WsStreamReader extends StreamReader {
  readonly ws: WebSocket;
}

/**
 * wsSubscribe opens Subscribe over WebSocket (services/wire/ws-subscribe.ts)
 * as a client of the documented contract would: the token in the
 * authorization header or, as browsers must, in a `bearer.<token>`
 * subprotocol. A close other than 1000 ends the reader with a WsStreamEnd.
 */
export function wsSubscribe(
  port: number,
  token: string | undefined,
  cursors: Partial<GroupCursor>[] = [],
  opts: { via?: "header" | "protocol"; protocols?: string[]; tls?: { ca: string; alpn?: string[] } } = {},
): WsStreamReader {
  const via = opts.via ?? "header";
  const protocols = opts.protocols ?? ["chat.v1.proto", ...(token && via === "protocol" ? [`bearer.${token}`] : [])];
  const headers: Record<string, string> = token && via === "header" ? { authorization: `Bearer ${token}` } : {};
  // With tls: wss:// trusting its CA; ws hands the options on to tls.connect, ALPNProtocols included.
  const secure = opts.tls ? { ca: opts.tls.ca, ...(opts.tls.alpn ? { ALPNProtocols: opts.tls.alpn } : {}) } : {};
  const url = `${opts.tls ? "wss" : "ws"}://127.0.0.1:${port}/chat.v1.StreamService/Subscribe`;
  const ws = new WebSocket(url, protocols, { headers, perMessageDeflate: false, ...secure });
  const request = toBinary(
    SubscribeRequestSchema,
    create(SubscribeRequestSchema, { cursors: cursors.map((x) => ({ groupId: x.groupId ?? "", seq: x.seq ?? 0n, epoch: x.epoch ?? "" })) }),
  );
  ws.on("open", () => ws.send(request));
  const reader = new StreamReader((signal) => wsItems(ws, signal));
  return Object.assign(reader, { ws });
}

async function* wsItems(ws: WebSocket, signal: AbortSignal): AsyncIterable<SubscribeResponse> {
  const queue: SubscribeResponse[] = [];
  let end: { error?: unknown } | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  ws.on("message", (data) => {
    queue.push(fromBinary(SubscribeResponseSchema, data as Buffer));
    notify();
  });
  ws.on("error", (e) => {
    end ??= { error: e };
    notify();
  });
  ws.on("close", (code, reason) => {
    end ??= code === 1000 ? {} : { error: new WsStreamEnd(code, reason.toString()) };
    notify();
  });
  signal.addEventListener("abort", () => ws.close(1000), { once: true });
  for (;;) {
    const item = queue.shift();
    if (item) {
      yield item;
      continue;
    }
    if (end) {
      if (end.error) throw end.error;
      return;
    }
    await new Promise<void>((resolve) => {
      wake = resolve;
    });
  }
}
