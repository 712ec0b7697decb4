/**
 * Contract suite for the PushLedger port (services/core/ports.ts): a push is
 * claimed by exactly one caller per (device, group, newest seq) while its
 * record lives, across store instances. Every Store adapter runs it.
 *
 * The suite may run against a shared, long-lived database: every test uses
 * fresh keys.
 */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { newId } from "../../services/core/ids.js";
import type { Clock, PushLedger } from "../../services/core/ports.js";

/** ClosablePushLedger is a ledger the suite closes when done. */
export type ClosablePushLedger = PushLedger & { close(): Promise<void> };

/**
 * PushLedgerFactory opens two store instances on one database (as two
 * processes would), both reading time from `clock` where the adapter uses a
 * clock at all.
 */
export type PushLedgerFactory = (clock: Clock) => Promise<readonly [ClosablePushLedger, ClosablePushLedger]>;

/** PushLedgerContractOptions adapt the suite to an adapter. */
export interface PushLedgerContractOptions {
  readonly skip?: boolean;
}

/** OffsetClock is the real clock moved forward by what `advance` added up. */
class OffsetClock implements Clock {
  private offset = 0;
  now(): number {
    return Date.now() + this.offset;
  }
  advance(ms: number): void {
    this.offset += ms;
  }
}

/**
 * pushLedgerContract registers the PushLedger contract tests for one
 * adapter; the suite closes the instances it made.
 */
export function pushLedgerContract(name: string, make: PushLedgerFactory, opts: PushLedgerContractOptions = {}): void {
  describe(`PushLedger contract: ${name}`, { skip: opts.skip ?? false }, () => {
    const clock = new OffsetClock();
    let a: ClosablePushLedger;
    let b: ClosablePushLedger;
    const MINUTE = 60_000;

    before(async () => {
      [a, b] = await make(clock);
    });

    after(async () => {
      await a?.close();
      await b?.close();
    });

    it("gives a key to the first claim only, on either instance", async () => {
      const device = newId();
      const group = newId();
      assert.equal(await a.claimPush(device, group, 7, MINUTE), true);
      assert.equal(await a.claimPush(device, group, 7, MINUTE), false);
      assert.equal(await b.claimPush(device, group, 7, MINUTE), false, "another instance");
    });

    it("gives a key to exactly one of 20 concurrent claims across two instances", async () => {
      for (let round = 0; round < 3; round++) {
        const device = newId();
        const group = newId();
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).claimPush(device, group, 42, MINUTE)));
        assert.equal(results.filter(Boolean).length, 1, `round ${round}: ${JSON.stringify(results)}`);
      }
    });

    it("keeps keys that differ in device, group or seq independent", async () => {
      const device = newId();
      const group = newId();
      assert.equal(await a.claimPush(device, group, 1, MINUTE), true);
      assert.equal(await b.claimPush(device, group, 2, MINUTE), true, "another seq");
      assert.equal(await a.claimPush(newId(), group, 1, MINUTE), true, "another device");
      assert.equal(await b.claimPush(device, newId(), 1, MINUTE), true, "another group");
      assert.equal(await a.claimPush(device, group, 1, MINUTE), false);
      assert.equal(await b.claimPush(device, group, 2, MINUTE), false);
    });

    it("lets a key be claimed again once its record expired, once", async () => {
      const device = newId();
      const group = newId();
      const ttl = 1000;
      assert.equal(await a.claimPush(device, group, 3, ttl), true);
      assert.equal(await b.claimPush(device, group, 3, ttl), false, "while the record lives");
      clock.advance(ttl + 500);
      // A store that expires by the clock frees it at once; one that expires by a server-side TTL after about ttl of real time.
      const deadline = Date.now() + 10_000;
      let again = false;
      while (!again && Date.now() < deadline) {
        again = await b.claimPush(device, group, 3, MINUTE);
        if (!again) await sleep(200);
      }
      assert.equal(again, true, "claimed again after expiry");
      assert.equal(await a.claimPush(device, group, 3, MINUTE), false, "the new record lives");
    });
  });
}
