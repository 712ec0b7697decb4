/**
 * Helpers for the Redis integration specs (*.int.spec.ts): unique key
 * prefixes and their cleanup on the shared server, and private
 * redis-server instances for fault tests. Not used by production code.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Redis } from "ioredis";
import { createRedisClient, type RedisClientOptions } from "../../services/adapters/redis/redis-client.js";
import { newId } from "../../services/core/ids.js";

/** REDIS_SERVER_BIN is the redis-server used for private instances. */
export const REDIS_SERVER_BIN = "/usr/bin/redis-server";

/** hasRedisServerBin tells whether private instances can be started. */
export function hasRedisServerBin(): boolean {
  return existsSync(REDIS_SERVER_BIN);
}

/** uniquePrefix returns a key prefix no other run uses: `chat-test:<label>:<uuid>:`. */
export function uniquePrefix(label: string): string {
  return `chat-test:${label}:${newId()}:`;
}

/** waitUntil polls `check` every 20 ms until it is true; throws after `timeoutMs`. */
export async function waitUntil(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** connectRedis creates a fail-fast client (createRedisClient) and waits until it is ready (at most 5 s). */
export async function connectRedis(url: string, opts: RedisClientOptions = {}): Promise<Redis> {
  const client = createRedisClient(url, opts);
  try {
    await waitUntil(() => client.status === "ready", 5_000, `redis at ${url}`);
  } catch (e) {
    client.disconnect();
    throw e;
  }
  return client;
}

/** globEscape escapes the glob characters of SCAN MATCH. */
function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

/**
 * deleteKeysByPrefix deletes every key starting with `prefix` (SCAN + DEL,
 * at most 1 000 SCAN rounds) and returns how many it deleted.
 */
export async function deleteKeysByPrefix(client: Redis, prefix: string): Promise<number> {
  if (prefix.length < 8) throw new Error(`refusing to delete by the short prefix "${prefix}"`);
  let cursor = "0";
  let deleted = 0;
  for (let round = 0; round < 1_000; round++) {
    const [next, keys] = await client.scan(cursor, "MATCH", `${globEscape(prefix)}*`, "COUNT", 1_000);
    if (keys.length > 0) deleted += await client.del(...keys);
    cursor = next;
    if (cursor === "0") return deleted;
  }
  throw new Error(`SCAN for ${prefix} did not finish in 1000 rounds`);
}

/** withTimeout settles like `promise`, or rejects after `ms` without keeping the process alive afterwards. */
async function withTimeout<T>(promise: Promise<T>, ms: number, message: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message())), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** freePort returns a TCP port on 127.0.0.1 that was free a moment ago. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/**
 * PrivateRedis is a redis-server child process on a free loopback port,
 * without persistence, for fault tests. It is stopped, paused and restarted
 * by its own PID only; `close` (call it in `after`) kills it for good.
 */
export class PrivateRedis {
  private child: ChildProcess | undefined;
  private readonly killOnExit = () => this.child?.kill("SIGKILL");

  private constructor(
    readonly port: number,
    private readonly dir: string,
  ) {
    process.once("exit", this.killOnExit);
  }

  /** start launches a private redis-server and waits until it accepts connections (at most 5 s). */
  static async start(): Promise<PrivateRedis> {
    const dir = await mkdtemp(join(tmpdir(), "chat-redis-"));
    const server = new PrivateRedis(await freePort(), dir);
    try {
      await server.restart();
    } catch (e) {
      await server.close();
      throw e;
    }
    return server;
  }

  /** url is the redis:// address of this instance. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** pid is the child's process id, or undefined while stopped. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** restart starts the server again on the same port (it must be stopped). */
  async restart(): Promise<void> {
    if (this.child) throw new Error("private redis is still running");
    const child = spawn(
      REDIS_SERVER_BIN,
      ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", this.dir],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.child = child;
    let output = "";
    const ready = new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes("Ready to accept connections")) resolve();
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", onData);
      child.once("error", reject);
      child.once("exit", (code, signal) => reject(new Error(`redis-server exited (${code ?? signal}): ${output.slice(-500)}`)));
    });
    try {
      await withTimeout(ready, 5_000, () => `redis-server on port ${this.port} not ready after 5 s: ${output.slice(-500)}`);
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  /** stop kills the server (SIGKILL, by PID) and waits until it has exited (at most 5 s). */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGKILL");
    await withTimeout(exited, 5_000, () => `redis-server pid ${child.pid} did not exit after SIGKILL`);
  }

  /** pause stops the server's process (SIGSTOP): connections stay open, nothing is answered. */
  pause(): void {
    this.child?.kill("SIGSTOP");
  }

  /** resume continues a paused server (SIGCONT). */
  resume(): void {
    this.child?.kill("SIGCONT");
  }

  /** close kills the server and removes its directory. */
  async close(): Promise<void> {
    this.resume();
    await this.stop();
    process.removeListener("exit", this.killOnExit);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * sharedRedis opens clients on the shared server at `url` under a fresh key
 * prefix; `close` deletes the prefix's keys, checks none is left, and closes
 * the clients.
 */
export function sharedRedis(url: string, label: string) {
  const prefix = uniquePrefix(label);
  const clients: Redis[] = [];
  return {
    prefix,
    async client(): Promise<Redis> {
      const c = await connectRedis(url);
      clients.push(c);
      return c;
    },
    async close(): Promise<void> {
      const first = clients[0];
      if (first) {
        await deleteKeysByPrefix(first, prefix);
        const left = (await first.keys(`${prefix}*`)).length;
        if (left > 0) throw new Error(`${left} keys of the run are left under ${prefix}`);
      }
      await Promise.all(clients.map((c) => c.quit()));
    },
  };
}
