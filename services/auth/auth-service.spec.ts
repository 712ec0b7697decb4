/**
 * AuthService.refresh (on a real SQLite store): against revocations it races
 * (a session that was revoked stays revoked whatever a concurrent or
 * half-finished revocation missed), and a used token presented again (the
 * same answer within the grace while its successor is unused, else theft).
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
import { type Clock, type Store, systemClock } from "../core/ports.js";
import { AccessTokens } from "./access-tokens.js";
import { AuthService, hashToken } from "./auth-service.js";

const LIMIT = { burst: 1000, perSecond: 1000 };

/**
 * holdingInserts wraps a store so that, once hold(familyId) was called, the first insert of a refresh token of that
 * family stops before it is stored: atInsert resolves with the record, and the insert goes on at release().
 */
function holdingInserts(inner: Store): { store: Store; hold(familyId: string): void; atInsert: Promise<RefreshTokenRecord>; release(): void } {
  let held: string | undefined;
  let reached: (r: RefreshTokenRecord) => void = () => {};
  let open: () => void = () => {};
  const atInsert = new Promise<RefreshTokenRecord>((resolve) => {
    reached = resolve;
  });
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const store = Object.assign(Object.create(inner) as Store, {
    insertRefreshToken: async (r: RefreshTokenRecord) => {
      if (r.familyId === held) {
        held = undefined;
        reached(r);
        await gate;
      }
      return inner.insertRefreshToken(r);
    },
  });
  return { store, hold: (familyId) => void (held = familyId), atInsert, release: open };
}

