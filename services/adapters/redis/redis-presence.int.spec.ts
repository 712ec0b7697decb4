/**
 * RedisPresence against the shared Redis at REDIS_URL (keys under a unique
 * prefix, deleted afterwards): the contract suite, and the keys' own expiry.
 * Skipped unless REDIS_URL is set.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Redis } from "ioredis";
import { presenceContract } from "../../../test/contract/presence.contract.js";
import { sharedRedis } from "../../../test/support/redis-test-helpers.js";
import { newId } from "../../core/ids.js";
import { RedisPresence } from "./redis-presence.js";

const url = process.env.REDIS_URL;
const skip = !url;

const contract = sharedRedis(url ?? "", "pr-contract");
presenceContract("redis", async () => new RedisPresence(await contract.client(), { prefix: contract.prefix }), {
  skip,
  cleanup: () => contract.close(),
});

describe("RedisPresence (Redis)", { skip }, () => {
  const env = sharedRedis(url ?? "", "pr");
  let client: Redis;
  before(async () => {
    client = await env.client();
  });
  after(async () => {
    await env.close();
  });

  it("gives each user's key a TTL of at least the longest entry, so a dead process leaves nothing behind", async () => {
    const presence = new RedisPresence(client, { prefix: env.prefix });
    const u = newId();
    await presence.setOnline("h-long", [u], 5_000);
    await presence.setOnline("h-short", [u], 1_000);
    const pttl = await client.pttl(presence.key(u));
    assert.ok(pttl > 1_000 && pttl <= 5_000, `PTTL ${pttl} in (1000, 5000]`);
  });
});
