import type { Redis } from "ioredis";
import type { ChatMessage, GroupEvent } from "../../core/model.js";
import type { RecentMessages, RecentScan, RecentScanResult } from "../../core/ports.js";
import { keyPart, redisUnavailable, requireInt } from "./redis-client.js";

/** RedisRecentMessagesOptions configures a RedisRecentMessages. */
export interface RedisRecentMessagesOptions {
  /** prefix starts every key (e.g. "chat:"); a group's keys are `${prefix}rm:<group>` (window) and `${prefix}rm:<group>:m` (messages). */
  readonly prefix: string;
  /** Messages held per group (the newest). Default 100; >= 1. */
  readonly perGroup?: number;
  /** A group's keys expire this long after its last event (PX), so idle groups free their memory. Default 3 600 000 (1 h); >= 1. */
  readonly idleMs?: number;
}

/**
 * RECORD_LUA applies RecentMessages.record atomically. KEYS: window hash,
 * message sorted set (score = seq). ARGV: seq, encoded message ("" for
 * other events), perGroup, idleMs. The hash keeps lo, hi and n (the size
 * the set must have); a reader that finds another size (the set was
 * evicted or expired apart from the hash) treats the group as unknown.
 */
const RECORD_LUA = `
local seq = tonumber(ARGV[1])
local hi = tonumber(redis.call('HGET', KEYS[1], 'hi'))
if hi and seq <= hi then return 0 end
if not hi or seq ~= hi + 1 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'lo', seq)
end
local n = redis.call('ZCARD', KEYS[2])
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], seq, ARGV[2])
  n = n + 1
  local cap = tonumber(ARGV[3])
  if n > cap then
    local cut = redis.call('ZRANGE', KEYS[2], n - cap - 1, n - cap - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - cap - 1)
    redis.call('HSET', KEYS[1], 'lo', tonumber(cut[2]) + 1)
    n = cap
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('HSET', KEYS[1], 'hi', seq, 'n', n)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`;

/**
 * SCAN_LUA reads the window and the asked messages together. KEYS as
 * above. ARGV: order ("asc" | "desc"), from, to, take. Returns {} when the
 * group is unknown, else {lo, hi, message...}.
 */
const SCAN_LUA = `
local w = redis.call('HMGET', KEYS[1], 'lo', 'hi', 'n')
if not w[1] or not w[2] or not w[3] then return {} end
if tonumber(w[3]) ~= redis.call('ZCARD', KEYS[2]) then return {} end
local msgs
if ARGV[1] == 'asc' then
  msgs = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], ARGV[3], 'LIMIT', 0, ARGV[4])
else
  msgs = redis.call('ZREVRANGEBYSCORE', KEYS[2], ARGV[3], ARGV[2], 'LIMIT', 0, ARGV[4])
end
table.insert(msgs, 1, w[2])
table.insert(msgs, 1, w[1])
return msgs
`;

const RECORD_COMMAND = "chatRecentRecord";
const SCAN_COMMAND = "chatRecentScan";

interface ScriptedClient {
  [RECORD_COMMAND](windowKey: string, setKey: string, seq: number, message: string, perGroup: number, idleMs: number): Promise<number>;
  [SCAN_COMMAND](windowKey: string, setKey: string, order: string, from: number, to: number, take: number): Promise<string[]>;
}

/**
 * RedisRecentMessages is the RecentMessages shared by every process: per
 * group, a hash with the window and a sorted set of the held messages
 * (JSON, scored by seq), changed and read only by Lua scripts, so a reader
 * never sees a window without its messages. Keys expire `idleMs` after the
 * group's last event.
 *
 * Errors: every method rejects with ChatError Unavailable (cause = the
 * ioredis error) when Redis cannot answer; callers read the store instead
 * and nothing is lost (the next event after a lost record starts a new
 * window). Nothing else is thrown.
 */
export class RedisRecentMessages implements RecentMessages {
  private readonly prefix: string;
  private readonly perGroup: number;
  private readonly idleMs: number;

  /** The client is the caller's (see createRedisClient); this never closes it. */
  constructor(
    private readonly client: Redis,
    opts: RedisRecentMessagesOptions,
  ) {
    this.prefix = opts.prefix;
    this.perGroup = requireInt("perGroup", opts.perGroup ?? 100, 1);
    this.idleMs = requireInt("idleMs", opts.idleMs ?? 3_600_000, 1);
    const scripted = client as unknown as Partial<ScriptedClient>;
    if (typeof scripted[RECORD_COMMAND] !== "function") client.defineCommand(RECORD_COMMAND, { lua: RECORD_LUA, numberOfKeys: 2 });
    if (typeof scripted[SCAN_COMMAND] !== "function") client.defineCommand(SCAN_COMMAND, { lua: SCAN_LUA, numberOfKeys: 2 });
  }

  async record(event: GroupEvent): Promise<void> {
    const [windowKey, setKey] = this.keys(event.groupId);
    const message = event.body.type === "message" ? encode(event.body.message) : "";
    try {
      await (this.client as unknown as ScriptedClient)[RECORD_COMMAND](windowKey, setKey, event.seq, message, this.perGroup, this.idleMs);
    } catch (e) {
      throw redisUnavailable("recent messages", e);
    }
  }

  async scan(groupId: string, scan: RecentScan): Promise<RecentScanResult> {
    const [windowKey, setKey] = this.keys(groupId);
    let reply: string[];
    try {
      reply = await (this.client as unknown as ScriptedClient)[SCAN_COMMAND](windowKey, setKey, scan.order, scan.from, scan.to, scan.take);
    } catch (e) {
      throw redisUnavailable("recent messages", e);
    }
    if (reply.length < 2) return { window: undefined, messages: [] };
    return { window: { lo: Number(reply[0]), hi: Number(reply[1]) }, messages: reply.slice(2).map((m) => decode(groupId, m)) };
  }

  /** keys are the group's window and message keys (exposed for tests). */
  keys(groupId: string): [string, string] {
    const base = `${this.prefix}rm:${keyPart(groupId)}`;
    return [base, `${base}:m`];
  }
}

/** A held message: [seq, id, sender id, sender username, text, sentAt, clientMessageId] (the group is the key's). */
type Encoded = [number, string, string, string, string, number, string];

function encode(m: ChatMessage): string {
  const e: Encoded = [m.seq, m.id, m.sender.id, m.sender.username, m.text, m.sentAt, m.clientMessageId];
  return JSON.stringify(e);
}

function decode(groupId: string, s: string): ChatMessage {
  const [seq, id, senderId, username, text, sentAt, clientMessageId] = JSON.parse(s) as Encoded;
  return { id, groupId, seq, sender: { id: senderId, username }, text, sentAt, clientMessageId };
}
