/**
 * The notifier on a real SQLite store and the in-process presence, driven
 * event by event through a hand-held EventFeed (the test plays the feed:
 * it hands out events and sees when each handler's promise settles) and
 * recording senders with scripted outcomes. The real feeds, senders and
 * push services are tested end to end in test/e2e/push.spec.ts.
 */
import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import { MemoryPresence } from "../adapters/memory/memory-presence.js";
import { createSqliteStore } from "../adapters/sqlite/sqlite-store.js";
import { newId } from "../core/ids.js";
import type { Device, GroupEvent, PushKind, UserRef } from "../core/model.js";
import { type EventFeed, type PushContent, type PushOutcome, type PushSender, type Store, type Subscription, systemClock } from "../core/ports.js";
import { FOLLOWER_NAME, Notifier, type NotifierObserver, type NotifierSettings } from "./notifier.js";
import type { PushFailReason } from "./push-delivery.js";
import type { SkipReason } from "./push-plan.js";

const silent = { error() {}, warn() {}, info() {}, debug() {} };

/** HandFeed is an EventFeed the test drives: `hand` gives one event to the follower and returns its handler's promise. */
class HandFeed implements EventFeed {
  handler: ((event: GroupEvent) => Promise<void>) | undefined;
  followed: { name: string; maxPending: number; ackWaitMs: number } | undefined;
  unsubscribed = false;

  async follow(name: string, handler: (event: GroupEvent) => Promise<void>, opts: { maxPending: number; ackWaitMs: number }): Promise<Subscription> {
    this.handler = handler;
    this.followed = { name, ...opts };
    return { unsubscribe: () => (this.unsubscribed = true) };
  }

  hand(event: GroupEvent): Promise<void> {
    assert.ok(this.handler, "the notifier follows the feed");
    return this.handler(event);
  }
}

/** ScriptedSender records every attempt and answers from its script (then "sent"). */
class ScriptedSender implements PushSender {
  readonly attempts: { device: Device; content: PushContent; at: number }[] = [];
  constructor(
    readonly kind: PushKind,
    private readonly script: PushOutcome[] = [],
  ) {}

  async send(device: Device, content: PushContent): Promise<PushOutcome> {
    this.attempts.push({ device, content, at: Date.now() });
    return this.script.shift() ?? { kind: "sent" };
  }

  get sent(): PushContent[] {
    return this.attempts.map((a) => a.content);
  }
}

/** Recorder is a NotifierObserver that keeps counts by name. */
class Recorder implements NotifierObserver {
  readonly counts = new Map<string, number>();
  private add(key: string, n = 1) {
    this.counts.set(key, (this.counts.get(key) ?? 0) + n);
  }
  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }
  pushSent(kind: PushKind): void {
    this.add(`sent:${kind}`);
  }
  pushRetried(kind: PushKind): void {
    this.add(`retried:${kind}`);
  }
  pushFailed(kind: PushKind, reason: PushFailReason): void {
    this.add(`failed:${kind}:${reason}`);
  }
  deviceRemoved(kind: PushKind): void {
    this.add(`removed:${kind}`);
  }
  memberSkipped(reason: SkipReason, members: number): void {
    this.add(`skipped:${reason}`, members);
  }
  flushed(result: "ok" | "error"): void {
    this.add(`flush:${result}`);
  }
}

const SETTINGS: NotifierSettings = {
  windowMs: 30,
  maxPending: 1000,
  ackWaitMs: 60_000,
  retry: { maxAttempts: 3, baseMs: 5, windowMs: 5_000 },
  claimTtlMs: 86_400_000,
  maxGroupMembers: 1000,
  maxGroupsPerUser: 100,
  concurrency: 4,
};

