/**
 * JSON files shared between processes (Node only; imported by node.ts, never by the browser entry): atomic
 * replacement (write a temporary file, rename), mode 0600 in a 0700 directory, and a lock file so that
 * read-modify-write cycles of several processes on one file do not lose each other's updates.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

/** LOCK_STALE_MS is the age after which a lock file is taken to be left over by a crashed process. */
const LOCK_STALE_MS = 10_000;
/** LOCK_WAIT_MS is how long to wait for a lock before giving up. */
const LOCK_WAIT_MS = 15_000;

function errno(e: unknown): string | undefined {
  return typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined;
}

/** readJson returns the parsed file, undefined when it does not exist; throws on a file that is not JSON. */
export async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if (errno(e) === "ENOENT") return undefined;
    throw new Error(`cannot read ${path}: ${String(e)}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new Error(`${path} is not JSON; delete it (and log in again)`);
  }
}

/** writeJson replaces the file atomically with `value` (mode 0600); undefined deletes it. Hold the lock (withFileLock). */
export async function writeJson(path: string, value: unknown): Promise<void> {
  if (value === undefined) {
    await unlink(path).catch((e: unknown) => (errno(e) === "ENOENT" ? undefined : Promise.reject(e)));
    return;
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600, flag: "wx" });
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/** withFileLock runs `fn` while holding `<path>.lock` (created exclusively); a lock older than 10 s is broken. */
export async function withFileLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const lock = `${path}.lock`;
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const handle = await open(lock, "wx", 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      break;
    } catch (e) {
      if (errno(e) !== "EEXIST") throw e;
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > LOCK_STALE_MS) {
        await unlink(lock).catch(() => undefined);
        continue;
      }
      if (Date.now() > deadline) throw new Error(`${path} is locked (remove ${lock} if no other client is running)`);
      await new Promise((resolve) => setTimeout(resolve, 25 + Math.random() * 50));
    }
  }
  try {
    return await fn();
  } finally {
    await unlink(lock).catch(() => undefined);
  }
}
