/**
 * NotificationService (issue 14, point 1): registering, listing and
 * unregistering push devices of each kind (Web Push, FCM, APNs) over every
 * protocol, input checks with statuses and messages a client developer can
 * act on, the Web Push endpoint policy (https on public addresses unless
 * PUSH_ALLOW_PRIVATE_ENDPOINTS), the per-user device cap, devices private to
 * their user, and per-group notification settings as ListGroups shows them.
 */
import assert from "node:assert/strict";
import { createECDH, randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { NotifyLevel } from "../../gen/chat/v1/group_pb.js";
import { type Device, NotificationService, type RegisterDeviceRequest } from "../../gen/chat/v1/notification_service_pb.js";
import { codeOf } from "../support/helpers.js";
import { type Clients, PROTOCOLS, type Protocol, type TestServer, bearer, registerUser, startTestServer, transportFor } from "../support/test-server.js";

/** notifications returns a NotificationService client over `protocol` with `c`'s token (none for undefined). */
function notifications(baseUrl: string, c: Clients | undefined, protocol: Protocol = "grpc"): Client<typeof NotificationService> {
  return createClient(NotificationService, transportFor(baseUrl, protocol, [bearer(() => c?.token)]));
}

/** subscriptionKeys makes a browser-like subscription's keys: a fresh P-256 public key and a 16-byte auth secret, base64url. */
function subscriptionKeys(): { p256dh: string; auth: string } {
  const ecdh = createECDH("prime256v1");
  return { p256dh: ecdh.generateKeys().toString("base64url"), auth: randomBytes(16).toString("base64url") };
}

type Target = RegisterDeviceRequest["target"];

function webPush(endpoint: string, keys = subscriptionKeys()): Target {
  return { case: "webPush", value: { $typeName: "chat.v1.WebPushSubscription", endpoint, ...keys } };
}

function fcm(token: string): Target {
  return { case: "fcm", value: { $typeName: "chat.v1.FcmRegistration", token } };
}

function apns(deviceToken: string, topic = "com.example.chat"): Target {
  return { case: "apns", value: { $typeName: "chat.v1.ApnsRegistration", deviceToken, topic } };
}

/** rejected returns the ConnectError a call failed with. */
async function rejected(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  assert.fail("expected the call to fail");
}

const hex = (bytes: number) => randomBytes(bytes).toString("hex");

describe("NotificationService", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  for (const protocol of PROTOCOLS) {
    it(`registers, lists and unregisters a device of each kind (${protocol})`, async () => {
      const alice = await registerUser(server.baseUrl, "grpc", "nda");
      const n = notifications(server.baseUrl, alice, protocol);
      const keys = subscriptionKeys();
      const endpoint = `https://fcm.googleapis.com/fcm/send/${hex(16)}`;
      const fcmToken = `${hex(20)}:APA91b${randomBytes(90).toString("base64url")}`;
      const apnsToken = hex(32);
      const before = Date.now();
      const web = (await n.registerDevice({ target: webPush(endpoint, keys) })).device;
      const f = (await n.registerDevice({ target: fcm(fcmToken) })).device;
      const a = (await n.registerDevice({ target: apns(apnsToken.toUpperCase(), "com.example.chat.voip") })).device;
      assert.ok(web && f && a);
      assert.deepEqual(web.target.value && { ...web.target.value }, { $typeName: "chat.v1.WebPushSubscription", endpoint, ...keys });
      assert.equal(f.target.case, "fcm");
      assert.equal(f.target.value?.token, fcmToken);
      assert.equal(a.target.case, "apns");
      assert.deepEqual([a.target.value?.deviceToken, a.target.value?.topic], [apnsToken, "com.example.chat.voip"], "the device token is stored in lower case");
      const ids = [web, f, a].map((d) => d.deviceId);
      assert.equal(new Set(ids).size, 3);
      for (const d of [web, f, a]) {
        assert.ok(d.createdAt);
        const at = timestampMs(d.createdAt);
        assert.ok(at >= before - 1000 && at <= Date.now() + 1000, "created_at is the server's time of registration");
      }

      const listed = (await n.listDevices({})).devices;
      assert.deepEqual(
        listed.map((d) => d.deviceId),
        ids,
        "oldest first",
      );
      assert.deepEqual(listed, [web, f, a], "ListDevices shows the devices as RegisterDevice returned them");

      // The same target again keeps its id and creation time.
      const again = (await n.registerDevice({ target: fcm(fcmToken) })).device;
      assert.deepEqual([again?.deviceId, again?.createdAt], [f.deviceId, f.createdAt]);
      assert.equal((await n.listDevices({})).devices.length, 3);

      await n.unregisterDevice({ deviceId: f.deviceId });
      assert.deepEqual(
        (await n.listDevices({})).devices.map((d) => d.deviceId),
        [web.deviceId, a.deviceId],
      );
      const gone = await rejected(n.unregisterDevice({ deviceId: f.deviceId }));
      assert.equal(gone.code, Code.NotFound);
      await n.unregisterDevice({ deviceId: web.deviceId });
      await n.unregisterDevice({ deviceId: a.deviceId });
      assert.deepEqual((await n.listDevices({})).devices, []);
    });
  }

  it("refuses bad registrations with INVALID_ARGUMENT and a message naming the field and the rule", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "nbi");
    const n = notifications(server.baseUrl, alice);
    const good = subscriptionKeys();
    const offCurve = Buffer.alloc(65, 1);
    offCurve[0] = 4;
    const cases: [string, Target, RegExp][] = [
      ["no target", { case: undefined }, /target is required: set web_push, fcm or apns/],
      ["an http:// endpoint", webPush("http://push.example.com/abc"), /web_push\.endpoint must be an https:\/\/ URL, not http:/],
      ["a loopback endpoint", webPush("https://127.0.0.1/push"), /web_push\.endpoint host 127\.0\.0\.1 is not a public address/],
      ["a private endpoint", webPush("https://192.168.1.10/push"), /web_push\.endpoint host 192\.168\.1\.10 is not a public address/],
      ["localhost", webPush("https://localhost:8443/push"), /web_push\.endpoint host localhost is a local name/],
      ["an endpoint that is no URL", webPush("push service"), /web_push\.endpoint/],
      ["an empty endpoint", webPush(""), /web_push\.endpoint is required/],
      ["a p256dh of 64 bytes", webPush("https://push.example.com/a", { ...good, p256dh: randomBytes(64).toString("base64url") }), /web_push\.p256dh .*65 bytes starting with 0x04.*decodes to 64 bytes/],
      ["a p256dh that is not base64url", webPush("https://push.example.com/a", { ...good, p256dh: `${good.p256dh.slice(1)}+` }), /web_push\.p256dh .*not base64url/],
      ["a p256dh off the curve", webPush("https://push.example.com/a", { ...good, p256dh: offCurve.toString("base64url") }), /web_push\.p256dh .*not a point on the P-256 curve/],
      ["an empty p256dh", webPush("https://push.example.com/a", { ...good, p256dh: "" }), /web_push\.p256dh .*empty/],
      ["an auth of 12 bytes", webPush("https://push.example.com/a", { ...good, auth: randomBytes(12).toString("base64url") }), /web_push\.auth .*16 bytes; it decodes to 12 bytes/],
      ["an auth that is not base64url", webPush("https://push.example.com/a", { ...good, auth: "!!!!" }), /web_push\.auth .*not base64url/],
      ["an empty FCM token", fcm(""), /fcm\.token is required/],
      ["an FCM token with a space", fcm("abc def"), /fcm\.token must be printable ASCII without spaces/],
      ["an FCM token over 4096 characters", fcm("a".repeat(4097)), /fcm\.token is 4097 characters; at most 4096/],
      ["an APNs token that is not hex", apns(`zz${hex(32)}`), /apns\.device_token must be hex digits/],
      ["an APNs token too short", apns(hex(16)), /apns\.device_token must be 64 to 200 hex digits; it has 32/],
      ["an APNs token too long", apns(hex(101)), /apns\.device_token must be 64 to 200 hex digits; it has 202/],
      ["an APNs device without a topic", apns(hex(32), ""), /apns\.topic is required/],
      ["an APNs topic with a space", apns(hex(32), "com.example chat"), /apns\.topic must be printable ASCII without spaces/],
    ];
    for (const [what, target, message] of cases) {
      const err = await rejected(n.registerDevice({ target }));
      assert.equal(err.code, Code.InvalidArgument, `${what}: ${err.rawMessage}`);
      assert.match(err.rawMessage, message, what);
    }
    assert.deepEqual((await n.listDevices({})).devices, [], "nothing was stored");
    // Padded base64url keys are accepted and stored unpadded.
    const padded = (await n.registerDevice({ target: webPush("https://push.example.com/padded", { p256dh: `${good.p256dh}=`, auth: `${good.auth}==` }) })).device;
    assert.equal(padded?.target.case, "webPush");
    assert.deepEqual(padded?.target.case === "webPush" && [padded.target.value.p256dh, padded.target.value.auth], [good.p256dh, good.auth]);
  });

  it("caps the devices per user at MAX_DEVICES_PER_USER (default 10) with FAILED_PRECONDITION", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "ncap");
    const n = notifications(server.baseUrl, alice);
    const tokens = Array.from({ length: 10 }, () => hex(32));
    for (const t of tokens) await n.registerDevice({ target: apns(t) });
    const err = await rejected(n.registerDevice({ target: apns(hex(32)) }));
    assert.equal(err.code, Code.FailedPrecondition);
    assert.match(err.rawMessage, /already have 10 push devices registered.*unregister one first/);
    assert.equal((await n.listDevices({})).devices.length, 10);
    // Registering one of the ten again is an update, not an eleventh device.
    assert.ok((await n.registerDevice({ target: apns(tokens[3] ?? "") })).device);
    const first = (await n.listDevices({})).devices[0];
    assert.ok(first);
    await n.unregisterDevice({ deviceId: first.deviceId });
    assert.ok((await n.registerDevice({ target: apns(hex(32)) })).device, "room again after an unregistration");
  });

  it("keeps devices private to their user: another user's device id is NOT_FOUND, and a target registered again moves", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "npa");
    const bob = await registerUser(server.baseUrl, "grpc", "npb");
    const na = notifications(server.baseUrl, alice);
    const nb = notifications(server.baseUrl, bob);
    const token = `${hex(10)}:${hex(60)}`;
    const mine = (await na.registerDevice({ target: fcm(token) })).device;
    assert.ok(mine);
    assert.deepEqual((await nb.listDevices({})).devices, []);
    const err = await rejected(nb.unregisterDevice({ deviceId: mine.deviceId }));
    assert.equal(err.code, Code.NotFound);
    assert.match(err.rawMessage, /not found \(or it is not yours\)/);
    assert.deepEqual(
      (await na.listDevices({})).devices.map((d) => d.deviceId),
      [mine.deviceId],
      "still alice's",
    );
    assert.equal(await codeOf(na.unregisterDevice({ deviceId: "not-an-id" })), Code.InvalidArgument);
    // The app on that phone now runs as bob: the token is bob's alone.
    const moved = (await nb.registerDevice({ target: fcm(token) })).device;
    assert.equal(moved?.target.value && "token" in moved.target.value ? moved.target.value.token : undefined, token);
    assert.deepEqual((await na.listDevices({})).devices, []);
    assert.equal((await nb.listDevices({})).devices.length, 1);
  });

  it("sets a group's notifications as ListGroups shows them; refuses UNSPECIFIED and non-members", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "nsa");
    const eve = await registerUser(server.baseUrl, "grpc", "nse");
    const { group } = await alice.groups.createGroup({ name: "settings", memberUsernames: [] });
    assert.ok(group);
    const gid = group.groupId;
    const n = notifications(server.baseUrl, alice, "connect");
    const shown = async () => (await alice.groups.listGroups({})).groups.find((g) => g.groupId === gid)?.notifications;

    assert.deepEqual([(await shown())?.level, (await shown())?.mutedUntil], [NotifyLevel.ALL, undefined]);
    const none = await n.setGroupNotifications({ groupId: gid, notifications: { level: NotifyLevel.NONE } });
    assert.deepEqual([none.notifications?.level, none.notifications?.mutedUntil], [NotifyLevel.NONE, undefined]);
    assert.equal((await shown())?.level, NotifyLevel.NONE);

    const until = Math.floor(Date.now() / 1000) * 1000 + 3_600_000;
    const muted = await n.setGroupNotifications({ groupId: gid, notifications: { level: NotifyLevel.ALL, mutedUntil: timestampFromMs(until) } });
    assert.equal(muted.notifications?.mutedUntil && timestampMs(muted.notifications.mutedUntil), until);
    const listed = await shown();
    assert.deepEqual([listed?.level, listed?.mutedUntil && timestampMs(listed.mutedUntil)], [NotifyLevel.ALL, until]);
    assert.equal((await alice.groups.getGroup({ groupId: gid })).group?.notifications?.mutedUntil?.seconds, BigInt(until / 1000), "GetGroup too");

    const past = await n.setGroupNotifications({ groupId: gid, notifications: { level: NotifyLevel.ALL, mutedUntil: timestampFromMs(Date.now() - 60_000) } });
    assert.equal(past.notifications?.mutedUntil, undefined, "a time in the past means not muted");
    assert.equal((await shown())?.mutedUntil, undefined);

    const unspecified = await rejected(n.setGroupNotifications({ groupId: gid, notifications: { level: NotifyLevel.UNSPECIFIED } }));
    assert.equal(unspecified.code, Code.InvalidArgument);
    assert.match(unspecified.rawMessage, /notifications\.level is required: NOTIFY_LEVEL_ALL or NOTIFY_LEVEL_NONE/);
    const missing = await rejected(n.setGroupNotifications({ groupId: gid }));
    assert.equal(missing.code, Code.InvalidArgument);
    assert.match(missing.rawMessage, /notifications is required/);
    const stranger = await rejected(notifications(server.baseUrl, eve).setGroupNotifications({ groupId: gid, notifications: { level: NotifyLevel.NONE } }));
    assert.equal(stranger.code, Code.NotFound);
    assert.equal(stranger.code, await codeOf(eve.groups.getGroup({ groupId: gid })), "as the other group calls answer a non-member");
    assert.deepEqual([(await shown())?.level, (await shown())?.mutedUntil], [NotifyLevel.ALL, undefined], "the refused calls changed nothing");
  });

  it("refuses every call without a valid token with UNAUTHENTICATED", async () => {
    const anonymous = notifications(server.baseUrl, undefined);
    const forged = createClient(NotificationService, transportFor(server.baseUrl, "grpc", [bearer(() => "not.a.token")]));
    for (const n of [anonymous, forged]) {
      const calls: Promise<unknown>[] = [
        n.registerDevice({ target: fcm("token") }),
        n.unregisterDevice({ deviceId: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b" }),
        n.listDevices({}),
        n.setGroupNotifications({ groupId: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", notifications: { level: NotifyLevel.NONE } }),
      ];
      for (const call of calls) assert.equal(await codeOf(call), Code.Unauthenticated);
    }
  });
});

describe("NotificationService with PUSH_ALLOW_PRIVATE_ENDPOINTS=true", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ PUSH_ALLOW_PRIVATE_ENDPOINTS: "true" });
  });
  after(async () => {
    await server.stop();
  });

  it("accepts a test's loopback receiver over http://", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "nlo");
    const n = notifications(server.baseUrl, alice);
    const device: Device | undefined = (await n.registerDevice({ target: webPush("http://127.0.0.1:9/push/1") })).device;
    assert.equal(device?.target.case === "webPush" && device.target.value.endpoint, "http://127.0.0.1:9/push/1");
    const err = await rejected(n.registerDevice({ target: webPush("ftp://127.0.0.1/push") }));
    assert.equal(err.code, Code.InvalidArgument, "other schemes stay refused");
  });
});
