/**
 * The device-registration use-cases of NotificationService: a user's push
 * targets (Web Push subscriptions, FCM registrations, APNs device tokens)
 * and their per-group push settings. Every input is checked here, so what
 * reaches the store, and later a push service, is well formed: a Web Push
 * endpoint passes the endpoint policy (core/push-endpoint.ts), its keys
 * decode to what RFC 8291 encrypts with.
 */
import { ECDH } from "node:crypto";
import { ChatError, groupNotFound } from "../core/errors.js";
import { newId } from "../core/ids.js";
import type { Membership } from "../core/membership.js";
import type { Device, NotifyLevel, NotifySetting } from "../core/model.js";
import type { Clock, DeviceStore, ReadStateStore } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import { checkPushEndpoint } from "../core/push-endpoint.js";
import { checkId } from "../core/validate.js";

/** DeviceRegistrySettings are the registry's limits and the Web Push endpoint policy. */
export interface DeviceRegistrySettings {
  /** The most devices one user may have registered (MAX_DEVICES_PER_USER, default 10). */
  readonly maxDevices: number;
  /** Which Web Push endpoints are accepted (core/push-endpoint.ts): allowPrivate admits loopback, private and link-local hosts (tests). */
  readonly endpointPolicy: { readonly allowPrivate: boolean };
}

/** DeviceTarget is a push target as a client names it, before it is checked. */
export type DeviceTarget =
  | { readonly kind: "web_push"; readonly endpoint: string; readonly p256dh: string; readonly auth: string }
  | { readonly kind: "fcm"; readonly token: string }
  | { readonly kind: "apns"; readonly deviceToken: string; readonly topic: string };

/** NotifySettingInput is a push setting as a client sends it: `level` undefined when the client left it UNSPECIFIED; `mutedUntil` 0 when unset. */
export interface NotifySettingInput {
  readonly level: NotifyLevel | undefined;
  readonly mutedUntil: number;
}

/** MAX_FCM_TOKEN_CHARS bounds an FCM registration token (real ones are about 160 characters). */
export const MAX_FCM_TOKEN_CHARS = 4096;

/**
 * DeviceRegistry registers, lists and removes a user's push devices and
 * sets the user's push setting per group.
 *
 * Guarantees: a stored device passed every check below; a user never sees
 * or removes another user's device (another's device id is NotFound, as an
 * unknown one); a user has at most `maxDevices` devices (the store enforces
 * it, FailedPrecondition past it); a push setting is stored only for a
 * member (NotFound otherwise, as for a group that does not exist).
 */
export class DeviceRegistry {
  constructor(
    private readonly deps: {
      store: DeviceStore & ReadStateStore;
      membership: Membership;
      clock: Clock;
      settings: DeviceRegistrySettings;
    },
  ) {}

  /**
   * register checks the target and stores it as the caller's device. The
   * same (kind, token) registered again keeps its id and createdAt (the
   * returned device is the stored one); InvalidArgument names the field and
   * the rule; FailedPrecondition (tooManyDevices) past maxDevices.
   */
  async register(caller: Principal, target: DeviceTarget | undefined): Promise<Device> {
    const checked = this.check(target);
    const device: Device = { id: newId(), userId: caller.userId, createdAt: this.deps.clock.now(), ...checked };
    return this.deps.store.registerDevice(device, this.deps.settings.maxDevices);
  }

  /** unregister removes one of the caller's devices; NotFound if the caller has none with that id. */
  async unregister(caller: Principal, deviceId: string): Promise<void> {
    checkId("device_id", deviceId);
    if (!(await this.deps.store.unregisterDevice(caller.userId, deviceId))) {
      throw new ChatError("NotFound", `device ${deviceId} not found (or it is not yours)`);
    }
  }

  /** list returns the caller's devices, oldest first. */
  list(caller: Principal): Promise<Device[]> {
    return this.deps.store.listDevices(caller.userId);
  }

  /**
   * setGroupNotifications stores the caller's push setting for a group and
   * returns it as stored: a `mutedUntil` not in the future is stored as 0
   * (not muted). InvalidArgument for an unspecified level; NotFound for a
   * group the caller is not a member of.
   */
  async setGroupNotifications(caller: Principal, groupId: string, input: NotifySettingInput): Promise<NotifySetting> {
    checkId("group_id", groupId);
    if (input.level === undefined) {
      throw new ChatError("InvalidArgument", "notifications.level is required: NOTIFY_LEVEL_ALL or NOTIFY_LEVEL_NONE");
    }
    if (!Number.isSafeInteger(input.mutedUntil) || input.mutedUntil < 0) {
      throw new ChatError("InvalidArgument", "notifications.muted_until is out of range");
    }
    await this.deps.membership.requireMember(groupId, caller.userId);
    const setting: NotifySetting = { level: input.level, mutedUntil: input.mutedUntil > this.deps.clock.now() ? input.mutedUntil : 0 };
    if (!(await this.deps.store.setNotify(groupId, caller.userId, setting))) throw groupNotFound(groupId);
    return setting;
  }

