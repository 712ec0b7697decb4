/**
 * startNotifier builds the senders from the configuration's credential
 * files: nothing runs without a provider, and a missing or malformed file
 * stops the start with a message naming the setting (and never the key).
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { MemoryPresence } from "../adapters/memory/memory-presence.js";
import { createSqliteStore } from "../adapters/sqlite/sqlite-store.js";
import { type EventFeed, type Store, systemClock } from "../core/ports.js";
import { loadConfig } from "./config.js";
import { AppMetrics } from "./metrics.js";
import { notifierSettings, startNotifier } from "./notifier-wiring.js";

const silent = { error() {}, warn() {}, info() {}, debug() {} };

describe("startNotifier", () => {
  let dir: string;
  let store: Store;
  const followed: string[] = [];
  const feed: EventFeed = {
    async follow(name) {
      followed.push(name);
      return { unsubscribe() {} };
    },
  };
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "chat-wiring-"));
    store = createSqliteStore({ path: ":memory:", retentionMs: 86_400_000, clock: systemClock });
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const start = (env: Record<string, string>) =>
    startNotifier({
      config: loadConfig(env),
      store,
      feed,
      presence: new MemoryPresence(),
      clock: systemClock,
      logger: silent,
      metrics: new AppMetrics({ defaultMetrics: false }),
    });

  it("starts nothing without a configured provider", async () => {
    assert.equal(await start({}), undefined);
    assert.deepEqual(followed, []);
  });

  it("starts with the providers whose credentials are configured, and stops", async () => {
    const key = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    await writeFile(join(dir, "apns.p8"), key);
    await writeFile(join(dir, "vapid.json"), JSON.stringify({ publicKey: VAPID_PUBLIC, privateKey: VAPID_PRIVATE }));
    const running = await start({
      APNS_KEY_FILE: join(dir, "apns.p8"),
      APNS_KEY_ID: "KEY1234567",
      APNS_TEAM_ID: "TEAM123456",
      WEB_PUSH_VAPID_SUBJECT: "mailto:ops@chat.example",
      WEB_PUSH_VAPID_KEY_FILE: join(dir, "vapid.json"),
    });
    assert.ok(running);
    assert.deepEqual([...running.kinds].sort(), ["apns", "web_push"]);
    assert.deepEqual(followed, ["notifier"]);
    await running.stop(100);
  });

  it("refuses a missing or malformed credential file, naming the setting but never the key", async () => {
    await assert.rejects(start({ APNS_KEY_FILE: join(dir, "absent.p8"), APNS_KEY_ID: "K", APNS_TEAM_ID: "T" }), /^Error: APNS_KEY_FILE: cannot read /);
    const secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----";
    await writeFile(join(dir, "sa.json"), `{"private_key": ${JSON.stringify(secret)}`); // truncated JSON
    await assert.rejects(start({ FCM_SERVICE_ACCOUNT_FILE: join(dir, "sa.json") }), (e: Error) => /^FCM_SERVICE_ACCOUNT_FILE: .* is not a JSON object$/.test(e.message) && !e.message.includes("c2VjcmV0"));
    await writeFile(join(dir, "sa2.json"), JSON.stringify({ client_email: "x@y.iam.gserviceaccount.com", private_key: secret }));
    await assert.rejects(start({ FCM_SERVICE_ACCOUNT_FILE: join(dir, "sa2.json") }), /has no project_id; set FCM_PROJECT_ID/);
    await writeFile(join(dir, "vapid-bad.json"), JSON.stringify({ publicKey: "short", privateKey: VAPID_PRIVATE }));
    await assert.rejects(
      start({ WEB_PUSH_VAPID_SUBJECT: "mailto:a@b.c", WEB_PUSH_VAPID_KEY_FILE: join(dir, "vapid-bad.json") }),
      /WEB_PUSH_VAPID_KEY_FILE: .* must hold "publicKey" \(65 bytes\)/,
    );
  });

  it("waits for acknowledgements longer than a window, its retries and two send timeouts, and keeps claims for the retention period", () => {
    const s = notifierSettings(loadConfig({ NOTIFY_WINDOW: "3s", PUSH_RETRY_WINDOW: "20s", PUSH_TIMEOUT: "5s", RETENTION: "7d" }));
    assert.ok(s.ackWaitMs > 3_000 + 20_000 + 2 * 5_000);
    assert.equal(s.claimTtlMs, 7 * 86_400_000);
    assert.deepEqual(s.retry, { maxAttempts: 5, baseMs: 500, windowMs: 20_000 });
  });
});

const VAPID_PUBLIC = "BPsbsYN1IyBDc5exvsP9AYKwLANWglGQpMBokEmdJeciy36LWNK-d1wOAj2EpTX9UHGGqEegn9fII6IpHDeT9iU";
const VAPID_PRIVATE = "BjfzYuzOsVCn0A_mc1Ijprakjh5nhYVsQqZ6WexUnNs";
