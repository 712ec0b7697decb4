/**
 * The worker thread of WalCheckpointer: its own connection to the database
 * file, running PASSIVE checkpoints every `intervalMs` until told to stop.
 *
 * A PASSIVE checkpoint takes no lock that writers or readers wait on: it copies
 * what it can of the WAL into the database file and fsyncs it, here, off the
 * main thread's event loop.
 */
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

/** @type {{ path: string, intervalMs: number }} */
const { path, intervalMs } = workerData;
const db = new Database(path, { fileMustExist: true });
db.pragma("busy_timeout = 1000");
// This connection never writes rows; it must not checkpoint on its own either.
db.pragma("wal_autocheckpoint = 0");

const timer = setInterval(() => {
  db.pragma("wal_checkpoint(PASSIVE)");
}, intervalMs);

parentPort?.on("message", (m) => {
  if (m !== "stop") return;
  clearInterval(timer);
  db.close();
  parentPort?.close();
});
parentPort?.postMessage("ready");