describe("Notifier", () => {
  let store: Store;
  let presence: MemoryPresence;
  const running: Notifier[] = [];
  before(() => {
    store = createSqliteStore({ path: ":memory:", retentionMs: 86_400_000, clock: systemClock });
    presence = new MemoryPresence();
  });
  afterEach(async () => {
    for (const n of running.splice(0)) await n.stop(1000);
  });
  after(async () => {
    await store.close();
  });

  async function user(name: string): Promise<UserRef> {
    const id = newId();
    const username = `${name}${id.slice(-8)}`;
    await store.createUser({ id, username, passwordHash: "$argon2id$x", createdAt: Date.now() });
    return { id, username };
  }

  async function group(name: string, owner: UserRef, members: readonly UserRef[]): Promise<string> {
    const groupId = newId();
    await store.createGroup({ id: groupId, name, epoch: newId(), createdAt: Date.now(), owner });
    for (const m of members) await store.changeGroup(groupId, [m.id], owner, Date.now(), () => ({ type: "add", member: m, role: "member" }));
    return groupId;
  }

  async function send(groupId: string, sender: UserRef, text: string): Promise<GroupEvent> {
    const { event } = await store.appendMessage({ id: newId(), groupId, sender, text, clientMessageId: newId(), sentAt: Date.now() });
    return event;
  }

  async function device(u: UserRef, kind: PushKind = "web_push"): Promise<Device> {
    return store.registerDevice(
      { id: newId(), userId: u.id, kind, token: kind === "web_push" ? `https://push.example/${newId()}` : newId(), p256dh: "", auth: "", topic: "", createdAt: Date.now() },
      10,
    );
  }

  async function start(
    senders: PushSender[],
    opts: { settings?: Partial<NotifierSettings>; store?: Store; random?: () => number } = {},
  ): Promise<{ notifier: Notifier; feed: HandFeed; observer: Recorder }> {
    const feed = new HandFeed();
    const observer = new Recorder();
    const notifier = new Notifier({
      feed,
      store: opts.store ?? store,
      presence,
      senders: new Map(senders.map((s) => [s.kind, s])),
      clock: systemClock,
      logger: silent,
      observer,
      settings: { ...SETTINGS, ...opts.settings },
      ...(opts.random ? { random: opts.random } : {}),
    });
    await notifier.start();
    running.push(notifier);
    return { notifier, feed, observer };
  }

  it("follows the feed under one shared name with the configured pending cap and ack wait", async () => {
    const { feed } = await start([], { settings: { maxPending: 77, ackWaitMs: 12_345 } });
    assert.deepEqual(feed.followed, { name: FOLLOWER_NAME, maxPending: 77, ackWaitMs: 12_345 });
  });

  it("sends an offline member one coalesced push per device for a window's messages, and acknowledges only after it", async () => {
    const [alice, bob, carol] = [await user("alice"), await user("bob"), await user("carol")];
    const gid = await group("Hikers", alice, [bob, carol]);
    const other = await group("Other", carol, [bob]);
    await send(other, carol, "elsewhere 1");
    await send(other, carol, "elsewhere 2");
    const [bobPhone, bobLaptop] = [await device(bob, "web_push"), await device(bob, "apns")];
    const web = new ScriptedSender("web_push");
    const apns = new ScriptedSender("apns");
    const { feed, observer } = await start([web, apns]);
    const events = [await send(gid, alice, "first"), await send(gid, carol, "second"), await send(gid, alice, "third\n  line  two")];
    const settled: number[] = [];
    const acks = events.map((e) => feed.hand(e).then(() => settled.push(e.seq)));
    await Promise.all(acks);
    // Every handler settled after the pushes were made.
    assert.equal(web.attempts.length, 1, "one push to Bob's web push device");
    assert.equal(apns.attempts.length, 1, "one push to Bob's APNs device");
    assert.deepEqual(settled.sort(), events.map((e) => e.seq));
    const last = events[2];
    assert.ok(last);
    const expected: PushContent = {
      groupId: gid,
      groupName: "Hikers",
      newestSeq: last.seq,
      count: 3,
      latestSender: alice.username,
      preview: "third line two",
      badge: 5, // 3 here, 2 in Other
      collapseKey: gid,
    };
    assert.deepEqual(web.sent, [expected]);
    assert.deepEqual(apns.sent, [expected]);
    assert.deepEqual(new Set([web.attempts[0]?.device.id, apns.attempts[0]?.device.id]), new Set([bobPhone.id, bobLaptop.id]));
    // Carol has no device; Alice wrote the newest message.
    assert.equal(observer.get("skipped:no_device"), 1);
    assert.equal(observer.get("skipped:replied"), 1);
    assert.equal(observer.get("sent:web_push") + observer.get("sent:apns"), 2);
    assert.equal(observer.get("flush:ok"), 1);
  });

  it("acknowledges events that are not messages at once, without a push", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const gid = await group("g", alice, []);
    await device(bob);
    const web = new ScriptedSender("web_push");
    const { feed } = await start([web]);
    const added = await store.changeGroup(gid, [bob.id], alice, Date.now(), () => ({ type: "add", member: bob, role: "member" }));
    await feed.hand(added);
    assert.equal(web.attempts.length, 0);
  });

  it("sends nothing to a member who is online, muted, set to none, or read past the newest message", async () => {
    const [alice, on, muted, none, reader, unmuted] = [
      await user("alice"),
      await user("on"),
      await user("muted"),
      await user("none"),
      await user("reader"),
      await user("unmuted"),
    ];
    const gid = await group("quiet", alice, [on, muted, none, reader, unmuted]);
    for (const u of [on, muted, none, reader, unmuted]) await device(u);
    await presence.setOnline("holder-1", [on.id], 60_000);
    await store.setNotify(gid, muted.id, { level: "all", mutedUntil: Date.now() + 3_600_000 });
    await store.setNotify(gid, none.id, { level: "none", mutedUntil: 0 });
    await store.setNotify(gid, unmuted.id, { level: "all", mutedUntil: Date.now() - 1 }); // a mute that ended
    const web = new ScriptedSender("web_push");
    const { feed, observer } = await start([web]);
    const e1 = await send(gid, alice, "one");
    const e2 = await send(gid, alice, "two");
    const p1 = feed.hand(e1);
    // The reader reads both messages within the window (after the first event arrived, before the flush).
    await store.markRead(gid, reader.id, e2.seq);
    await Promise.all([p1, feed.hand(e2)]);
    await presence.setOffline("holder-1", [on.id]);
    assert.deepEqual(
      web.attempts.map((a) => a.device.userId),
      [unmuted.id],
      "only the member whose mute ended gets a push",
    );
    assert.equal(observer.get("skipped:online"), 1);
    assert.equal(observer.get("skipped:muted"), 2);
    assert.equal(observer.get("skipped:read"), 1);
  });

  it("sends nothing to a member whose device came online within the window (its stream delivered the messages)", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const gid = await group("arriving", alice, [bob]);
    await device(bob);
    const web = new ScriptedSender("web_push");
    const { feed, observer } = await start([web], { settings: { windowMs: 200 } });
    const ack = feed.hand(await send(gid, alice, "x"));
    await presence.setOnline("holder-2", [bob.id], 60_000);
    await ack;
    await presence.setOffline("holder-2", [bob.id]);
    assert.equal(web.attempts.length, 0);
    assert.equal(observer.get("skipped:online"), 1);
  });

  it("counts only messages after the member's read marker, and not their own", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const gid = await group("count", alice, [bob]);
    await device(bob);
    const old = await send(gid, alice, "old");
    await store.markRead(gid, bob.id, old.seq);
    const web = new ScriptedSender("web_push");
    const { feed } = await start([web]);
    const events = [await send(gid, bob, "mine"), await send(gid, alice, "new 1"), await send(gid, alice, "new 2")];
    await Promise.all(events.map((e) => feed.hand(e)));
    assert.equal(web.sent.length, 1);
    assert.equal(web.sent[0]?.count, 2);
    assert.equal(web.sent[0]?.badge, 2);
    assert.equal(web.sent[0]?.preview, "new 2");
  });

  it("never sends twice for the same (device, group, newest seq): not on redelivery, not from a second instance", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const gid = await group("twice", alice, [bob]);
    await device(bob);
    const web = new ScriptedSender("web_push");
    const first = await start([web]);
    const e = await send(gid, alice, "hello");
    await first.feed.hand(e);
    assert.equal(web.attempts.length, 1);
    // The same event again (an acknowledgement lost), to the same and to another instance at once.
    const second = await start([web]);
    await Promise.all([first.feed.hand(e), second.feed.hand(e)]);
    assert.equal(web.attempts.length, 1, "no second push");
    // A newer message is a new push.
    await first.feed.hand(await send(gid, alice, "again"));
    assert.equal(web.attempts.length, 2);
    assert.equal(web.sent[1]?.count, 2);
  });

  it("retries 429/5xx after the service's Retry-After, then succeeds: one push delivered", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const gid = await group("retry", alice, [bob]);
    await device(bob);
    const web = new ScriptedSender("web_push", [{ kind: "retry", reason: "429", afterMs: 120 }]);
    const { feed, observer } = await start([web]);
    await feed.hand(await send(gid, alice, "hi"));
    assert.equal(web.attempts.length, 2);
    const [a, b] = web.attempts;
    assert.ok(a && b);
    assert.ok(b.at - a.at >= 110, `the retry waited for Retry-After (${b.at - a.at} ms)`);
    assert.deepEqual(b.content, a.content);
    assert.equal(observer.get("retried:web_push"), 1);
    assert.equal(observer.get("sent:web_push"), 1);
  });

  it("gives up after the attempts allowed, and does not retry a push that failed for good", async () => {
    const [alice, bob, carol] = [await user("alice"), await user("bob"), await user("carol")];
    const gid = await group("give-up", alice, [bob]);
    const gid2 = await group("final", alice, [carol]);
    await device(bob, "fcm");
    await device(carol, "apns");
    const busy: PushOutcome = { kind: "retry", reason: "503" };
    const fcm = new ScriptedSender("fcm", [busy, busy, busy, busy]);
    const apns = new ScriptedSender("apns", [{ kind: "failed", reason: "400 BadTopic" }]);
    const { feed, observer } = await start([fcm, apns], { random: () => 0.5 });
    await feed.hand(await send(gid, alice, "x"));
    await feed.hand(await send(gid2, alice, "y"));
    assert.equal(fcm.attempts.length, SETTINGS.retry.maxAttempts);
    assert.equal(observer.get("retried:fcm"), SETTINGS.retry.maxAttempts - 1);
    assert.equal(observer.get("failed:fcm:gave_up"), 1);
    assert.equal(apns.attempts.length, 1);
    assert.equal(observer.get("failed:apns:rejected"), 1);
  });

  it("removes a device the service calls gone, only if it still has the refused token", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const gid = await group("gone", alice, [bob]);
    const gone = await device(bob);
    const kept = await device(bob, "fcm");
    const web = new ScriptedSender("web_push", [{ kind: "invalid", reason: "410 Gone" }]);
    const fcm = new ScriptedSender("fcm");
    const { feed, observer } = await start([web, fcm]);
    await feed.hand(await send(gid, alice, "x"));
    assert.deepEqual(
      (await store.listDevices(bob.id)).map((d) => d.id),
      [kept.id],
    );
    assert.notEqual(gone.id, kept.id);
    assert.equal(observer.get("removed:web_push"), 1);
    assert.equal(observer.get("failed:web_push:invalid_token"), 1);
    assert.equal(fcm.attempts.length, 1, "the other device got its push");
  });

  it("counts a device whose provider is not configured as failed, and claims nothing for it", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const gid = await group("unconfigured", alice, [bob]);
    const d = await device(bob, "apns");
    const { feed, observer } = await start([new ScriptedSender("web_push")]);
    const e = await send(gid, alice, "x");
    await feed.hand(e);
    assert.equal(observer.get("failed:apns:not_configured"), 1);
    assert.equal(await store.claimPush(d.id, gid, e.seq, 1000), true, "the key was not claimed");
  });

  it("rejects the window's events when the store fails, so they come again; nothing was sent", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const gid = await group("failing", alice, [bob]);
    await device(bob);
    const e = await send(gid, alice, "x");
    let failures = 1;
    const flaky = new Proxy(store, {
      get(target, prop, receiver) {
        if (prop === "readStates" && failures > 0) {
          return async () => {
            failures--;
            throw new Error("store unavailable");
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const web = new ScriptedSender("web_push");
    const { feed, observer } = await start([web], { store: flaky });
    await assert.rejects(feed.hand(e), /store unavailable/);
    assert.equal(web.attempts.length, 0);
    assert.equal(observer.get("flush:error"), 1);
    await feed.hand(e); // the redelivery
    assert.equal(web.attempts.length, 1);
  });

  it("stop flushes the open windows at once, then unsubscribes", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const gid = await group("stopping", alice, [bob]);
    await device(bob);
    const web = new ScriptedSender("web_push");
    const { notifier, feed } = await start([web], { settings: { windowMs: 60_000 } });
    const ack = feed.hand(await send(gid, alice, "x"));
    assert.equal(notifier.pending, 1);
    await notifier.stop(5_000);
    await ack;
    assert.equal(web.attempts.length, 1);
    assert.ok(feed.unsubscribed);
    assert.equal(notifier.pending, 0);
  });

  it("abandons a retry wait when stopped past its grace (the push is given up, its claim kept)", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const gid = await group("abandon", alice, [bob]);
    const d = await device(bob);
    const web = new ScriptedSender("web_push", [{ kind: "retry", reason: "429", afterMs: 4_000 }]);
    const { notifier, feed, observer } = await start([web], { settings: { windowMs: 0 } });
    const e = await send(gid, alice, "x");
    const ack = feed.hand(e);
    for (let i = 0; i < 200 && web.attempts.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(web.attempts.length, 1);
    await notifier.stop(10);
    await ack;
    assert.equal(web.attempts.length, 1, "no attempt after the stop");
    assert.equal(observer.get("failed:web_push:gave_up"), 1);
    assert.equal(await store.claimPush(d.id, gid, e.seq, 1000), false, "the claim stays: never twice");
  });
});
