/**
 * The Timeline contract on the embedded deployment: SQLite (one file, each
 * writer its own connection, as two processes would have) with in-process
 * delivery (one MemoryEventBus).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timelineContract } from "../../../test/contract/timeline.contract.js";
import { systemClock } from "../../core/ports.js";
import { StoreTimeline } from "../../core/timeline.js";
import { MemoryEventBus } from "../memory/memory-bus.js";
import { createSqliteStore } from "./sqlite-store.js";

timelineContract("embedded (SQLite + in-process delivery)", async () => {
  const dir = await mkdtemp(join(tmpdir(), "chat-timeline-"));
  const path = join(dir, "chat.db");
  const bus = new MemoryEventBus();
  return {
    async open(fault) {
      const store = createSqliteStore({ path, retentionMs: 30 * 86_400_000, clock: systemClock });
      return { store, timeline: new StoreTimeline(store, bus, fault ? { fault } : {}), close: () => store.close() };
    },
    async dispose() {
      await bus.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
