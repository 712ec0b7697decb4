/**
 * The notifier's wiring: the push senders built from the configuration
 * (their credential files read here, once, at start) and the notifier
 * started on the process's EventFeed. startApp calls startNotifier when the
 * process serves "notify" and stops it before the backends close.
 */
import { readFile } from "node:fs/promises";
import { createApnsSender } from "../adapters/push/apns-sender.js";
import { DEFAULT_FCM_TOKEN_URL, createFcmSender } from "../adapters/push/fcm-sender.js";
import { createWebPushSender } from "../adapters/push/web-push-sender.js";
import type { Logger } from "../core/logger.js";
import type { PushKind } from "../core/model.js";
import type { Clock, EventFeed, Presence, PushSender, Store } from "../core/ports.js";
import { Notifier, type NotifierSettings } from "../notifier/notifier.js";
import type { Config, PushConfig } from "./config.js";
import type { AppMetrics } from "./metrics.js";

/** RunningNotifier is a started notifier and its senders. */
export interface RunningNotifier {
  readonly notifier: Notifier;
  /** The providers this process can push through. */
  readonly kinds: readonly PushKind[];
  /** stop flushes the open windows (waiting up to `graceMs`), stops following the feed and closes the senders. */
  stop(graceMs: number): Promise<void>;
}

/** NotifierWiringDeps are what the process already has open. */
export interface NotifierWiringDeps {
  readonly config: Config;
  readonly store: Store;
  readonly feed: EventFeed;
  readonly presence: Presence;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The app's metrics: the notifier reports to metrics.notifier and chat_notify_groups_pending reads it. */
  readonly metrics: AppMetrics;
}

/** SEND_CONCURRENCY is how many members one flush plans, and devices it sends to, at once. */
const SEND_CONCURRENCY = 32;

/** ACK_WAIT_SLACK_MS is added to a window, its retries and two send timeouts to make the feed's ack wait (a later ack only means a redelivery, which the push ledger makes harmless). */
const ACK_WAIT_SLACK_MS = 10_000;

/**
 * startNotifier builds a sender for each configured provider and starts the
 * notifier. With no provider configured it starts nothing and says so
 * (undefined): every push would fail as "not_configured", so following the
 * feed would cost store reads for nothing. Throws (the process does not
 * start) when a credential file cannot be read or is malformed.
 */
export async function startNotifier(deps: NotifierWiringDeps): Promise<RunningNotifier | undefined> {
  const { config, logger } = deps;
  const senders = await buildSenders(config.push);
  const kinds = [...senders.keys()];
  if (kinds.length === 0) {
    logger.info("notifier: no push provider is configured (WEB_PUSH_VAPID_*, FCM_*, APNS_*); no pushes are sent");
    return undefined;
  }
  const notifier = new Notifier({
    feed: deps.feed,
    store: deps.store,
    presence: deps.presence,
    senders,
    clock: deps.clock,
    logger,
    observer: deps.metrics.notifier,
    settings: notifierSettings(config),
  });
  try {
    await notifier.start();
  } catch (e) {
    await closeSenders(senders);
    throw e;
  }
  deps.metrics.countNotifierWith(() => notifier.pending);
  logger.info({ providers: kinds, windowMs: config.notifyWindowMs }, "notifier following group events");
  let stopping: Promise<void> | undefined;
  return {
    notifier,
    kinds,
    stop(graceMs) {
      stopping ??= (async () => {
        await notifier.stop(graceMs);
        await closeSenders(senders);
      })();
      return stopping;
    },
  };
}

/** notifierSettings derives the notifier's settings from the configuration. */
export function notifierSettings(config: Config): NotifierSettings {
  const push = config.push;
  return {
    windowMs: config.notifyWindowMs,
    maxPending: config.notifyMaxPending,
    ackWaitMs: config.notifyWindowMs + push.retryWindowMs + 2 * push.timeoutMs + ACK_WAIT_SLACK_MS,
    retry: { maxAttempts: push.maxAttempts, baseMs: push.retryBaseMs, windowMs: push.retryWindowMs },
    // An event can come again until it is past retention (the feed's log keeps no longer), so a claim lives that long.
    claimTtlMs: config.retentionMs,
    maxGroupMembers: config.maxGroupMembers,
    maxGroupsPerUser: config.maxGroupsPerUser,
    concurrency: SEND_CONCURRENCY,
  };
}

type ClosableSender = PushSender & { close(): Promise<void> | void };

