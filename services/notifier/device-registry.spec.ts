/**
 * DeviceRegistry on a real SQLite store: what it accepts is exactly what a
 * push service can use (keys that decode to what RFC 8291 encrypts with,
 * tokens of the right shape, endpoints under the policy), every refusal is
 * InvalidArgument naming the field, and devices and settings stay their
 * user's.
 */
import assert from "node:assert/strict";
import { createECDH, randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { MemoryMembershipCache } from "../adapters/memory/memory-membership-cache.js";
import { createSqliteStore } from "../adapters/sqlite/sqlite-store.js";
import { ChatError } from "../core/errors.js";
import { newId } from "../core/ids.js";
import { Membership } from "../core/membership.js";
import { type Store, systemClock } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import { DeviceRegistry, type DeviceTarget, checkApnsToken, checkAuthSecret, checkFcmToken, checkP256dh, decodeBase64Url } from "./device-registry.js";

function kindOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return e instanceof ChatError ? e.kind : "not a ChatError";
  }
  return undefined;
}

describe("device registry checks", () => {
  it("decodes base64url only: padded or not, no other alphabet, no impossible length", () => {
    const bytes = randomBytes(65);
    const text = bytes.toString("base64url");
    assert.deepEqual(decodeBase64Url(text), bytes);
    assert.deepEqual(decodeBase64Url(`${text}=`), bytes);
    assert.deepEqual(decodeBase64Url(""), Buffer.alloc(0));
    for (const bad of ["a+b/", "ab cd", "abcde", "ab=c", "a===", "ü"]) {
      assert.equal(decodeBase64Url(bad), undefined, bad);
    }
  });

  it("accepts a real subscription key and secret, and returns them unpadded", () => {
    const key = createECDH("prime256v1").generateKeys();
    assert.equal(checkP256dh(`${key.toString("base64url")}=`), key.toString("base64url"));
    const secret = randomBytes(16);
    assert.equal(checkAuthSecret(`${secret.toString("base64url")}==`), secret.toString("base64url"));
  });

  it("refuses keys a push could not be encrypted to", () => {
    const key = createECDH("prime256v1").generateKeys();
    const compressed = createECDH("prime256v1");
    compressed.generateKeys();
    const offCurve = Buffer.from(key);
    offCurve[64] = (offCurve[64] ?? 0) ^ 1;
    const wrongPrefix = Buffer.from(key);
    wrongPrefix[0] = 0x05;
    for (const bad of [
      "",
      key.subarray(1).toString("base64url"),
      compressed.getPublicKey(undefined, "compressed").toString("base64url"),
      offCurve.toString("base64url"),
      wrongPrefix.toString("base64url"),
      `+${key.toString("base64url").slice(1)}`, // + and / are base64, not base64url
    ]) {
      assert.equal(kindOf(() => checkP256dh(bad)), "InvalidArgument", bad);
    }
    for (const bad of ["", randomBytes(15).toString("base64url"), randomBytes(17).toString("base64url"), "****"]) {
      assert.equal(kindOf(() => checkAuthSecret(bad)), "InvalidArgument", bad);
    }
  });

  it("bounds FCM and APNs tokens as documented", () => {
    assert.equal(checkFcmToken("a".repeat(4096)).length, 4096);
    assert.equal(checkFcmToken("x"), "x");
    for (const bad of ["", "a".repeat(4097), "a b", "tab\there", "é"]) assert.equal(kindOf(() => checkFcmToken(bad)), "InvalidArgument", bad);
    assert.equal(checkApnsToken("AB".repeat(32)), "ab".repeat(32));
    assert.equal(checkApnsToken("0".repeat(200)).length, 200);
    for (const bad of ["", "0".repeat(63), "0".repeat(201), `${"0".repeat(63)}g`, `${"0".repeat(64)} `]) {
      assert.equal(kindOf(() => checkApnsToken(bad)), "InvalidArgument", bad);
    }
  });
});

