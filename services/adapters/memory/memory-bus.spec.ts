import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { eventBusContract } from "../../../test/contract/event-bus.contract.js";
import { newId } from "../../core/ids.js";
import type { GroupEvent } from "../../core/model.js";
import { MemoryEventBus } from "./memory-bus.js";

// In process, two buses reach each other only if they are one instance.
eventBusContract("memory", async () => new MemoryEventBus(), {
  makePair: async () => {
    const bus = new MemoryEventBus();
    return [bus, bus];
  },
});

function event(groupId: string, seq: number): GroupEvent {
  return { groupId, seq, at: seq, actor: { id: "a", username: "a" }, body: { type: "group_renamed", name: `n${seq}` } };
}

describe("MemoryEventBus", () => {
  it("delivers exactly once and before publishEvent resolves", async () => {
    const bus = new MemoryEventBus();
    const g = newId();
    const seen: number[] = [];
    await bus.subscribeGroup(g, (e) => seen.push(e.seq));
    for (let seq = 1; seq <= 3; seq++) {
      await bus.publishEvent(event(g, seq));
      assert.deepEqual(seen, Array.from({ length: seq }, (_, i) => i + 1));
    }
    await bus.close();
  });

  it("gives the same handler subscribed twice two independent subscriptions", async () => {
    const bus = new MemoryEventBus();
    const g = newId();
    const seen: number[] = [];
    const handler = (e: GroupEvent) => seen.push(e.seq);
    const first = await bus.subscribeGroup(g, handler);
    await bus.subscribeGroup(g, handler);
    await bus.publishEvent(event(g, 1));
    first.unsubscribe();
    await bus.publishEvent(event(g, 2));
    assert.deepEqual(seen, [1, 1, 2]);
    await bus.close();
  });

  it("skips the remaining handlers of an event when a handler closes the bus", async () => {
    const bus = new MemoryEventBus();
    const g = newId();
    const seen: string[] = [];
    await bus.subscribeGroup(g, () => {
      seen.push("closer");
      void bus.close();
    });
    await bus.subscribeGroup(g, () => seen.push("other"));
    await bus.publishEvent(event(g, 1));
    await bus.publishEvent(event(g, 2));
    assert.deepEqual(seen, ["closer"]);
  });
});
