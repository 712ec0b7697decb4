import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ChatError } from "./errors.js";
import { Membership } from "./membership.js";
import type { Member } from "./model.js";
import type { MembershipCache } from "./ports.js";

const down = () => Promise.reject(new ChatError("Unavailable", "cache down"));
const brokenCache: MembershipCache = { getRole: down, setRole: down, invalidate: down };

describe("Membership", () => {
  it("answers from the store when the cache fails, and reports each failure", async () => {
    const member: Member = { groupId: "g", user: { id: "u", username: "u" }, role: "admin", joinedAt: 0, ackedSeq: 0 };
    const errors: unknown[] = [];
    const m = new Membership({ getMember: async (g, u) => (g === "g" && u === "u" ? member : undefined) }, brokenCache, (e) => errors.push(e));
    assert.equal(await m.roleOf("g", "u"), "admin");
    assert.equal(await m.roleOf("g", "stranger"), null);
    await assert.rejects(m.requireMember("g", "stranger"), (e: ChatError) => e.kind === "NotFound");
    await m.changed("g", "u");
    assert.ok(errors.length >= 5);
  });
});
