import { Redis } from "ioredis";
import { ChatError } from "../../core/errors.js";

/** RedisClientOptions tunes createRedisClient; every field has a default fit for a cache on a LAN. */
export interface RedisClientOptions {
  /**
   * commandTimeoutMs bounds how long one command may wait for its reply
   * (a hung or overloaded server) before it rejects. Default 500.
   */
  readonly commandTimeoutMs?: number;
  /** connectTimeoutMs bounds one connection attempt. Default 2000. */
  readonly connectTimeoutMs?: number;
  /**
   * maxReconnectDelayMs caps the exponential reconnect backoff (50 ms,
   * 100 ms, ... up to this, plus up to 10 % jitter). The client reconnects
   * forever. Default 2000.
   */
  readonly maxReconnectDelayMs?: number;
  /** connectionName shows up in CLIENT LIST. */
  readonly connectionName?: string;
  /**
   * onError receives the client's connection errors (refused, reset, ...),
   * which repeat on every reconnect attempt while the server is down:
   * throttle before logging. Without it they are dropped (the commands
   * themselves still reject, and isRedisReady tells the state).
   */
  readonly onError?: (err: Error) => void;
}

/**
 * createRedisClient connects to `url` (redis://[user:pass@]host:port[/db])
 * configured to fail fast instead of queueing, so that every adapter method
 * built on it settles promptly whether or not Redis is reachable:
 *
 * - while the connection is not ready (down, connecting, reconnecting),
 *   commands reject at once (no offline queue);
 * - a command in flight when the connection drops rejects when the drop is
 *   noticed and is never re-sent on reconnect (so a rate-limit take is
 *   never applied twice by the client);
 * - a command with no reply within `commandTimeoutMs` rejects (it may still
 *   have been executed by the server); with auto-pipelining a command waits
 *   for the batch before it to be written, so behind a hung batch it rejects
 *   within about twice that;
 * - commands issued in one event-loop turn go out in one socket write
 *   (auto-pipelining): one write per command cost more CPU than the
 *   commands themselves under load (profiled on the production bench).
 *   Adapters send plain commands (no explicit pipeline() or multi(), which
 *   are written at once and could overtake auto-pipelined ones);
 * - the client reconnects forever with capped exponential backoff; the
 *   same client works again once the server is back (Lua scripts are
 *   re-sent by ioredis after a NOSCRIPT).
 *
 * The caller owns the client and closes it (`quit()` or `disconnect()`).
 */
export function createRedisClient(url: string, opts: RedisClientOptions = {}): Redis {
  const maxDelay = opts.maxReconnectDelayMs ?? 2_000;
  const client = new Redis(url, {
    enableOfflineQueue: false,
    enableAutoPipelining: true,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout: opts.commandTimeoutMs ?? 500,
    connectTimeout: opts.connectTimeoutMs ?? 2_000,
    retryStrategy: (times) => {
      const base = Math.min(maxDelay, 50 * 2 ** Math.min(times - 1, 16));
      return Math.round(base + Math.random() * base * 0.1);
    },
    ...(opts.connectionName === undefined ? {} : { connectionName: opts.connectionName }),
  });
  // A listener must exist, or ioredis prints every connection error to the console.
  client.on("error", (err: Error) => opts.onError?.(err));
  return client;
}

/** isRedisReady tells whether the client's connection is up and ready for commands (what isHealthy reports). */
export function isRedisReady(client: Redis): boolean {
  return client.status === "ready";
}

/**
 * redisUnavailable wraps any failure of a Redis command (connection down,
 * timeout, server error) as ChatError Unavailable with the original as
 * `cause`: the adapters built on Redis throw nothing else.
 */
export function redisUnavailable(what: string, cause: unknown): ChatError {
  return new ChatError("Unavailable", `${what} is unavailable; retry`, { cause });
}

/**
 * keyPart encodes one id for use inside a Redis key. Redis keys are bytes,
 * and a JS string that is not well-formed UTF-16 (a lone surrogate) loses
 * information when encoded as UTF-8; such strings are written as hex code
 * units under a different marker, so distinct strings always give distinct
 * parts. Well-formed strings (every id this server issues) are kept as is
 * behind their UTF-8 byte length, which makes a concatenation of parts
 * unambiguous whatever characters the ids contain.
 */
export function keyPart(s: string): string {
  if (!LONE_SURROGATE.test(s)) return `${Buffer.byteLength(s, "utf8")}:${s}`;
  let hex = "";
  for (let i = 0; i < s.length; i++) hex += s.charCodeAt(i).toString(16).padStart(4, "0");
  return `x${hex.length}:${hex}`;
}

/** LONE_SURROGATE matches a UTF-16 surrogate code unit without its pair (String.prototype.isWellFormed is ES2024). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** requireInt checks an integer option at construction time. */
export function requireInt(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${value}`);
  return value;
}
