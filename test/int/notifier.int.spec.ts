/**
 * The notifier in production's shape: two `--services=notify` processes on
 * one durable JetStream consumer (a private nats-server), the Cassandra store
 * (a fresh keyspace, migrated by the processes) and a private Redis for
 * presence, beside one process serving the API. Offline members with Web
 * Push, APNs and FCM devices on the loopback push services get pushes for
 * rounds of messages in several groups; one notifier is SIGKILLed with
 * windows open, and the other takes its events over after the ack wait.
 * Never twice: no (device, group, newest seq) is pushed twice; nothing
 * dropped: every device's last push of each group tells of the group's last
 * message. Needs NATS_URL and CASSANDRA_URL (the integration run), and the
 * nats-server and redis-server binaries.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "../support/helpers.js";
import { parse } from "../support/metrics-scrape.js";
import { PrivateNatsServer } from "../support/private-nats-server.js";
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
import { PrivateRedis } from "../support/redis-test-helpers.js";
import { type TestKeyspace, openTestKeyspace } from "../support/test-keyspace.js";
import { type Clients, clientsFor } from "../support/test-server.js";

const GROUPS = 4;
const MEMBERS = 4; // offline members per group besides the sender, each with three devices
const ROUNDS = 6;
/** ACK_WAIT_MS is the feed's ack wait with the settings below (server/notifier-wiring.ts): window + retry window + 2 send timeouts + 10 s. */
const ACK_WAIT_MS = 500 + 2000 + 2 * 2000 + 10_000;

