/**
 * Test support for the notifier's end-to-end tests: the three loopback push
 * services (Web Push, APNs, FCM with its token endpoint, all over TLS with
 * the test certificate), the server settings that point the notifier at
 * them (credential files written to a temporary directory), and clients of
 * NotificationService.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { NotificationService } from "../../gen/chat/v1/notification_service_pb.js";
import { type ApnsReceiver, makeApnsSigningKey, startApnsReceiver } from "./push-receivers/apns-receiver.js";
import { type FcmReceiver, makeServiceAccount, startFcmReceiver } from "./push-receivers/fcm-receiver.js";
import { testCertificate } from "./push-receivers/test-certs.js";
import { type ReceiverSubscription, type WebPushReceiver, makeVapidKeys, startWebPushReceiver } from "./push-receivers/web-push-receiver.js";
import { type Clients, type Protocol, bearer, transportFor } from "./test-server.js";

/** APNS_TOPIC is the bundle id the tests' APNs devices belong to. */
export const APNS_TOPIC = "com.example.chat";

/** PushFixture is the three receivers and the settings that make a server push to them. */
export interface PushFixture {
  readonly web: WebPushReceiver;
  readonly apns: ApnsReceiver;
  readonly fcm: FcmReceiver;
  /** env holds every push setting (PUSH_*, WEB_PUSH_*, FCM_*, APNS_*) for the server under test. */
  readonly env: Readonly<Record<string, string>>;
  close(): Promise<void>;
}

