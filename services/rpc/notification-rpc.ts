import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import type { NotificationSetting } from "../../gen/chat/v1/group_pb.js";
import { NotificationService, type RegisterDeviceRequest } from "../../gen/chat/v1/notification_service_pb.js";
import { ChatError } from "../core/errors.js";
import { deviceToProto, notifyLevelFromProto, notifySettingToProto } from "../delivery/proto-convert.js";
import type { DeviceRegistry, DeviceTarget, NotifySettingInput } from "../notifier/device-registry.js";
import { principalOf } from "./interceptors.js";

/** notificationRoutes serves chat.v1.NotificationService: proto in, the device registry, proto out. */
export function notificationRoutes(router: ConnectRouter, devices: DeviceRegistry): ConnectRouter {
  return router.service(NotificationService, {
    async registerDevice(req, ctx) {
      return { device: deviceToProto(await devices.register(principalOf(ctx.values), targetOf(req.target))) };
    },
    async unregisterDevice(req, ctx) {
      await devices.unregister(principalOf(ctx.values), req.deviceId);
      return {};
    },
    async listDevices(_req, ctx) {
      return { devices: (await devices.list(principalOf(ctx.values))).map(deviceToProto) };
    },
    async setGroupNotifications(req, ctx) {
      const setting = await devices.setGroupNotifications(principalOf(ctx.values), req.groupId, settingOf(req.notifications));
      return { notifications: notifySettingToProto(setting) };
    },
  });
}

/** targetOf maps the request's oneof to the use-case's target; undefined when none is set (the use-case refuses it). */
function targetOf(target: RegisterDeviceRequest["target"]): DeviceTarget | undefined {
  switch (target.case) {
    case "webPush":
      return { kind: "web_push", endpoint: target.value.endpoint, p256dh: target.value.p256dh, auth: target.value.auth };
    case "fcm":
      return { kind: "fcm", token: target.value.token };
    case "apns":
      return { kind: "apns", deviceToken: target.value.deviceToken, topic: target.value.topic };
    default:
      return undefined;
  }
}

/** settingOf maps the request's setting: a muted_until before 1970 is in the past (not muted); one after 9999 is refused. */
function settingOf(n: NotificationSetting | undefined): NotifySettingInput {
  if (!n) throw new ChatError("InvalidArgument", "notifications is required (set level to NOTIFY_LEVEL_ALL or NOTIFY_LEVEL_NONE)");
  const mutedUntil = n.mutedUntil ? timestampMs(n.mutedUntil) : 0;
  if (!Number.isFinite(mutedUntil) || mutedUntil > MAX_TIME_MS) {
    throw new ChatError("InvalidArgument", "notifications.muted_until must be a time before the year 10000");
  }
  return { level: notifyLevelFromProto(n.level), mutedUntil: Math.max(0, Math.floor(mutedUntil)) };
}

/** MAX_TIME_MS is 9999-12-31T23:59:59.999Z, the last instant a Timestamp may name. */
const MAX_TIME_MS = 253_402_300_799_999;
