/**
 * AuthService.refresh against revocations it races (on a real SQLite store):
 * a session that was revoked stays revoked whatever a concurrent or
 * half-finished revocation missed.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { MemoryEventBus } from "../adapters/memory/memory-bus.js";
import { MemoryRateLimiter } from "../adapters/memory/memory-rate-limiter.js";
import { createSqliteStore } from "../adapters/sqlite/sqlite-store.js";
import { isChatError } from "../core/errors.js";
import { Fanout } from "../core/fanout.js";
import type { RefreshTokenRecord } from "../core/model.js";
import { type Store, systemClock } from "../core/ports.js";
import { AccessTokens } from "./access-tokens.js";
import { AuthService, hashToken } from "./auth-service.js";

const LIMIT = { burst: 1000, perSecond: 1000 };

describe("AuthService.refresh racing a revocation", () => {
  let dir: string;
  let store: Store;
  let tokens: AccessTokens;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "auth-"));
    store = createSqliteStore({ path: ":memory:", retentionMs: 86_400_000, clock: systemClock });
    tokens = await AccessTokens.load(join(dir, "k.jwk"), { issuer: "chat", audience: "chat", ttlMs: 60_000 });
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  function service(s: Store): AuthService {
    return new AuthService({
      store: s,
      tokens,
      limiter: new MemoryRateLimiter(),
      fanout: new Fanout(new MemoryEventBus()),
      clock: systemClock,
      settings: { refreshTtlMs: 30 * 86_400_000, loginPerUsername: LIMIT, loginPerAddress: LIMIT, registerPerAddress: LIMIT },
    });
  }

  it("the winner of two refreshes of one token gets nothing if the loser's revocation missed its new token", async () => {
    let reached: (() => void) | undefined;
    let release: (() => void) | undefined;
    const atInsert = new Promise<void>((resolve) => {
      reached = resolve;
    });
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let hold: string | undefined;
    let inserted: RefreshTokenRecord | undefined;
    // The winner stops after marking T1 used, before inserting T2: the loser's revocation reads the family then.
    const racing = Object.assign(Object.create(store) as Store, {
      insertRefreshToken: async (r: RefreshTokenRecord) => {
        if (r.familyId === hold) {
          inserted = r;
          reached?.();
          await gate;
        }
        return store.insertRefreshToken(r);
      },
    });
    const auth = service(racing);
    const { session } = await auth.register(`race${Date.now()}`, "a long enough password", "127.0.0.1");
    const familyId = (await store.findRefreshToken(hashToken(session.refreshToken)))?.familyId;
    assert.ok(familyId);
    hold = familyId;
    const winner = auth.refresh(session.refreshToken);
    winner.catch(() => {});
    await atInsert;
    await assert.rejects(auth.refresh(session.refreshToken), (e: unknown) => isChatError(e, "Unauthenticated") && /already used/.test(e.message));
    hold = undefined;
    release?.();
    await assert.rejects(winner, (e: unknown) => isChatError(e, "Unauthenticated") && /revoked/.test(e.message), "the winner gets no session");
    assert.ok(inserted);
    assert.notEqual((await store.findRefreshToken(inserted.tokenHash))?.revokedAt, null, "its new token was revoked too");
    assert.equal(await store.isSessionRevoked(familyId), true);
  });

  it("refuses to refresh a session whose revocation was cut short (marked revoked, its tokens not yet)", async () => {
    const auth = service(store);
    const { session } = await auth.register(`cut${Date.now()}`, "a long enough password", "127.0.0.1");
    const record = await store.findRefreshToken(hashToken(session.refreshToken));
    assert.ok(record);
    // The session mark was written, then the revoker died before updating the tokens.
    const cut = Object.assign(Object.create(store) as Store, {
      isSessionRevoked: async (id: string) => id === record.familyId || store.isSessionRevoked(id),
    });
    await assert.rejects(service(cut).refresh(session.refreshToken), (e: unknown) => isChatError(e, "Unauthenticated") && /revoked/.test(e.message));
    assert.notEqual((await store.findRefreshToken(record.tokenHash))?.revokedAt, null, "the revocation was finished");
  });
});
