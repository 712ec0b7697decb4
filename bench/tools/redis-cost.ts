/**
 * redis-cost: CPU per send of the two Redis calls a send makes on the
 * production path (the per-user rate-limit take before the append, the
 * recent-messages record after it), client (this process, ioredis) and
 * server (a private redis-server), by how the calls reach Redis:
 *
 * - one per turn: every send's calls in an event-loop turn of their own (a
 *   script call per take and per record, as before issue 13.4's third session);
 * - 5 per turn: the sends acknowledged together (the sequencer's 10 ms
 *   publish linger at 500 msg/s acks about five at once) make their calls in
 *   one turn. A variant of RedisRateLimiter and RedisRecentMessages that sent
 *   one turn's calls as one script call each was measured with this tool and
 *   not kept (docs/production.md, issue 13.4's third session); with today's
 *   adapters each call is its own script call in both modes.
 *
 * 4,000 sends at 500/s, 100 groups, 2,000 users, through the real adapters.
 *
 *   node --import tsx bench/tools/redis-cost.ts
 */
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { PrivateRedis, connectRedis } from "../../test/support/redis-test-helpers.js";
import { RedisRateLimiter } from "../../services/adapters/redis/redis-rate-limiter.js";
import { RedisRecentMessages } from "../../services/adapters/redis/redis-recent-messages.js";
import type { GroupEvent } from "../../services/core/model.js";

function cpuOf(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

const redis = await PrivateRedis.start();
const client = await connectRedis(redis.url);
const limiter = new RedisRateLimiter(client, { prefix: "cost:" });
const recent = new RedisRecentMessages(client, { prefix: "cost:", perGroup: 100 });
const limit = { burst: 1000, perSecond: 1000 };
const heads = new Map<number, number>();

function event(g: number, user: number): GroupEvent {
  const seq = (heads.get(g) ?? 0) + 1;
  heads.set(g, seq);
  const groupId = `g${g}`;
  const sender = { id: `u${user}`, username: `user${user}` };
  const message = { id: `m${g}-${seq}`, groupId, seq, sender, text: "x".repeat(100), sentAt: Date.now(), clientMessageId: `c${seq}` };
  return { groupId, seq, at: message.sentAt, actor: sender, body: { type: "message", message } };
}

async function phase(label: string, perTurn: number, N = 4000, RATE = 500): Promise<void> {
  const pid = redis.pid!;
  const r0 = cpuOf(pid);
  const c0 = process.cpuUsage();
  const t0 = Date.now();
  const inflight: Promise<unknown>[] = [];
  // Every 10 ms five sends; the loop is the same in both modes, only how their calls meet in turns differs.
  for (let i = 0; i < N; i += 5) {
    for (let k = i; k < i + 5 && k < N; k++) {
      const user = k % 2000;
      const send = () =>
        inflight.push(
          limiter.take(`send:user:u${user}`, limit).then(async () => {
            await sleep(1); // the append
            await recent.record(event(k % 100, user));
          }),
        );
      // 5 per turn: all five now (their records meet again after the same 1 ms); else each 2 ms apart.
      if (perTurn === 5) send();
      else setTimeout(send, 2 * (k - i));
    }
    const due = t0 + ((i + 5) * 1000) / RATE;
    const w = due - Date.now();
    await (w > 0 ? sleep(w) : new Promise((r) => setImmediate(r)));
  }
  await sleep(20);
  await Promise.all(inflight);
  const c = process.cpuUsage(c0);
  const server = cpuOf(pid) - r0;
  const clientUs = Math.round((c.user + c.system) / N);
  console.log(label, `client ${clientUs} µs/send (this process, with the loop), redis-server ${Math.round((server * 1e6) / N)} µs/send`);
}

await phase("warm-up:", 1, 2000);
await phase("one send per turn:", 1);
await phase("5 sends per turn:", 5);
await phase("one send per turn:", 1);
await phase("5 sends per turn:", 5);
client.disconnect();
await redis.close();
