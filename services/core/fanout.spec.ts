import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MemoryEventBus } from "../adapters/memory/memory-bus.js";
import { ChatError } from "./errors.js";
import { Fanout } from "./fanout.js";
import type { GroupEvent } from "./model.js";
import type { EventBus } from "./ports.js";

const event: GroupEvent = { groupId: "g", seq: 1, at: 0, actor: { id: "u", username: "u" }, body: { type: "group_renamed", name: "n" } };

describe("Fanout", () => {
  it("publishes through the bus", async () => {
    const bus = new MemoryEventBus();
    const got: number[] = [];
    await bus.subscribeGroup("g", (e) => got.push(e.seq));
    await new Fanout(bus).event(event);
    assert.deepEqual(got, [1]);
  });

  it("reports a failed publish instead of throwing: the write already happened", async () => {
    const down = () => Promise.reject(new ChatError("Unavailable", "bus down"));
    const bus = { publishEvent: down, publishUser: down } as unknown as EventBus;
    const errors: unknown[] = [];
    const fanout = new Fanout(bus, (e) => errors.push(e));
    await fanout.event(event);
    await fanout.notice("u", { type: "joined", groupId: "g", seq: 1 });
    assert.equal(errors.length, 2);
  });
});