/** startPushFixture starts the receivers and writes the credential files (CA, APNs .p8, FCM service account). */
export async function startPushFixture(): Promise<PushFixture> {
  const dir = await mkdtemp(join(tmpdir(), "chat-push-"));
  const vapid = makeVapidKeys("mailto:push-test@example.com");
  const apnsKey = makeApnsSigningKey();
  const account = makeServiceAccount();
  const [web, apns, fcm] = await Promise.all([startWebPushReceiver(), startApnsReceiver(apnsKey), startFcmReceiver(account)]);
  const caFile = join(dir, "ca.pem");
  const apnsKeyFile = join(dir, "apns.p8");
  const serviceAccountFile = join(dir, "service-account.json");
  await writeFile(caFile, testCertificate().cert);
  await writeFile(apnsKeyFile, apnsKey.privateKeyPem, { mode: 0o600 });
  await writeFile(
    serviceAccountFile,
    JSON.stringify({
      type: "service_account",
      project_id: account.projectId,
      client_email: account.clientEmail,
      private_key: account.privateKeyPem,
      token_uri: fcm.tokenUrl,
    }),
    { mode: 0o600 },
  );
  const env = {
    PUSH_ALLOW_PRIVATE_ENDPOINTS: "true",
    PUSH_CA_FILE: caFile,
    PUSH_RETRY_BASE: "50ms",
    WEB_PUSH_VAPID_SUBJECT: vapid.subject,
    WEB_PUSH_VAPID_PUBLIC_KEY: vapid.publicKey,
    WEB_PUSH_VAPID_PRIVATE_KEY: vapid.privateKey,
    APNS_URL: apns.url,
    APNS_KEY_ID: apnsKey.keyId,
    APNS_TEAM_ID: apnsKey.teamId,
    APNS_KEY_FILE: apnsKeyFile,
    FCM_SERVICE_ACCOUNT_FILE: serviceAccountFile,
    FCM_BASE_URL: fcm.url,
  };
  return {
    web,
    apns,
    fcm,
    env,
    async close() {
      await Promise.all([web.close(), apns.close(), fcm.close()]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** notificationsOf makes a NotificationService client that calls as `c` (its token at each call). */
export function notificationsOf(c: Clients, baseUrl: string, protocol: Protocol = "grpc"): Client<typeof NotificationService> {
  return createClient(NotificationService, transportFor(baseUrl, protocol, [bearer(() => c.token)]));
}

/** Registered is one device registered through the API, with what its receiver knows it by. */
export type Registered =
  | { readonly kind: "web_push"; readonly deviceId: string; readonly sub: ReceiverSubscription }
  | { readonly kind: "apns"; readonly deviceId: string; readonly token: string }
  | { readonly kind: "fcm"; readonly deviceId: string; readonly token: string };

/** registerDevices registers one device of each kind for the user (a subscription, a device token, a registration token at the receivers). */
export async function registerDevices(
  push: PushFixture,
  notifications: Client<typeof NotificationService>,
  kinds: readonly Registered["kind"][] = ["web_push", "apns", "fcm"],
): Promise<Registered[]> {
  const out: Registered[] = [];
  for (const kind of kinds) {
    if (kind === "web_push") {
      const sub = push.web.subscribe();
      const res = await notifications.registerDevice({ target: { case: "webPush", value: { endpoint: sub.endpoint, p256dh: sub.p256dh, auth: sub.auth } } });
      out.push({ kind, deviceId: res.device?.deviceId ?? "", sub });
    } else if (kind === "apns") {
      const token = push.apns.addDevice(APNS_TOPIC);
      const res = await notifications.registerDevice({ target: { case: "apns", value: { deviceToken: token, topic: APNS_TOPIC } } });
      out.push({ kind, deviceId: res.device?.deviceId ?? "", token });
    } else {
      const token = push.fcm.addToken();
      const res = await notifications.registerDevice({ target: { case: "fcm", value: { token } } });
      out.push({ kind, deviceId: res.device?.deviceId ?? "", token });
    }
  }
  return out;
}

/** ReceivedPush is a push as the tests compare it, whichever service carried it. */
export interface ReceivedPush {
  readonly kind: Registered["kind"];
  readonly groupId: string;
  readonly newestSeq: number;
  /** The message count, where the payload carries it as a field (Web Push, FCM; APNs says it in the body only). */
  readonly count: number | undefined;
  readonly badge: number;
  /** The visible text: title and body. */
  readonly title: string;
  readonly body: string;
  /** The collapse key as the service got it (Web Push Topic, apns-collapse-id, FCM collapse_key). */
  readonly collapse: string | undefined;
}

/** pushesTo returns the pushes each receiver accepted for one registered device, in arrival order. */
export function pushesTo(push: PushFixture, device: Registered): ReceivedPush[] {
  switch (device.kind) {
    case "web_push":
      return push.web.pushes
        .filter((p) => p.subscriptionId === device.sub.id)
        .map((p) => {
          const j = p.json as { title: string; body: string; group_id: string; newest_seq: number; count: number; badge: number };
          return { kind: "web_push", groupId: j.group_id, newestSeq: j.newest_seq, count: j.count, badge: j.badge, title: j.title, body: j.body, collapse: p.topic };
        });
    case "apns":
      return push.apns.pushes
        .filter((p) => p.deviceToken === device.token)
        .map((p) => {
          const aps = p.payload.aps as { alert?: { title?: string; body?: string }; badge?: number };
          return {
            kind: "apns",
            groupId: String(p.payload.group_id),
            newestSeq: Number(p.payload.newest_seq),
            count: undefined,
            badge: Number(aps.badge),
            title: aps.alert?.title ?? "",
            body: aps.alert?.body ?? "",
            collapse: p.collapseId,
          };
        });
    case "fcm":
      return push.fcm.pushes
        .filter((p) => p.token === device.token)
        .map((p) => {
          const data = p.message.data ?? {};
          return {
            kind: "fcm",
            groupId: data.group_id ?? "",
            newestSeq: Number(data.newest_seq),
            count: Number(data.count),
            badge: Number(data.badge),
            title: p.message.notification?.title ?? "",
            body: p.message.notification?.body ?? "",
            collapse: p.message.android?.collapse_key,
          };
        });
  }
}

/** waitFor polls `check` every 20 ms until it returns true, at most `ms` (then throws with `what`). */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const MAIN = join(import.meta.dirname, "../../services/main.ts");

/** ServerProcess is `services/main.ts` run as a child process, with its output kept. */
export interface ServerProcess {
  readonly child: ChildProcess;
  readonly output: () => string;
}

/** spawnServer starts `services/main.ts` (with `--services=` when given) with only `env` (and PATH, HOME) as its environment. */
export function spawnServer(env: Record<string, string>, services?: string): ServerProcess {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...(services ? [`--services=${services}`] : [])], {
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  return { child, output: () => out };
}

/** serverListening waits (at most 60 s) until the process logged that it listens; throws with its output if it exited. */
export async function serverListening(p: ServerProcess): Promise<void> {
  await waitFor(
    "the server to listen",
    () => {
      if (p.child.exitCode !== null) throw new Error(`server exited:\n${p.output()}`);
      return p.output().includes("chat server listening");
    },
    60_000,
  );
}

/** killServer sends `signal` and waits for the exit (at once if it already exited). */
export async function killServer(p: ServerProcess, signal: NodeJS.Signals): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    p.child.once("exit", () => resolve());
    p.child.kill(signal);
  });
}
