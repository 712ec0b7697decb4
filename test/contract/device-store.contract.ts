/**
 * Contract suite for the DeviceStore port (services/core/ports.ts): users'
 * push targets, one registration per (kind, token), capped per user. Every
 * Store adapter runs it; it tests only what the port's doc comments promise.
 *
 * The suite may run against a shared, long-lived database: every test uses
 * fresh user ids and tokens.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { isChatError } from "../../services/core/errors.js";
import { newId } from "../../services/core/ids.js";
import type { Device, PushKind } from "../../services/core/model.js";
import type { DeviceStore } from "../../services/core/ports.js";

/** DeviceStoreFactory opens a DeviceStore on the adapter's database. */
export type DeviceStoreFactory = () => Promise<DeviceStore & { close(): Promise<void> }>;

/** DeviceStoreContractOptions adapt the suite to an adapter. */
export interface DeviceStoreContractOptions {
  readonly skip?: boolean;
}

const BASE = Date.UTC(2030, 0, 1);

/** device builds a fresh registration of `kind` for the user (its fields as the kind needs them). */
function device(userId: string, kind: PushKind = "fcm", createdAt = BASE, token = `tok-${newId()}`): Device {
  return {
    id: newId(),
    userId,
    kind,
    token: kind === "web_push" ? `https://push.example.com/send/${token}` : token,
    p256dh: kind === "web_push" ? `p-${newId()}` : "",
    auth: kind === "web_push" ? `a-${newId()}` : "",
    topic: kind === "apns" ? "com.example.chat" : "",
    createdAt,
  };
}

function ids(devices: readonly Device[]): string[] {
  return devices.map((d) => d.id);
}

/**
 * deviceStoreContract registers the DeviceStore contract tests for one
 * adapter; the suite closes the store it made.
 */
export function deviceStoreContract(name: string, make: DeviceStoreFactory, opts: DeviceStoreContractOptions = {}): void {
  describe(`DeviceStore contract: ${name}`, { skip: opts.skip ?? false }, () => {
    let store: DeviceStore & { close(): Promise<void> };

    before(async () => {
      store = await make();
    });

    after(async () => {
      await store?.close();
    });

    it("registers devices of each kind, lists them oldest first (then by id), and unregisters them", async () => {
      const user = newId();
      const web = device(user, "web_push", BASE + 20);
      const apns = device(user, "apns", BASE + 10);
      const fcmA = device(user, "fcm", BASE + 30);
      const fcmB = device(user, "fcm", BASE + 30);
      for (const d of [web, apns, fcmA, fcmB]) assert.deepEqual(await store.registerDevice(d, 10), d);
      const sameTime = [fcmA, fcmB].sort((a, b) => (a.id < b.id ? -1 : 1));
      assert.deepEqual(await store.listDevices(user), [apns, web, ...sameTime], "every field round-trips, in order");
      assert.deepEqual(await store.listDevices(newId()), [], "a user without devices");

      assert.equal(await store.unregisterDevice(user, web.id), true);
      assert.equal(await store.unregisterDevice(user, web.id), false, "already gone");
      assert.equal(await store.unregisterDevice(newId(), apns.id), false, "another user's device");
      assert.equal(await store.unregisterDevice(user, newId()), false, "unknown id");
      assert.deepEqual(ids(await store.listDevices(user)), ids([apns, ...sameTime]));
    });

    it("re-registering a token for the same user updates that device in place, keeping its id and creation time", async () => {
      const user = newId();
      const first = device(user, "web_push", BASE);
      await store.registerDevice(first, 10);
      const again: Device = { ...first, id: newId(), createdAt: BASE + 1000, p256dh: "new-key", auth: "new-auth" };
      const stored = await store.registerDevice(again, 10);
      assert.deepEqual(stored, { ...again, id: first.id, createdAt: first.createdAt });
      assert.deepEqual(await store.listDevices(user), [stored]);
    });

    it("the same token under another kind is another device", async () => {
      const user = newId();
      const fcm = device(user, "fcm", BASE);
      const apns = { ...device(user, "apns", BASE + 1), token: fcm.token };
      await store.registerDevice(fcm, 10);
      assert.deepEqual(await store.registerDevice(apns, 10), apns);
      assert.deepEqual(await store.listDevices(user), [fcm, apns]);
    });

    it("a token registered by another user moves to that user", async () => {
      const alice = newId();
      const bob = newId();
      const keep = device(alice, "apns", BASE);
      const moving = device(alice, "apns", BASE + 1);
      await store.registerDevice(keep, 10);
      await store.registerDevice(moving, 10);
      const bobs: Device = { ...moving, id: newId(), userId: bob, createdAt: BASE + 5, topic: "com.example.other" };
      assert.deepEqual(await store.registerDevice(bobs, 10), bobs, "a new device of bob's");
      assert.deepEqual(await store.listDevices(alice), [keep]);
      assert.deepEqual(await store.listDevices(bob), [bobs]);
      assert.equal(await store.unregisterDevice(alice, moving.id), false, "alice's registration is gone");
    });

    it("refuses a device beyond the cap with tooManyDevices (FailedPrecondition), writing nothing", async () => {
      const user = newId();
      const a = device(user, "fcm", BASE);
      const b = device(user, "fcm", BASE + 1);
      await store.registerDevice(a, 2);
      await store.registerDevice(b, 2);
      const c = device(user, "fcm", BASE + 2);
      await assert.rejects(
        store.registerDevice(c, 2),
        (e: unknown) => isChatError(e, "FailedPrecondition") && /2 push devices/.test((e as Error).message),
      );
      assert.deepEqual(await store.listDevices(user), [a, b]);

      // Taking over another user's token counts against the cap as well, and leaves the other user's registration.
      const other = newId();
      const theirs = device(other, "fcm", BASE);
      await store.registerDevice(theirs, 2);
      await assert.rejects(store.registerDevice({ ...theirs, id: newId(), userId: user }, 2), (e: unknown) => isChatError(e, "FailedPrecondition"));
      assert.deepEqual(await store.listDevices(other), [theirs]);
      assert.deepEqual(await store.listDevices(user), [a, b]);

      // Re-registering one of the user's own tokens is not a new device.
      const renewed = await store.registerDevice({ ...b, id: newId(), createdAt: BASE + 9 }, 2);
      assert.equal(renewed.id, b.id);
      // After unregistering one, there is room again.
      assert.equal(await store.unregisterDevice(user, a.id), true);
      assert.deepEqual(await store.registerDevice(c, 2), c);
      assert.deepEqual(ids(await store.listDevices(user)), [b.id, c.id]);
    });

    it("removeDeviceToken removes the device only while it has that token, and is a no-op once gone", async () => {
      const user = newId();
      const d = device(user, "web_push", BASE);
      await store.registerDevice(d, 10);
      await store.removeDeviceToken(user, d.id, `${d.token}/other`);
      assert.deepEqual(await store.listDevices(user), [d], "another token: kept");
      await store.removeDeviceToken(newId(), d.id, d.token);
      assert.deepEqual(await store.listDevices(user), [d], "another user: kept");
      await store.removeDeviceToken(user, d.id, d.token);
      assert.deepEqual(await store.listDevices(user), []);
      await store.removeDeviceToken(user, d.id, d.token);
      // The token is free: another user registers it as a device of their own.
      const next = { ...d, id: newId(), userId: newId() };
      assert.deepEqual(await store.registerDevice(next, 10), next);
      assert.deepEqual(await store.listDevices(next.userId), [next]);
    });
  });
}