  private check(target: DeviceTarget | undefined): Pick<Device, "kind" | "token" | "p256dh" | "auth" | "topic"> {
    if (target === undefined) throw new ChatError("InvalidArgument", "target is required: set web_push, fcm or apns");
    switch (target.kind) {
      case "web_push":
        return {
          kind: "web_push",
          token: this.checkEndpoint(target.endpoint),
          p256dh: checkP256dh(target.p256dh),
          auth: checkAuthSecret(target.auth),
          topic: "",
        };
      case "fcm":
        return { kind: "fcm", token: checkFcmToken(target.token), p256dh: "", auth: "", topic: "" };
      case "apns":
        return { kind: "apns", token: checkApnsToken(target.deviceToken), p256dh: "", auth: "", topic: checkApnsTopic(target.topic) };
    }
  }

  /** checkEndpoint applies the endpoint policy; its sentences start with "endpoint", named here as the request's field. */
  private checkEndpoint(endpoint: string): string {
    const problem = checkPushEndpoint(endpoint, this.deps.settings.endpointPolicy);
    if (problem !== undefined) throw invalid(`web_push.${problem}`);
    return endpoint;
  }
}

/**
 * decodeBase64Url decodes unpadded (or "="-padded) base64url, or returns
 * undefined for any other character or an impossible length; Buffer's own
 * decoder would skip what it does not understand.
 */
export function decodeBase64Url(text: string): Buffer | undefined {
  const bare = text.replace(/={1,2}$/, "");
  if (!/^[A-Za-z0-9_-]*$/.test(bare) || bare.length % 4 === 1) return undefined;
  return Buffer.from(bare, "base64url");
}

/** checkP256dh checks a subscription's public key: base64url of a 65-byte uncompressed point on P-256; returns it unpadded. */
export function checkP256dh(key: string): string {
  const what = "web_push.p256dh must be the subscription's P-256 public key (PushSubscription.getKey(\"p256dh\")), base64url-encoded";
  if (key === "") throw invalid(`${what}; it is empty`);
  const bytes = decodeBase64Url(key);
  if (!bytes) throw invalid(`${what}; it is not base64url (A-Z a-z 0-9 - _)`);
  if (bytes.length !== 65 || bytes[0] !== 0x04) {
    throw invalid(`${what}: 65 bytes starting with 0x04 (an uncompressed point); it decodes to ${bytes.length} bytes`);
  }
  try {
    ECDH.convertKey(bytes, "prime256v1");
  } catch {
    throw invalid(`${what}; its 65 bytes are not a point on the P-256 curve`);
  }
  return bytes.toString("base64url");
}

/** checkAuthSecret checks a subscription's authentication secret: base64url of 16 bytes; returns it unpadded. */
export function checkAuthSecret(secret: string): string {
  const what = "web_push.auth must be the subscription's authentication secret (PushSubscription.getKey(\"auth\")), base64url-encoded";
  if (secret === "") throw invalid(`${what}; it is empty`);
  const bytes = decodeBase64Url(secret);
  if (!bytes) throw invalid(`${what}; it is not base64url (A-Z a-z 0-9 - _)`);
  if (bytes.length !== 16) throw invalid(`${what}: 16 bytes; it decodes to ${bytes.length} bytes`);
  return bytes.toString("base64url");
}

/** checkFcmToken checks an FCM registration token: 1 to 4096 printable ASCII characters, no spaces. */
export function checkFcmToken(token: string): string {
  if (token === "") throw invalid("fcm.token is required (the app's FCM registration token)");
  if (token.length > MAX_FCM_TOKEN_CHARS) throw invalid(`fcm.token is ${token.length} characters; at most ${MAX_FCM_TOKEN_CHARS}`);
  if (!/^[\x21-\x7e]+$/.test(token)) throw invalid("fcm.token must be printable ASCII without spaces (an FCM registration token)");
  return token;
}

/** checkApnsToken checks an APNs device token: 64 to 200 hex digits; returned in lower case. */
export function checkApnsToken(token: string): string {
  if (token === "") throw invalid("apns.device_token is required (the device token, in hex)");
  if (!/^[0-9a-fA-F]+$/.test(token)) throw invalid("apns.device_token must be hex digits (0-9, a-f): the device token's bytes in hex");
  if (token.length < 64 || token.length > 200) throw invalid(`apns.device_token must be 64 to 200 hex digits; it has ${token.length}`);
  return token.toLowerCase();
}

/** checkApnsTopic checks an APNs topic (the app's bundle id): 1 to 255 printable ASCII characters, no spaces. */
export function checkApnsTopic(topic: string): string {
  if (topic === "") throw invalid("apns.topic is required (the app's bundle id, e.g. com.example.chat)");
  if (topic.length > 255) throw invalid(`apns.topic is ${topic.length} characters; at most 255`);
  if (!/^[\x21-\x7e]+$/.test(topic)) throw invalid("apns.topic must be printable ASCII without spaces (the app's bundle id)");
  return topic;
}

function invalid(message: string): ChatError {
  return new ChatError("InvalidArgument", message);
}
