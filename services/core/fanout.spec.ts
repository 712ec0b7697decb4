import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MemoryEventBus } from "../adapters/memory/memory-bus.js";
import { MemoryRecentMessages } from "../adapters/memory/memory-recent-messages.js";
import { ChatError } from "./errors.js";
import { Fanout } from "./fanout.js";
import type { GroupEvent } from "./model.js";
import type { EventBus, RecentMessages } from "./ports.js";

const event: GroupEvent = { groupId: "g", seq: 1, at: 0, actor: { id: "u", username: "u" }, body: { type: "group_renamed", name: "n" } };

describe("Fanout", () => {
  it("publishes through the bus", async () => {
    const bus = new MemoryEventBus();
    const got: number[] = [];
    await bus.subscribeGroup("g", (e) => got.push(e.seq));
    await new Fanout(bus).event(event);
    assert.deepEqual(got, [1]);
  });

  it("records the event as recent", async () => {
    const recent = new MemoryRecentMessages({ perGroup: 10, maxGroups: 10 });
    await new Fanout(new MemoryEventBus(), undefined, recent).event(event);
    assert.deepEqual((await recent.scan("g", { order: "asc", from: 1, to: 9, take: 9 })).window, { lo: 1, hi: 1 });
  });

  it("reports a failed publish or record instead of throwing: the write already happened", async () => {
    const down = () => Promise.reject(new ChatError("Unavailable", "down"));
    const bus = { publishEvent: down, publishUser: down } as unknown as EventBus;
    const recent = { record: down, scan: down } as unknown as RecentMessages;
    const errors: string[] = [];
    const fanout = new Fanout(bus, (_e, step) => errors.push(step), recent);
    await fanout.event(event);
    await fanout.notice("u", { type: "joined", groupId: "g", seq: 1 });
    assert.deepEqual(errors.sort(), ["publish", "publish", "recent"]);
  });
});
