/**
 * Push notifications end to end: a real server (the embedded default: SQLite,
 * its event feed, in-process presence) pushing to loopback Web Push, APNs and
 * FCM services that check each protocol (the VAPID JWT and the aes128gcm
 * payload, decrypted with the subscription's key; the APNs ES256 provider
 * token and headers over HTTP/2; the FCM OAuth2 exchange and message JSON).
 * Each test waits for the notifier's own account of a window (its metrics)
 * rather than for time to pass, and has a member who does get a push as a
 * control, so "no push" means the notifier decided so.
 *
 * The last suite runs the server as a child process and SIGKILLs it with a
 * push in flight and a window open: after the restart every (device, group,
 * newest seq) is pushed at most once, and nothing else is lost.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { NotifyLevel } from "../../gen/chat/v1/group_pb.js";
import { apnsCollapseId, webPushTopic } from "../../services/adapters/push/push-payload.js";
import { freePort } from "../support/helpers.js";
import { parse } from "../support/metrics-scrape.js";
import {
  type PushFixture,
  type Registered,
  type ServerProcess,
  killServer,
  notificationsOf,
  pushesTo,
  registerDevices,
  serverListening,
  spawnServer,
  startPushFixture,
  waitFor,
} from "../support/push-fixture.js";
import { subscribe } from "../support/stream-reader.js";
import { type Clients, type TestServer, registerUser, startTestServer } from "../support/test-server.js";

/** WINDOW is the coalescing window of these tests: long enough that a test's few sends land in one. */
const WINDOW = "1s";

