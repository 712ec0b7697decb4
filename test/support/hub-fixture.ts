/** A hub on an in-memory SQLite store and an in-process bus, for the delivery and wire unit tests (not a test itself). */
import { MemoryEventBus } from "../../services/adapters/memory/memory-bus.js";
import { createSqliteStore } from "../../services/adapters/sqlite/sqlite-store.js";
import type { ChatError } from "../../services/core/errors.js";
import { type Store, systemClock } from "../../services/core/ports.js";
import type { OutboundItem, StreamSink } from "../../services/delivery/outbound.js";
import { type HubSettings, StreamHub } from "../../services/delivery/stream-hub.js";

/** HubFixture is what createHubFixture returns. */
export interface HubFixture {
  readonly store: Store;
  readonly bus: MemoryEventBus;
  readonly hub: StreamHub;
  close(): Promise<void>;
}

/** createHubFixture builds a hub with test settings (heartbeats every minute, 1 MiB buffers), overridable. */
export function createHubFixture(settings: Partial<HubSettings> = {}): HubFixture {
  const store = createSqliteStore({ path: ":memory:", retentionMs: 86_400_000, clock: systemClock });
  const bus = new MemoryEventBus();
  const hub = new StreamHub({
    store,
    bus,
    clock: systemClock,
    settings: { heartbeatMs: 60_000, bufferMaxBytes: 1 << 20, catchUpBatch: 100, ...settings },
  });
  return {
    store,
    bus,
    hub,
    async close() {
      hub.shutdown();
      await store.close();
    },
  };
}

/** RecordingSink keeps what the hub wrote, like a client that reads instantly. */
export class RecordingSink implements StreamSink {
  readonly items: OutboundItem[] = [];
  ended: { error: ChatError | undefined } | undefined;
  bufferedBytes = 0;
  write(item: OutboundItem): void {
    if (!this.ended) this.items.push(item);
  }
  drained(): Promise<void> {
    return Promise.resolve();
  }
  end(error?: ChatError): void {
    this.ended ??= { error };
  }
  /** eventMessages lists the message events written for the group as [seq, message id] (which event came at each seq). */
  eventMessages(groupId: string): [number, string][] {
    return this.items.flatMap((i) => {
      const p = i.message.payload;
      return p.case === "event" && p.value.groupId === groupId && p.value.kind.case === "message" ? [[Number(p.value.seq), p.value.kind.value.messageId] as [number, string]] : [];
    });
  }
  eventSeqs(groupId: string): number[] {
    return this.items.flatMap((i) =>
      i.message.payload.case === "event" && i.message.payload.value.groupId === groupId ? [Number(i.message.payload.value.seq)] : [],
    );
  }
}
