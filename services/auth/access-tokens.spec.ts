import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isChatError } from "../core/errors.js";
import { AccessTokens } from "./access-tokens.js";

describe("AccessTokens.verify", () => {
  let dir: string;
  let tokens: AccessTokens;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "tokens-"));
    tokens = await AccessTokens.load(join(dir, "k.jwk"), { issuer: "chat", audience: "chat", ttlMs: 60_000 });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("gives the same principal on every call until the token expires, then refuses it", async () => {
    const now = Date.now();
    const { token, expiresAt } = await tokens.issue({ id: "u1", username: "ann" }, "s1", now);
    const first = await tokens.verify(token, now);
    assert.deepEqual(first, { userId: "u1", username: "ann", sessionId: "s1", expiresAt });
    assert.deepEqual(await tokens.verify(token, now + 1_000), first);
    await assert.rejects(tokens.verify(token, expiresAt), (e: unknown) => isChatError(e, "Unauthenticated") && /expired/.test(e.message));
    await assert.rejects(tokens.verify(token, expiresAt + 5_000), (e: unknown) => isChatError(e, "Unauthenticated"));
  });

  it("refuses a tampered copy of a token that verified", async () => {
    const now = Date.now();
    const { token } = await tokens.issue({ id: "u2", username: "bob" }, "s2", now);
    await tokens.verify(token, now);
    const [h, p, sig] = token.split(".") as [string, string, string];
    const flipped = `${h}.${p}.${sig.slice(0, -2)}${sig.endsWith("AA") ? "BA" : "AA"}`;
    await assert.rejects(tokens.verify(flipped, now), (e: unknown) => isChatError(e, "Unauthenticated"));
  });
});
