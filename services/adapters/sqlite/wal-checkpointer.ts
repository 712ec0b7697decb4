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
 * - If the worker fails or exits on its own, the main connection goes back to
 *   SQLite's default (wal_autocheckpoint = 1000) at once, the failure is
 *   reported (once per worker, with when the next one starts), and a new
 *   worker is started after `restartDelayMs`, doubled after each failure in
 *   a row (failures not separated by `maxRestartDelayMs` of a worker running
 *   fine), at most `maxRestartDelayMs`; once ready it takes checkpointing
 *   back.
 */
import { Worker } from "node:worker_threads";
import type { Database as Db } from "better-sqlite3";

/** SQLite's default wal_autocheckpoint, restored when the worker is gone. */
export const DEFAULT_AUTOCHECKPOINT_PAGES = 1000;

/** WalCheckpointerOptions tune a WalCheckpointer; every field has a default. */
export interface WalCheckpointerOptions {
  /** How often the worker checkpoints (default 250 ms). */
  intervalMs?: number;
  /** The main connection's wal_autocheckpoint while a worker runs (default 4,000 pages). */
  backstopPages?: number;
  /** Wait before starting a new worker after a failure (default 1 s), doubled per failure in a row. */
  restartDelayMs?: number;
  /** The longest wait between restarts (default 60 s). */
  maxRestartDelayMs?: number;
  /** onFailure hears each worker failing or exiting on its own (the main connection then checkpoints itself). */
  onFailure?: (e: Error) => void;
}

export class WalCheckpointer {
  private current!: Worker;
  private stopping = false;
  private exited: Promise<void> = Promise.resolve();
  private restartTimer: NodeJS.Timeout | undefined;
  private failuresInARow = 0;
  /** When the running worker became ready (undefined while none is). */
  private readySince: number | undefined;
  private readonly backstopPages: number;
  /** ready resolves once the first worker has taken over checkpointing (true) or could not (false). */
  readonly ready: Promise<boolean>;
  /** How many workers were started: 1, plus one per restart. */
  started = 0;

  /**
   * The constructor starts the worker on `path` (a WAL database that `db` has
   * open). Once the worker is ready, `db` checkpoints only past the backstop;
   * until then, and while no worker runs, it keeps SQLite's default.
   */
  constructor(
    private readonly db: Db,
    private readonly path: string,
    private readonly opts: WalCheckpointerOptions = {},
  ) {
    this.backstopPages = opts.backstopPages ?? 4_000;
    this.ready = this.start();
  }

  /** The running (or last) worker thread; exposed for tests. */
  get worker(): Worker {
    return this.current;
  }

  /** stop ends the worker (and any pending restart) and gives checkpointing back to the main connection. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    this.current.ref();
    this.current.postMessage("stop");
    await this.exited;
    this.fallBack();
  }

  private start(): Promise<boolean> {
    this.started += 1;
    const worker = new Worker(new URL("./wal-checkpoint-worker.mjs", import.meta.url), {
      workerData: { path: this.path, intervalMs: this.opts.intervalMs ?? 250 },
      execArgv: [], // plain JavaScript: no tsx loader needed
    });
    this.current = worker;
    /** The worker's own error, if it had one; reported with its exit. */
    let error: Error | undefined;
    const ready = new Promise<boolean>((resolve) => {
      worker.once("message", (m) => {
        const ok = m === "ready" && !this.stopping && this.db.open;
        if (ok) {
          this.readySince = Date.now();
          this.db.pragma(`wal_autocheckpoint = ${this.backstopPages}`);
          this.db.pragma(`journal_size_limit = ${this.backstopPages * (this.db.pragma("page_size", { simple: true }) as number)}`);
        }
        // Once running, the worker does not hold the process open: every commit
        // is already durable and SQLite survives a checkpoint cut short. (A
        // stop() already under way holds it open until the worker exits.)
        if (!this.stopping) worker.unref();
        resolve(ok);
      });
      worker.once("exit", () => resolve(false));
    });
    this.exited = new Promise((resolve) => {
      worker.once("exit", (code) => {
        if (!this.stopping) {
          this.failed(error ? new Error(`the WAL checkpoint worker failed: ${error.message}`, { cause: error }) : new Error(`the WAL checkpoint worker exited (code ${code})`));
        }
        resolve();
      });
    });
    // An "exit" always follows: failed() (or stop()) falls back there.
    worker.on("error", (e) => {
      error = e;
    });
    return ready;
  }

  /** failed hands checkpointing back to the main connection, reports, and schedules a new worker. */
  private failed(e: Error): void {
    this.fallBack();
    const maxDelay = this.opts.maxRestartDelayMs ?? 60_000;
    // A worker that ran fine for a while ends the run of failures.
    if (this.readySince !== undefined && Date.now() - this.readySince >= maxDelay) this.failuresInARow = 0;
    this.readySince = undefined;
    const delay = Math.min((this.opts.restartDelayMs ?? 1_000) * 2 ** this.failuresInARow, maxDelay);
    this.failuresInARow += 1;
    this.opts.onFailure?.(new Error(`${e.message}; checkpoints run on the main thread until a new worker starts in ${delay} ms`, { cause: e }));
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopping || !this.db.open) return;
      try {
        void this.start();
      } catch (err) {
        this.failed(err instanceof Error ? err : new Error(String(err)));
      }
    }, delay);
    this.restartTimer.unref();
  }

  private fallBack(): void {
    if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${DEFAULT_AUTOCHECKPOINT_PAGES}`);
  }
}
