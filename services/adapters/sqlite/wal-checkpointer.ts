/**
 * WalCheckpointer: SQLite WAL checkpoints off the event loop.
 *
 * better-sqlite3 runs SQLite on the calling thread, and by default the commit
 * that grows the WAL past 1,000 pages also checkpoints it: copies those pages
 * into the database file and fsyncs it, 10-40 ms during which the event loop
 * (every stream, every send) stands still. The checkpointer moves that work
 * to a worker thread that checkpoints every `intervalMs` (PASSIVE: it takes
 * no lock writers wait on).
 *
 * Guarantees:
 * - Durability is unchanged: every commit is still fsynced in the WAL
 *   (synchronous=FULL) before it returns; a checkpoint only moves committed
 *   pages into the database file.
 * - The WAL stays bounded. SQLite rewinds the WAL only when a write begins
 *   with every frame checkpointed, which a checkpoint running beside steady
 *   writes rarely sees; so the main connection keeps a backstop
 *   (wal_autocheckpoint = `backstopPages`, 4,000 pages = 16 MiB by default):
 *   past it, the committing connection checkpoints the few frames the worker
 *   has not copied yet, and the next write rewinds the WAL. The WAL file is
 *   truncated back to the backstop size after a rewind (journal_size_limit).
 *   If the worker fails or exits on its own, the main connection goes back to
 *   SQLite's default (wal_autocheckpoint = 1000).
 */
import { Worker } from "node:worker_threads";
import type { Database as Db } from "better-sqlite3";

/** SQLite's default wal_autocheckpoint, restored when the worker is gone. */
export const DEFAULT_AUTOCHECKPOINT_PAGES = 1000;

export class WalCheckpointer {
  /** The worker thread; exposed for tests. */
  readonly worker: Worker;
  private stopping = false;
  /** A failure was reported already (an "error" is followed by "exit"). */
  private reported = false;
  private readonly exited: Promise<void>;
  /** ready resolves once the worker has taken over checkpointing (true) or could not (false). */
  readonly ready: Promise<boolean>;

  /**
   * The constructor starts the worker on `path` (a WAL database that `db` has
   * open). Once the worker is ready, `db` checkpoints only past the backstop;
   * until then, and if the worker cannot start, it keeps SQLite's default.
   */
  constructor(
    private readonly db: Db,
    path: string,
    opts: {
      intervalMs?: number;
      backstopPages?: number;
      /** onFailure hears the worker failing or exiting on its own (the main connection then checkpoints itself). */
      onFailure?: (e: Error) => void;
    } = {},
  ) {
    const backstopPages = opts.backstopPages ?? 4_000;
    this.worker = new Worker(new URL("./wal-checkpoint-worker.mjs", import.meta.url), {
      workerData: { path, intervalMs: opts.intervalMs ?? 250 },
      execArgv: [], // plain JavaScript: no tsx loader needed
    });
    this.ready = new Promise((resolve) => {
      this.worker.once("message", (m) => {
        const ok = m === "ready" && !this.stopping && db.open;
        if (ok) {
          db.pragma(`wal_autocheckpoint = ${backstopPages}`);
          db.pragma(`journal_size_limit = ${backstopPages * (db.pragma("page_size", { simple: true }) as number)}`);
        }
        // Once running, the worker does not hold the process open: every commit
        // is already durable and SQLite survives a checkpoint cut short. (A
        // stop() already under way holds it open until the worker exits.)
        if (!this.stopping) this.worker.unref();
        resolve(ok);
      });
      this.worker.once("exit", () => resolve(false));
    });
    this.exited = new Promise((resolve) => {
      this.worker.once("exit", (code) => {
        this.fallBack();
        if (!this.stopping && !this.reported) opts.onFailure?.(new Error(`the WAL checkpoint worker exited (code ${code}); checkpoints run on the main thread again`));
        resolve();
      });
    });
    this.worker.on("error", (e) => {
      this.fallBack();
      this.reported = true;
      opts.onFailure?.(e);
    });
  }

  /** stop ends the worker and gives checkpointing back to the main connection. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.worker.ref();
    this.worker.postMessage("stop");
    await this.exited;
  }

  private fallBack(): void {
    if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${DEFAULT_AUTOCHECKPOINT_PAGES}`);
  }
}