describe("two notifier processes on the JetStream feed and Cassandra", { skip: !process.env.NATS_URL || !process.env.CASSANDRA_URL }, () => {
  let nats: PrivateNatsServer;
  let redis: PrivateRedis;
  let keyspace: TestKeyspace;
  let push: PushFixture;
  let dataDir: string;
  const procs = new Map<string, { proc: ServerProcess; url: string }>();
  let env: Record<string, string>;

  async function start(name: string, services: string, port?: number): Promise<string> {
    const p = port ?? (await freePort());
    const proc = spawnServer({ ...env, PORT: String(p) }, services);
    const url = `http://127.0.0.1:${p}`;
    procs.set(name, { proc, url });
    await serverListening(proc);
    return url;
  }

  async function metric(name: string, metricName: string, labels: Record<string, string> = {}): Promise<number> {
    const p = procs.get(name);
    assert.ok(p);
    const res = await fetch(`${p.url}/metrics`);
    return parse(await res.text()).get(metricName, labels);
  }

  before(async () => {
    nats = await PrivateNatsServer.create();
    await nats.start();
    redis = await PrivateRedis.start();
    push = await startPushFixture();
    dataDir = await mkdtemp(join(tmpdir(), "chat-notify-int-"));
    keyspace = await openTestKeyspace(process.env.CASSANDRA_URL ?? "", { migrate: false });
    const u = new URL(process.env.CASSANDRA_URL ?? "");
    const authPort = await freePort();
    env = {
      ...push.env,
      DATA_DIR: dataDir,
      STORE_URL: `cassandra://${u.host}/${keyspace.keyspace}${u.search}`,
      MIGRATE: "true",
      BUS_URL: nats.url,
      CACHE_URL: redis.url,
      NAMESPACE: "notifyint",
      LOG_LEVEL: "info",
      SHUTDOWN_GRACE: "2s",
      REGISTRATIONS_PER_MINUTE_PER_ADDRESS: "1000",
      SEND_BURST: "100000",
      AUTH_JWKS_URL: `http://127.0.0.1:${authPort}/.well-known/jwks.json`,
      NOTIFY_WINDOW: "500ms",
      // A short ack wait (window + retry window + 2 timeouts + 10 s), so the survivor takes over the dead one's events soon.
      PUSH_TIMEOUT: "2s",
      PUSH_RETRY_WINDOW: "2s",
    };
    await start("api", "auth,group,message,stream", authPort);
    await Promise.all([start("notify-1", "notify"), start("notify-2", "notify")]);
  });

  after(async () => {
    await Promise.all([...procs.values()].map((p) => killServer(p.proc, "SIGKILL")));
    await push?.close();
    await nats?.dispose();
    await redis?.close();
    await keyspace?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("never pushes a (device, group, newest seq) twice, and every device hears of every group's last message, across a SIGKILLed notifier", { timeout: 240_000 }, async () => {
    const api = procs.get("api")?.url ?? "";
    const notifyUrl = procs.get("notify-1")?.url ?? "";
    const register = async (name: string): Promise<Clients> => {
      const c = clientsFor(api, "grpc");
      const res = await c.auth.register({ username: `${name}${process.pid % 10000}`, password: "correct horse battery" });
      c.token = res.tokens?.accessToken;
      c.userId = res.user?.userId ?? "";
      c.username = res.user?.username ?? "";
      return c;
    };
    const alice = await register("nalice");
    const members: { c: Clients; devices: Registered[] }[] = [];
    for (let i = 0; i < MEMBERS * GROUPS; i++) {
      const c = await register(`nm${i}x`);
      members.push({ c, devices: await registerDevices(push, notificationsOf(c, notifyUrl)) });
    }
    const groups: { id: string; members: typeof members }[] = [];
    for (let g = 0; g < GROUPS; g++) {
      // Each group has MEMBERS members of its own and MEMBERS shared with the next group (badges span groups).
      const own = members.slice(g * MEMBERS, (g + 1) * MEMBERS);
      const shared = members.slice(((g + 1) % GROUPS) * MEMBERS, ((g + 1) % GROUPS) * MEMBERS + 1);
      const gm = [...own, ...shared];
      const res = await alice.groups.createGroup({ name: `notify ${g}`, memberUsernames: gm.map((m) => m.c.username) });
      groups.push({ id: res.group?.groupId ?? "", members: gm });
    }
    const last = new Map<string, bigint>();
    let n = 0;
    const round = async () => {
      await Promise.all(
        groups.map(async (g) => {
          for (let k = 0; k < 1 + (n % 3); k++) {
            const res = await alice.messages.sendMessage({ groupId: g.id, text: `m${n}-${k}`, clientMessageId: `${g.id}-${n}-${k}` });
            last.set(g.id, res.message?.seq ?? 0n);
          }
        }),
      );
      n++;
    };
    for (let r = 0; r < ROUNDS / 2; r++) {
      await round();
      await sleep(300); // some rounds share a window, some do not
    }
    // One notifier dies with windows open: its events come again to the other after the ack wait.
    let held = 0;
    for (let i = 0; i < 10 && held === 0; i++) {
      await round();
      held = await metric("notify-2", "chat_notify_groups_pending");
    }
    assert.ok(held > 0, "notify-2 held a window when it was killed");
    await killServer(procs.get("notify-2")?.proc as ServerProcess, "SIGKILL");
    const killedAt = Date.now();
    for (let r = ROUNDS / 2 + 1; r < ROUNDS; r++) {
      await round();
      await sleep(300);
    }

    const expected = groups.flatMap((g) => g.members.flatMap((m) => m.devices.map((d) => ({ d, g: g.id }))));
    const lastPushOf = (d: Registered, gid: string) => pushesTo(push, d).filter((p) => p.groupId === gid).at(-1)?.newestSeq;
    await waitFor(
      "every device's push for its groups' last messages",
      () => expected.every(({ d, g }) => lastPushOf(d, g) === Number(last.get(g))),
      120_000,
    );
    const flushesBefore = await metric("notify-1", "chat_notify_flushes_total", { result: "ok" });
    // The dead one's events come again to the survivor once their ack wait passed: let that happen, then check.
    await sleep(Math.max(0, killedAt + ACK_WAIT_MS + 3000 - Date.now()));
    await waitFor("the surviving notifier idle", async () => (await metric("notify-1", "chat_notify_groups_pending")) === 0, 60_000);

    for (const m of members) {
      for (const d of m.devices) {
        const keys = pushesTo(push, d).map((p) => `${p.groupId}/${p.newestSeq}`);
        assert.deepEqual(keys, [...new Set(keys)], `${d.kind} of ${m.c.username}: no (group, newest seq) twice: ${keys.join(" ")}`);
      }
    }
    assert.deepEqual(push.web.rejections, []);
    assert.deepEqual(push.apns.rejections, []);
    assert.deepEqual(push.fcm.rejections, []);
    const flushes = await metric("notify-1", "chat_notify_flushes_total", { result: "ok" });
    process.stderr.write(
      `notifier int: ${expected.length} (device, group) pairs; notify-2 held ${held} groups when killed; notify-1 flushed ${flushes} windows ` +
        `(${flushes - flushesBefore} after the last round: the redelivered ones); ${push.web.pushes.length + push.apns.pushes.length + push.fcm.pushes.length} pushes\n`,
    );
  });
});