describe("DeviceRegistry", () => {
  let store: Store;
  let registry: DeviceRegistry;
  before(() => {
    store = createSqliteStore({ path: ":memory:", retentionMs: 86_400_000, clock: systemClock });
    registry = new DeviceRegistry({
      store,
      membership: new Membership(store, new MemoryMembershipCache()),
      clock: systemClock,
      settings: { maxDevices: 2, endpointPolicy: { allowPrivate: false } },
    });
  });
  after(() => store.close());

  async function user(): Promise<Principal> {
    const id = newId();
    const username = `u${id.slice(-12)}`;
    await store.createUser({ id, username, passwordHash: "$argon2id$x", createdAt: Date.now() });
    return { userId: id, username, sessionId: newId(), expiresAt: Date.now() + 3_600_000 };
  }

  const web = (endpoint: string): DeviceTarget => ({
    kind: "web_push",
    endpoint,
    p256dh: createECDH("prime256v1").generateKeys().toString("base64url"),
    auth: randomBytes(16).toString("base64url"),
  });

  it("stores what it checked, keeps devices per user, and caps them", async () => {
    const alice = await user();
    const bob = await user();
    const d1 = await registry.register(alice, web("https://push.example.com/1"));
    assert.equal(d1.kind, "web_push");
    assert.equal(d1.userId, alice.userId);
    const d2 = await registry.register(alice, { kind: "apns", deviceToken: "AA".repeat(32), topic: "com.example.app" });
    assert.deepEqual([d2.token, d2.topic], ["aa".repeat(32), "com.example.app"]);
    const full = await registry.register(alice, { kind: "fcm", token: "tok" }).catch((e: unknown) => e);
    assert.ok(full instanceof ChatError && full.kind === "FailedPrecondition", String(full));
    assert.deepEqual(
      (await registry.list(alice)).map((d) => d.id),
      [d1.id, d2.id],
    );
    assert.deepEqual(await registry.list(bob), []);
    await assert.rejects(registry.unregister(bob, d1.id), (e) => e instanceof ChatError && e.kind === "NotFound");
    await registry.unregister(alice, d1.id);
    await assert.rejects(registry.unregister(alice, d1.id), (e) => e instanceof ChatError && e.kind === "NotFound");
    for (const endpoint of ["http://push.example.com/1", "https://10.0.0.1/x", "https://[::1]/x"]) {
      await assert.rejects(registry.register(alice, web(endpoint)), (e) => e instanceof ChatError && e.kind === "InvalidArgument" && e.message.startsWith("web_push.endpoint"));
    }
    await assert.rejects(registry.register(alice, undefined), (e) => e instanceof ChatError && e.kind === "InvalidArgument");
  });

  it("sets notifications for members only; a mute in the past is no mute", async () => {
    const alice = await user();
    const eve = await user();
    const event = await store.createGroup({ id: newId(), name: "g", epoch: newId(), createdAt: Date.now(), owner: { id: alice.userId, username: alice.username } });
    const gid = event.groupId;
    const future = Date.now() + 60_000;
    assert.deepEqual(await registry.setGroupNotifications(alice, gid, { level: "all", mutedUntil: future }), { level: "all", mutedUntil: future });
    assert.deepEqual((await store.readStatesOfUser(alice.userId, [gid])).get(gid)?.notify, { level: "all", mutedUntil: future });
    assert.deepEqual(await registry.setGroupNotifications(alice, gid, { level: "none", mutedUntil: Date.now() - 1 }), { level: "none", mutedUntil: 0 });
    await assert.rejects(registry.setGroupNotifications(alice, gid, { level: undefined, mutedUntil: 0 }), (e) => e instanceof ChatError && e.kind === "InvalidArgument");
    await assert.rejects(registry.setGroupNotifications(eve, gid, { level: "none", mutedUntil: 0 }), (e) => e instanceof ChatError && e.kind === "NotFound");
    assert.equal((await store.readStatesOfUser(eve.userId, [gid])).size, 0, "nothing stored for a non-member");
  });
});