describe("push notifications (embedded server, loopback push services)", () => {
  let push: PushFixture;
  let server: TestServer;
  before(async () => {
    push = await startPushFixture();
    server = await startTestServer({ ...push.env, NOTIFY_WINDOW: WINDOW });
  });
  after(async () => {
    await server?.stop();
    await push?.close();
  });

  async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return parse(await server.app.metrics.scrape()).get(name, labels);
  }

  /** settled waits until the notifier holds no group (every window flushed) and `check` holds. */
  async function settled(what: string, check: () => boolean | Promise<boolean> = () => true): Promise<void> {
    await waitFor(what, async () => (await check()) && (await metric("chat_notify_groups_pending")) === 0);
  }

  async function user(prefix: string): Promise<Clients> {
    return registerUser(server.baseUrl, "grpc", prefix);
  }

  async function devicesOf(c: Clients, kinds?: Registered["kind"][]): Promise<Registered[]> {
    return registerDevices(push, notificationsOf(c, server.baseUrl), kinds);
  }

  async function send(c: Clients, groupId: string, text: string): Promise<bigint> {
    const res = await c.messages.sendMessage({ groupId, text, clientMessageId: `m-${Math.random().toString(36).slice(2)}` });
    return res.message?.seq ?? 0n;
  }

  function groupPushes(device: Registered, groupId: string) {
    return pushesTo(push, device).filter((p) => p.groupId === groupId);
  }

  function noRejections(): void {
    assert.deepEqual(push.web.rejections, [], "the Web Push service refused nothing");
    assert.deepEqual(push.apns.rejections, [], "APNs refused nothing");
    assert.deepEqual(push.fcm.rejections, [], "FCM refused nothing");
  }

  it("sends an offline member exactly one coalesced push per device for several messages, with count, newest seq, sender, preview, collapse key and badge", async () => {
    const [alice, bob, carol] = [await user("pa"), await user("pb"), await user("pc")];
    const bobs = await devicesOf(bob);
    // Two unread messages elsewhere count in the badge.
    const other = (await carol.groups.createGroup({ name: "Other", memberUsernames: [bob.username] })).group?.groupId ?? "";
    await send(carol, other, "elsewhere 1");
    await send(carol, other, "elsewhere 2");
    await settled("the push for Other", () => bobs.every((d) => groupPushes(d, other).length === 1));

    const gid = (await alice.groups.createGroup({ name: "Trail", memberUsernames: [bob.username] })).group?.groupId ?? "";
    await send(alice, gid, "one");
    await send(alice, gid, "two");
    const newest = await send(alice, gid, "three is the\nnewest");
    await settled("Trail's pushes", () => bobs.every((d) => groupPushes(d, gid).length >= 1));

    for (const d of bobs) {
      const pushes = groupPushes(d, gid);
      assert.equal(pushes.length, 1, `${d.kind}: exactly one push for three messages`);
      const p = pushes[0];
      assert.ok(p);
      assert.equal(p.newestSeq, Number(newest), d.kind);
      if (p.count !== undefined) assert.equal(p.count, 3, d.kind);
      assert.equal(p.badge, 5, `${d.kind}: three here and two in Other`);
      assert.equal(p.title, "Trail", d.kind);
      assert.match(p.body, /^3 new messages in Trail\n/, d.kind);
      assert.ok(p.body.endsWith(`${alice.username}: three is the newest`), `${d.kind}: ${p.body}`);
    }
    const byKind = (k: Registered["kind"]) => groupPushes(bobs.find((d) => d.kind === k) as Registered, gid)[0]?.collapse;
    assert.equal(byKind("web_push"), webPushTopic(gid), "Web Push Topic");
    assert.equal(byKind("apns"), apnsCollapseId(gid), "apns-collapse-id");
    assert.equal(byKind("fcm"), apnsCollapseId(gid), "FCM collapse_key");
    // Only Alice wrote in Trail: no push for her (she has no device either, so check the decision).
    assert.ok((await metric("chat_push_skipped_total", { reason: "own" })) >= 1);
    assert.ok((await metric("chat_pushes_sent_total", { provider: "web_push" })) >= 2);
    assert.ok((await metric("chat_push_latency_seconds_count", { provider: "apns" })) >= 2);
    noRejections();
  });

  it("sends nothing to a member with a live stream, and a push to the offline one beside them", async () => {
    const [alice, bob, carol] = [await user("oa"), await user("ob"), await user("oc")];
    const [bobWeb] = await devicesOf(bob, ["web_push"]);
    const [carolWeb] = await devicesOf(carol, ["web_push"]);
    assert.ok(bobWeb && carolWeb);
    const gid = (await alice.groups.createGroup({ name: "live", memberUsernames: [bob.username, carol.username] })).group?.groupId ?? "";
    const stream = subscribe(bob);
    try {
      await stream.waitReady();
      await waitFor("Bob online", async () => (await alice.groups.listMembers({ groupId: gid })).onlineUserIds.includes(bob.userId));
      const onlineBefore = await metric("chat_push_skipped_total", { reason: "online" });
      const seq = await send(alice, gid, "while you watch");
      await settled("the window's flush", () => groupPushes(carolWeb, gid).length === 1);
      await stream.waitFor((r) => r.eventsOf(gid).some((e) => e.seq === seq), 5000, "the stream delivered it");
      assert.equal(groupPushes(bobWeb, gid).length, 0, "no push to the member whose stream delivered the message");
      assert.equal(await metric("chat_push_skipped_total", { reason: "online" }), onlineBefore + 1);
    } finally {
      stream.close();
    }
  });

  it("sends nothing for a group set to none or muted, and again once the mute is over", async () => {
    const [alice, bob, carol, dave] = [await user("ma"), await user("mb"), await user("mc"), await user("md")];
    const [bobWeb] = await devicesOf(bob, ["web_push"]);
    const [carolApns] = await devicesOf(carol, ["apns"]);
    const [daveFcm] = await devicesOf(dave, ["fcm"]);
    assert.ok(bobWeb && carolApns && daveFcm);
    const gid = (await alice.groups.createGroup({ name: "muted", memberUsernames: [bob.username, carol.username, dave.username] })).group?.groupId ?? "";
    const inAnHour = { seconds: BigInt(Math.floor(Date.now() / 1000) + 3600), nanos: 0 };
    await notificationsOf(bob, server.baseUrl).setGroupNotifications({ groupId: gid, notifications: { level: NotifyLevel.NONE } });
    await notificationsOf(carol, server.baseUrl).setGroupNotifications({ groupId: gid, notifications: { level: NotifyLevel.ALL, mutedUntil: inAnHour } });
    const mutedBefore = await metric("chat_push_skipped_total", { reason: "muted" });
    await send(alice, gid, "shh");
    await settled("the window's flush", () => groupPushes(daveFcm, gid).length === 1);
    assert.equal(groupPushes(bobWeb, gid).length, 0, "level none");
    assert.equal(groupPushes(carolApns, gid).length, 0, "muted until later");
    assert.equal(await metric("chat_push_skipped_total", { reason: "muted" }), mutedBefore + 2);

    await notificationsOf(carol, server.baseUrl).setGroupNotifications({ groupId: gid, notifications: { level: NotifyLevel.ALL } });
    await send(alice, gid, "loud again");
    await settled("Carol's push", () => groupPushes(carolApns, gid).length === 1);
    assert.equal(groupPushes(bobWeb, gid).length, 0);
    noRejections();
  });

  it("sends nothing to a member who marked the messages read within the window", async () => {
    const [alice, bob, carol] = [await user("ra"), await user("rb"), await user("rc")];
    const [bobWeb] = await devicesOf(bob, ["web_push"]);
    const [carolWeb] = await devicesOf(carol, ["web_push"]);
    assert.ok(bobWeb && carolWeb);
    const gid = (await alice.groups.createGroup({ name: "read", memberUsernames: [bob.username, carol.username] })).group?.groupId ?? "";
    const readBefore = await metric("chat_push_skipped_total", { reason: "read" });
    await send(alice, gid, "first");
    const seq = await send(alice, gid, "second");
    // Bob reads both on another device (no stream open here) before the window closes.
    await bob.groups.markRead({ groupId: gid, seq });
    await settled("the window's flush", () => groupPushes(carolWeb, gid).length === 1);
    assert.equal(groupPushes(bobWeb, gid).length, 0);
    assert.equal(await metric("chat_push_skipped_total", { reason: "read" }), readBefore + 1);
    assert.equal(groupPushes(carolWeb, gid)[0]?.count, 2);
  });

  it("removes a device its push service calls gone (Web Push 410, FCM UNREGISTERED, APNs 410): ListDevices no longer shows it", async () => {
    const [alice, bob] = [await user("ga"), await user("gb")];
    const devices = await devicesOf(bob);
    const [web, apns, fcm] = devices;
    assert.ok(web?.kind === "web_push" && apns?.kind === "apns" && fcm?.kind === "fcm");
    const notifications = notificationsOf(bob, server.baseUrl);
    assert.equal((await notifications.listDevices({})).devices.length, 3);
    push.web.unsubscribe(web.sub);
    push.apns.removeDevice(apns.token);
    push.fcm.removeToken(fcm.token);
    const removedBefore = await Promise.all(["web_push", "apns", "fcm"].map((p) => metric("chat_push_devices_removed_total", { provider: p })));
    const gid = (await alice.groups.createGroup({ name: "gone", memberUsernames: [bob.username] })).group?.groupId ?? "";
    await send(alice, gid, "anyone there?");
    await settled("the removals", async () => (await notifications.listDevices({})).devices.length === 0);
    const removedAfter = await Promise.all(["web_push", "apns", "fcm"].map((p) => metric("chat_push_devices_removed_total", { provider: p })));
    assert.deepEqual(
      removedAfter.map((n, i) => n - (removedBefore[i] ?? 0)),
      [1, 1, 1],
    );
    for (const d of devices) assert.equal(groupPushes(d, gid).length, 0);
  });

  it("retries after 429 with Retry-After and after 503: one push delivered, not before Retry-After", async () => {
    const [alice, bob] = [await user("ta"), await user("tb")];
    const [web, fcm] = await devicesOf(bob, ["web_push", "fcm"]);
    assert.ok(web?.kind === "web_push" && fcm);
    const gid = (await alice.groups.createGroup({ name: "busy", memberUsernames: [bob.username] })).group?.groupId ?? "";
    push.web.failNext(429, { "retry-after": "1" });
    push.fcm.failNext(503, {}, { error: { code: 503, message: "unavailable", status: "UNAVAILABLE" } });
    const retriedBefore = await metric("chat_push_retries_total", { provider: "web_push" });
    const path = new URL(web.sub.endpoint).pathname;
    const seen: number[] = [];
    await send(alice, gid, "patience");
    await settled("both pushes", () => {
      const n = push.web.requests.filter((r) => r.path === path).length;
      while (seen.length < n) seen.push(Date.now());
      return groupPushes(web, gid).length === 1 && groupPushes(fcm, gid).length === 1;
    });
    assert.equal(push.web.requests.filter((r) => r.path === path).length, 2, "the refused attempt and the retry");
    assert.equal(groupPushes(web, gid).length, 1);
    assert.equal(groupPushes(fcm, gid).length, 1);
    const [first, second] = seen;
    assert.ok(first !== undefined && second !== undefined);
    // Polled every 20 ms, so each time is late by up to that: the gap is at least Retry-After minus the poll.
    assert.ok(second - first >= 1000 - 40, `the retry came ${second - first} ms after the 429 with Retry-After: 1`);
    assert.equal(await metric("chat_push_retries_total", { provider: "web_push" }), retriedBefore + 1);
    assert.ok((await metric("chat_push_retries_total", { provider: "fcm" })) >= 1);
  });

  it("pushes for a group the member joins later, with only what was written after they joined", async () => {
    const [alice, bob] = [await user("ja"), await user("jb")];
    const [bobWeb] = await devicesOf(bob, ["web_push"]);
    assert.ok(bobWeb);
    const gid = (await alice.groups.createGroup({ name: "late" })).group?.groupId ?? "";
    await send(alice, gid, "before Bob");
    await alice.groups.addMember({ groupId: gid, user: { case: "username", value: bob.username } });
    const seq = await send(alice, gid, "after Bob");
    await settled("Bob's push", () => groupPushes(bobWeb, gid).length >= 1);
    const pushes = groupPushes(bobWeb, gid);
    assert.equal(pushes.length, 1);
    assert.equal(pushes[0]?.newestSeq, Number(seq));
    assert.equal(pushes[0]?.count, 1, "the message from before he joined is not his to read");
  });
});

