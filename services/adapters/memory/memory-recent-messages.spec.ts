import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { recentMessagesContract } from "../../../test/contract/recent-messages.contract.js";
import type { GroupEvent } from "../../core/model.js";
import { MemoryRecentMessages } from "./memory-recent-messages.js";

recentMessagesContract("memory", async (perGroup) => new MemoryRecentMessages({ perGroup, maxGroups: 1_000 }));

describe("MemoryRecentMessages", () => {
  const event = (groupId: string, seq: number): GroupEvent => ({
    groupId,
    seq,
    at: seq,
    actor: { id: "u", username: "u" },
    body: { type: "group_renamed", name: "n" },
  });

  it("drops the least recently written group past maxGroups", async () => {
    const recent = new MemoryRecentMessages({ perGroup: 10, maxGroups: 2 });
    await recent.record(event("a", 1));
    await recent.record(event("b", 1));
    await recent.record(event("a", 2));
    await recent.record(event("c", 1));
    const known = async (g: string) => (await recent.scan(g, { order: "asc", from: 1, to: 10, take: 1 })).window !== undefined;
    assert.deepEqual([await known("a"), await known("b"), await known("c")], [true, false, true]);
  });
});
