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
 * RECORD_LUA applies RecentMessages.record atomically, for one or more
 * events in order (the records of one event-loop turn go in one call).
 * KEYS: per event, its group's window hash and message sorted set (score =
 * seq). ARGV: perGroup, idleMs, then per event its seq and encoded message
 * ("" for other events). The hash keeps lo, hi and n (the size the set must
 * have); a reader that finds another size (the set was evicted or expired
 * apart from the hash) treats the group as unknown.
 */
const RECORD_LUA = `
local cap = tonumber(ARGV[1])
local idle = ARGV[2]
local function record(wk, sk, seq, msg)
  local hi = tonumber(redis.call('HGET', wk, 'hi'))
  if hi and seq <= hi then return end
  if not hi or seq ~= hi + 1 then
    redis.call('DEL', sk)
    redis.call('HSET', wk, 'lo', seq)
  end
  local n = redis.call('ZCARD', sk)
  if msg ~= '' then
    redis.call('ZADD', sk, seq, msg)
    n = n + 1
    if n > cap then
      local cut = redis.call('ZRANGE', sk, n - cap - 1, n - cap - 1, 'WITHSCORES')
      redis.call('ZREMRANGEBYRANK', sk, 0, n - cap - 1)
      redis.call('HSET', wk, 'lo', tonumber(cut[2]) + 1)
      n = cap
    end
    redis.call('PEXPIRE', sk, idle)
  end
  redis.call('HSET', wk, 'hi', seq, 'n', n)
  redis.call('PEXPIRE', wk, idle)
end
for i = 1, #KEYS / 2 do
  record(KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[2 * i + 1]), ARGV[2 * i + 2])
end
return 1
`;

/** MAX_RECORDS_PER_CALL bounds the events of one RECORD_LUA call (a script blocks Redis while it runs). */
const MAX_RECORDS_PER_CALL = 128;

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
  [RECORD_COMMAND](numberOfKeys: number, ...keysThenArgs: (string | number)[]): Promise<number>;
  [SCAN_COMMAND](windowKey: string, setKey: string, order: string, from: number, to: number, take: number): Promise<string[]>;
}

/**
 * RedisRecentMessages is the RecentMessages shared by every process: per
 * group, a hash with the window and a sorted set of the held messages
 * (JSON, scored by seq), changed and read only by Lua scripts, so a reader
 * never sees a window without its messages. Keys expire `idleMs` after the
 * group's last event. The records of one event-loop turn (several sends
 * acknowledged together) go to Redis in one script call, applied in call
 * order; each record() settles when that call does.
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
  /** Records waiting for this turn's call, in call order. */
  private pending: { event: GroupEvent; resolve: () => void; reject: (e: unknown) => void }[] = [];

  /** The client is the caller's (see createRedisClient); this never closes it. */
  constructor(
    private readonly client: Redis,
    opts: RedisRecentMessagesOptions,
  ) {
    this.prefix = opts.prefix;
    this.perGroup = requireInt("perGroup", opts.perGroup ?? 100, 1);
    this.idleMs = requireInt("idleMs", opts.idleMs ?? 3_600_000, 1);
    const scripted = client as unknown as Partial<ScriptedClient>;
    // numberOfKeys is given per call (the KEYS of every event recorded together).
    if (typeof scripted[RECORD_COMMAND] !== "function") client.defineCommand(RECORD_COMMAND, { lua: RECORD_LUA });
    if (typeof scripted[SCAN_COMMAND] !== "function") client.defineCommand(SCAN_COMMAND, { lua: SCAN_LUA, numberOfKeys: 2 });
  }

  record(event: GroupEvent): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ event, resolve, reject });
      if (this.pending.length === 1) setImmediate(() => this.sendRecords());
    });
  }

  /** sendRecords sends the waiting records, at most MAX_RECORDS_PER_CALL per script call. */
  private sendRecords(): void {
    const all = this.pending;
    this.pending = [];
    for (let i = 0; i < all.length; i += MAX_RECORDS_PER_CALL) {
      const part = all.slice(i, i + MAX_RECORDS_PER_CALL);
      const keys: string[] = [];
      const args: (string | number)[] = [this.perGroup, this.idleMs];
      for (const { event } of part) {
        keys.push(...this.keys(event.groupId));
        args.push(event.seq, event.body.type === "message" ? encode(event.body.message) : "");
      }
      (this.client as unknown as ScriptedClient)[RECORD_COMMAND](keys.length, ...keys, ...args).then(
        () => {
          for (const r of part) r.resolve();
        },
        (e: unknown) => {
          const err = redisUnavailable("recent messages", e);
          for (const r of part) r.reject(err);
        },
      );
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