describe("AuthService.refresh", () => {
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

  function service(s: Store, refreshReuseGraceMs = 60_000, clock: Clock = systemClock): AuthService {
    return new AuthService({
      store: s,
      tokens,
      limiter: new MemoryRateLimiter(),
      fanout: new Fanout(new MemoryEventBus()),
      clock,
      settings: { refreshTtlMs: 30 * 86_400_000, refreshReuseGraceMs, loginPerUsername: LIMIT, loginPerAddress: LIMIT, registerPerAddress: LIMIT },
    });
  }

  it("the winner of two refreshes of one token gets nothing if the loser's revocation missed its new token", async () => {
    // The winner stops after marking T1 used, before inserting T2: the loser's revocation reads the family then.
    const racing = holdingInserts(store);
    const auth = service(racing.store, 0); // no grace: the loser's second use revokes at once
    const { session } = await auth.register(`race${Date.now()}`, "a long enough password", "127.0.0.1");
    const familyId = (await store.findRefreshToken(hashToken(session.refreshToken)))?.familyId;
    assert.ok(familyId);
    racing.hold(familyId);
    const winner = auth.refresh(session.refreshToken);
    winner.catch(() => {});
    const inserted = await racing.atInsert;
    await assert.rejects(auth.refresh(session.refreshToken), (e: unknown) => isChatError(e, "Unauthenticated") && /already used/.test(e.message));
    racing.release();
    await assert.rejects(winner, (e: unknown) => isChatError(e, "Unauthenticated") && /revoked/.test(e.message), "the winner gets no session");
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

  it("a used token presented again within the grace gets the same successor and a new access token; the session lives on", async () => {
    const auth = service(store);
    const { session } = await auth.register(`lost${Date.now()}`, "a long enough password", "127.0.0.1");
    const first = await auth.refresh(session.refreshToken);
    // The client never saw `first` (the answer was lost) and retries with the token it holds.
    const again = await auth.refresh(session.refreshToken);
    assert.equal(again.refreshToken, first.refreshToken, "the same successor");
    assert.equal(again.refreshTokenExpiresAt, first.refreshTokenExpiresAt);
    assert.notEqual(again.accessToken, first.accessToken, "a new access token");
    assert.equal((await tokens.verify(again.accessToken, Date.now())).sessionId, (await tokens.verify(first.accessToken, Date.now())).sessionId);
    const record = await store.findRefreshToken(hashToken(session.refreshToken));
    assert.ok(record);
    assert.equal(await store.isSessionRevoked(record.familyId), false);
    // The successor works once, as every refresh token.
    const next = await auth.refresh(again.refreshToken);
    assert.notEqual(next.refreshToken, again.refreshToken);
  });

  it("once its successor was used, a second use of a token revokes the session", async () => {
    const auth = service(store);
    const { session } = await auth.register(`theft${Date.now()}`, "a long enough password", "127.0.0.1");
    const stolen = await auth.refresh(session.refreshToken); // the thief rotates the token it stole...
    const thiefsNext = await auth.refresh(stolen.refreshToken); // ...and goes on using the session
    await assert.rejects(auth.refresh(session.refreshToken), (e: unknown) => isChatError(e, "Unauthenticated") && /already used/.test(e.message));
    await assert.rejects(auth.refresh(thiefsNext.refreshToken), (e: unknown) => isChatError(e, "Unauthenticated") && /revoked/.test(e.message));
  });

  it("past the grace, a second use of a token revokes the session even if its successor is unused", async () => {
    let now = Date.now();
    const auth = service(store, 60_000, { now: () => now });
    const { session } = await auth.register(`late${Date.now()}`, "a long enough password", "127.0.0.1");
    const first = await auth.refresh(session.refreshToken);
    now += 60_001;
    await assert.rejects(auth.refresh(session.refreshToken), (e: unknown) => isChatError(e, "Unauthenticated") && /already used/.test(e.message));
    await assert.rejects(auth.refresh(first.refreshToken), (e: unknown) => isChatError(e, "Unauthenticated") && /revoked/.test(e.message));
  });

  it("a second use while the first refresh is still storing its successor is told to retry, and the retry gets the answer", async () => {
    const slow = holdingInserts(store);
    const auth = service(slow.store);
    const { session } = await auth.register(`slow${Date.now()}`, "a long enough password", "127.0.0.1");
    const familyId = (await store.findRefreshToken(hashToken(session.refreshToken)))?.familyId;
    assert.ok(familyId);
    slow.hold(familyId);
    const first = auth.refresh(session.refreshToken);
    await slow.atInsert;
    await assert.rejects(auth.refresh(session.refreshToken), (e: unknown) => isChatError(e, "Unavailable") && /in progress/.test(e.message));
    slow.release();
    const answer = await first;
    assert.equal((await auth.refresh(session.refreshToken)).refreshToken, answer.refreshToken);
  });

  it("without a grace, every second use revokes the session, even in the same millisecond", async () => {
    const now = Date.now();
    const auth = service(store, 0, { now: () => now });
    const { session } = await auth.register(`strict${Date.now()}`, "a long enough password", "127.0.0.1");
    const first = await auth.refresh(session.refreshToken);
    await assert.rejects(auth.refresh(session.refreshToken), (e: unknown) => isChatError(e, "Unauthenticated") && /already used/.test(e.message));
    await assert.rejects(auth.refresh(first.refreshToken), (e: unknown) => isChatError(e, "Unauthenticated") && /revoked/.test(e.message));
  });

  it("derives each successor with the signing key: another key gives another successor", async () => {
    const other = await AccessTokens.load(join(dir, "other.jwk"), { issuer: "chat", audience: "chat", ttlMs: 60_000 });
    assert.notDeepEqual(other.derivedKey("chat refresh-token successor v1"), tokens.derivedKey("chat refresh-token successor v1"));
    assert.deepEqual(tokens.derivedKey("chat refresh-token successor v1"), tokens.derivedKey("chat refresh-token successor v1"));
    assert.notDeepEqual(tokens.derivedKey("chat refresh-token successor v1"), tokens.derivedKey("another purpose"));
    const auth = service(store);
    const { session } = await auth.register(`derive${Date.now()}`, "a long enough password", "127.0.0.1");
    assert.notEqual((await auth.refresh(session.refreshToken)).refreshToken, session.refreshToken);
  });
});