describe("a notifier SIGKILLed mid-batch", () => {
  let push: PushFixture;
  let dataDir: string;
  let proc: ServerProcess | undefined;
  before(async () => {
    push = await startPushFixture();
    dataDir = await mkdtemp(join(tmpdir(), "chat-push-kill-"));
  });
  after(async () => {
    if (proc) await killServer(proc, "SIGKILL");
    await push?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("pushes each (device, group, newest seq) at most once after the restart, and drops nothing but the push in flight", { timeout: 90_000 }, async () => {
    const port = await freePort();
    const env = {
      ...push.env,
      DATA_DIR: dataDir,
      PORT: String(port),
      NOTIFY_WINDOW: "2s",
      PUSH_TIMEOUT: "30s",
      LOG_LEVEL: "info",
      REGISTRATIONS_PER_MINUTE_PER_ADDRESS: "1000",
      SEND_BURST: "1000",
    };
    const baseUrl = `http://127.0.0.1:${port}`;
    const pending = async () => {
      const res = await fetch(`${baseUrl}/metrics`);
      return parse(await res.text()).get("chat_notify_groups_pending");
    };
    proc = spawnServer(env);
    await serverListening(proc);
    const [alice, bob] = [await registerUser(baseUrl, "grpc", "ka"), await registerUser(baseUrl, "grpc", "kb")];
    const [web, apns] = await registerDevices(push, notificationsOf(bob, baseUrl), ["web_push", "apns"]);
    assert.ok(web?.kind === "web_push" && apns?.kind === "apns");
    const inFlight = (await alice.groups.createGroup({ name: "in flight", memberUsernames: [bob.username] })).group?.groupId ?? "";
    const open = (await alice.groups.createGroup({ name: "window open", memberUsernames: [bob.username] })).group?.groupId ?? "";
    const send = async (gid: string, text: string) =>
      (await alice.messages.sendMessage({ groupId: gid, text, clientMessageId: text })).message?.seq ?? 0n;

    // Group 1: its push to the Web Push device is claimed and sent, and the service never answers (stalled);
    // the APNs push of the same flush is delivered, but the flush is not over, so its events are not acknowledged.
    push.web.stallNext(1);
    const a1 = await send(inFlight, "a1");
    const webPath = new URL(web.sub.endpoint).pathname;
    await waitFor("the stalled Web Push request", () => push.web.requests.some((r) => r.path === webPath));
    await waitFor("the APNs push of the same flush", () => pushesTo(push, apns).some((p) => p.groupId === inFlight));
    // Group 2: its window is open (2 s) when the process dies.
    await send(open, "b1");
    const b2 = await send(open, "b2");
    await waitFor("two groups held by the notifier", async () => (await pending()) === 2);
    await killServer(proc, "SIGKILL");

    proc = spawnServer(env);
    await serverListening(proc);
    const pushesOf = (d: Registered, gid: string) => pushesTo(push, d).filter((p) => p.groupId === gid);
    await waitFor("the open window's pushes after the restart", () => pushesOf(web, open).length >= 1 && pushesOf(apns, open).length >= 1);
    await waitFor("the redelivered events flushed", async () => (await pending()) === 0);

    // Never twice: one push per (device, group, newest seq), the stalled one included.
    for (const d of [web, apns]) {
      const keys = pushesTo(push, d).map((p) => `${p.groupId}/${p.newestSeq}`);
      assert.deepEqual(keys, [...new Set(keys)], `${d.kind}: no (group, newest seq) twice: ${keys.join(" ")}`);
    }
    assert.equal(push.web.requests.filter((r) => r.path === webPath).length, 2, "the stalled request and the open window's push; no retry of the stalled one");
    assert.deepEqual(
      pushesOf(web, open).map((p) => p.newestSeq),
      [Number(b2)],
    );
    assert.deepEqual(
      pushesOf(apns, inFlight).map((p) => p.newestSeq),
      [Number(a1)],
    );
    assert.deepEqual(
      pushesOf(apns, open).map((p) => p.newestSeq),
      [Number(b2)],
    );
    assert.equal(pushesOf(web, inFlight).length, 0, "the push in flight at the kill is the one not delivered (claimed, never retried)");

    // Nothing dropped: the next message in the first group is pushed with everything unread since.
    const a2 = await send(inFlight, "a2");
    await waitFor("the push for a2", () => pushesOf(web, inFlight).length === 1);
    assert.deepEqual(
      pushesOf(web, inFlight).map((p) => [p.newestSeq, p.count]),
      [[Number(a2), 2]],
    );
    assert.deepEqual(push.web.rejections, []);
    assert.deepEqual(push.apns.rejections, []);
    await killServer(proc, "SIGTERM");
    proc = undefined;
  });
});