/** buildSenders makes one sender per configured provider, reading the credential files. */
async function buildSenders(push: PushConfig): Promise<Map<PushKind, ClosableSender>> {
  const senders = new Map<PushKind, ClosableSender>();
  const ca = push.caFile === undefined ? undefined : await readText(push.caFile, "PUSH_CA_FILE");
  const tls = ca === undefined ? {} : { ca };
  try {
    if (push.webPush) {
      const keys = push.webPush.keyFile === undefined
        ? { publicKey: push.webPush.publicKey ?? "", privateKey: push.webPush.privateKey ?? "" }
        : await readVapidKeyFile(push.webPush.keyFile);
      senders.set(
        "web_push",
        createWebPushSender({
          vapid: { subject: push.webPush.subject, ...keys },
          allowPrivate: push.allowPrivateEndpoints,
          timeoutMs: push.timeoutMs,
          ttlSeconds: push.ttlSeconds,
          ...tls,
        }),
      );
    }
    if (push.fcm) {
      const account = await readServiceAccount(push.fcm.serviceAccountFile);
      const projectId = push.fcm.projectId ?? account.projectId;
      if (projectId === undefined) {
        throw new Error(`FCM_SERVICE_ACCOUNT_FILE: ${push.fcm.serviceAccountFile} has no project_id; set FCM_PROJECT_ID`);
      }
      senders.set(
        "fcm",
        createFcmSender({
          projectId,
          clientEmail: account.clientEmail,
          privateKey: account.privateKey,
          tokenUrl: push.fcm.tokenUrl ?? account.tokenUri ?? DEFAULT_FCM_TOKEN_URL,
          baseUrl: push.fcm.baseUrl,
          timeoutMs: push.timeoutMs,
          ...tls,
        }),
      );
    }
    if (push.apns) {
      const privateKey = await readText(push.apns.keyFile, "APNS_KEY_FILE");
      if (!privateKey.includes("-----BEGIN PRIVATE KEY-----")) throw new Error(`APNS_KEY_FILE: ${push.apns.keyFile} is not a PEM private key (.p8)`);
      senders.set(
        "apns",
        createApnsSender({
          url: push.apns.url,
          keyId: push.apns.keyId,
          teamId: push.apns.teamId,
          privateKey,
          timeoutMs: push.timeoutMs,
          ttlSeconds: push.ttlSeconds,
          ...tls,
        }),
      );
    }
  } catch (e) {
    await closeSenders(senders);
    throw e;
  }
  return senders;
}

async function closeSenders(senders: ReadonlyMap<PushKind, ClosableSender>): Promise<void> {
  await Promise.allSettled([...senders.values()].map(async (s) => s.close()));
}

async function readText(path: string, setting: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    throw new Error(`${setting}: cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

async function readJson(path: string, setting: string): Promise<Record<string, unknown>> {
  const text = await readText(path, setting);
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below, without the file's content (it holds a private key)
  }
  throw new Error(`${setting}: ${path} is not a JSON object`);
}

/** readVapidKeyFile reads {"publicKey","privateKey"} (base64url), as `web-push generate-vapid-keys --json` writes it. */
export async function readVapidKeyFile(path: string): Promise<{ publicKey: string; privateKey: string }> {
  const json = await readJson(path, "WEB_PUSH_VAPID_KEY_FILE");
  const { publicKey, privateKey } = json;
  const b64url = (v: unknown, bytes: number) => typeof v === "string" && /^[A-Za-z0-9_-]+$/.test(v) && Buffer.from(v, "base64url").length === bytes;
  if (!b64url(publicKey, 65) || !b64url(privateKey, 32)) {
    throw new Error(`WEB_PUSH_VAPID_KEY_FILE: ${path} must hold "publicKey" (65 bytes) and "privateKey" (32 bytes) in base64url`);
  }
  return { publicKey: publicKey as string, privateKey: privateKey as string };
}

/** ServiceAccount is what the FCM sender needs of a Google service-account key file. */
export interface ServiceAccount {
  readonly clientEmail: string;
  readonly privateKey: string;
  readonly tokenUri: string | undefined;
  readonly projectId: string | undefined;
}

/** readServiceAccount reads client_email, private_key (PEM), token_uri and project_id from a service-account JSON file. */
export async function readServiceAccount(path: string): Promise<ServiceAccount> {
  const json = await readJson(path, "FCM_SERVICE_ACCOUNT_FILE");
  const str = (k: string) => (typeof json[k] === "string" && json[k] !== "" ? (json[k] as string) : undefined);
  const clientEmail = str("client_email");
  const privateKey = str("private_key");
  if (clientEmail === undefined || privateKey === undefined || !privateKey.includes("-----BEGIN PRIVATE KEY-----")) {
    throw new Error(`FCM_SERVICE_ACCOUNT_FILE: ${path} must hold "client_email" and "private_key" (PEM) of a service account`);
  }
  return { clientEmail, privateKey, tokenUri: str("token_uri"), projectId: str("project_id") };
}
