/**
 * Contract suite for the Presence port (services/core/ports.ts). Every
 * adapter (memory, Redis) runs it. Expiry runs on the real clock with short
 * TTLs and generous margins. Every test uses fresh user and holder ids.
 */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import { newId } from "../../services/core/ids.js";
import type { Presence } from "../../services/core/ports.js";

/** PresenceContractOptions tunes presenceContract for one adapter. */
export interface PresenceContractOptions {
  readonly skip?: boolean;
  /** cleanup runs once after the suite (delete the run's keys, close clients). */
  readonly cleanup?: () => Promise<void>;
}

const LONG = 60_000;

function sorted(s: ReadonlySet<string>): string[] {
  return [...s].sort();
}

/** presenceContract registers the Presence contract tests for one adapter; `make` is called once. */
export function presenceContract(name: string, make: () => Promise<Presence>, opts: PresenceContractOptions = {}): void {
  describe(`Presence contract: ${name}`, { skip: opts.skip ?? false }, () => {
    let presence: Presence;
    after(async () => {
      await opts.cleanup?.();
    });

    it("knows nobody at first, then exactly the users set online", async () => {
      presence ??= await make();
      const [a, b, c] = [newId(), newId(), newId()];
      assert.deepEqual(sorted(await presence.online([a, b, c])), []);
      await presence.setOnline("h1-" + a, [a, b], LONG);
      assert.deepEqual(sorted(await presence.online([a, b, c])), [a, b].sort());
      assert.deepEqual(sorted(await presence.online([])), []);
    });

    it("keeps a user online while any holder has them, and drops only the holder's own entry on setOffline", async () => {
      presence ??= await make();
      const u = newId();
      const [h1, h2] = [newId(), newId()];
      await presence.setOnline(h1, [u], LONG);
      await presence.setOnline(h2, [u], LONG);
      await presence.setOffline(h1, [u]);
      assert.deepEqual(sorted(await presence.online([u])), [u], "still held by h2");
      await presence.setOffline(h2, [u]);
      assert.deepEqual(sorted(await presence.online([u])), []);
      await presence.setOffline(h2, [u]); // idempotent
      await presence.setOffline(newId(), [newId()]); // unknown holder and user
    });

    it("expires an entry ttlMs after it was set, and a refresh extends it", async () => {
      presence ??= await make();
      const [stays, goes] = [newId(), newId()];
      const h = newId();
      await presence.setOnline(h, [stays, goes], 400);
      await sleep(250);
      await presence.setOnline(h, [stays], 400);
      await sleep(250);
      assert.deepEqual(sorted(await presence.online([stays, goes])), [stays], "goes expired; stays was refreshed");
      await sleep(300);
      assert.deepEqual(sorted(await presence.online([stays, goes])), []);
    });

    it("answers for many users at once", async () => {
      presence ??= await make();
      const users = Array.from({ length: 1_200 }, () => newId());
      const h = newId();
      await presence.setOnline(h, users.filter((_, i) => i % 3 === 0), LONG);
      const online = await presence.online(users);
      assert.equal(online.size, 400);
      assert.ok(users.every((u, i) => online.has(u) === (i % 3 === 0)));
      await presence.setOffline(h, users);
      assert.equal((await presence.online(users)).size, 0);
    });
  });
}
