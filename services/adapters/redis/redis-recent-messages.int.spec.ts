/**
 * RedisRecentMessages against a real Redis: the contract suite and the
 * Redis-specific behaviour (expiry, a set lost apart from its window, a
 * flush) on the shared server at REDIS_URL under a unique prefix, and a
 * stopped server on a private redis-server. Skipped unless REDIS_URL is set.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Redis } from "ioredis";
import { recentMessagesContract } from "../../../test/contract/recent-messages.contract.js";
import { connectRedis, hasRedisServerBin, PrivateRedis, sharedRedis } from "../../../test/support/redis-test-helpers.js";
import { isChatError } from "../../core/errors.js";
import { newId } from "../../core/ids.js";
import type { GroupEvent } from "../../core/model.js";
import { RedisRecentMessages } from "./redis-recent-messages.js";

const url = process.env.REDIS_URL;
const skip = !url;

const contract = sharedRedis(url ?? "", "rm-contract");
let contractClient: Redis | undefined;
recentMessagesContract(
  "redis",
  async (perGroup) => {
    contractClient ??= await contract.client();
    return new RedisRecentMessages(contractClient, { prefix: contract.prefix, perGroup });
  },
  { skip, cleanup: () => contract.close() },
);

function message(groupId: string, seq: number): GroupEvent {
  const sender = { id: "u1", username: "ann" };
  return {
    groupId,
    seq,
    at: seq,
    actor: sender,
    body: { type: "message", message: { id: `m${seq}`, groupId, seq, sender, text: `t${seq}`, sentAt: seq, clientMessageId: `c${seq}` } },
  };
}

const ALL = { order: "asc", from: 1, to: Number.MAX_SAFE_INTEGER, take: 100 } as const;

describe("RedisRecentMessages (Redis)", { skip }, () => {
  const env = sharedRedis(url ?? "", "rm");
  let client: Redis;

  before(async () => {
    client = await env.client();
  });

  after(async () => {
    await env.close();
  });

  it("expires a group idleMs after its last event, and each event restarts the clock", async () => {
    const recent = new RedisRecentMessages(client, { prefix: env.prefix, idleMs: 400 });
    const g = newId();
    await recent.record(message(g, 1));
    const [windowKey, setKey] = recent.keys(g);
    for (const key of [windowKey, setKey]) {
      const pttl = await client.pttl(key);
      assert.ok(pttl > 0 && pttl <= 400, `${key}: PTTL ${pttl} in (0, 400]`);
    }
    await sleep(250);
    await recent.record(message(g, 2));
    await sleep(250);
    assert.deepEqual((await recent.scan(g, ALL)).window, { lo: 1, hi: 2 }, "alive: the second event restarted the clock");
    await sleep(300);
    assert.equal((await recent.scan(g, ALL)).window, undefined);
    assert.equal(await client.exists(windowKey, setKey), 0);
  });

  it("treats a group whose messages vanished apart from its window as unknown, then starts afresh", async () => {
    const recent = new RedisRecentMessages(client, { prefix: env.prefix });
    const g = newId();
    for (let s = 1; s <= 3; s++) await recent.record(message(g, s));
    await client.del(recent.keys(g)[1]); // as an eviction of that key alone would
    assert.deepEqual(await recent.scan(g, ALL), { window: undefined, messages: [] }, "no window claims messages it lost");
    await recent.record(message(g, 5));
    const after = await recent.scan(g, ALL);
    assert.deepEqual(after.window, { lo: 5, hi: 5 });
    assert.deepEqual(after.messages.map((m) => m.seq), [5]);
  });

  it("rejects with Unavailable, promptly, when Redis is down", { skip: !hasRedisServerBin() }, async () => {
    const server = await PrivateRedis.start();
    const c = await connectRedis(server.url, { commandTimeoutMs: 300, maxReconnectDelayMs: 100 });
    try {
      const recent = new RedisRecentMessages(c, { prefix: "rm-down:" });
      const g = newId();
      await recent.record(message(g, 1));
      assert.equal((await recent.scan(g, ALL)).messages.length, 1);
      await server.stop();
      for (const op of [() => recent.record(message(g, 2)), () => recent.scan(g, ALL)]) {
        const t0 = performance.now();
        await assert.rejects(op(), (e: unknown) => isChatError(e, "Unavailable"));
        assert.ok(performance.now() - t0 < 3_000, "rejected within 3 s");
      }
    } finally {
      c.disconnect();
      await server.close();
    }
  });
});
