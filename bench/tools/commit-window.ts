/**
 * commit-window: what the embedded store's group commit window
 * (SqliteStoreOptions.commitWindowMs) costs and saves, measured in one
 * process so that the machine's load hits every variant alike.
 *
 * Each `--windows` value gets its own SqliteStore on its own file (WAL,
 * synchronous=FULL, as the server opens it) in one temporary directory on
 * the same disk, with `--groups` groups of one member. An open-loop
 * generator appends `--text-bytes` messages at `--rate` per second,
 * round-robin over the groups: message i of a phase is due at start + i/rate
 * and is appended when due, however late earlier appends are answered; its
 * latency counts from when it was due to when its promise resolved (after
 * its commit), so a waiting window, a commit and any stall of the event loop
 * all count. The measured phases (`--phase` s each, `--rounds` rounds) take
 * the stores in turn (A B C, C B A, ...) after a warm-up phase each. Per
 * store: process CPU per append (user + system, process.cpuUsage; the
 * generator's own small share included, the same for every store), appends
 * per commit, append latency p50 / p99 / max, and the share of wall time the
 * event loop spent inside commits (the fsync included: the event loop can do
 * nothing else then).
 *
 * usage: node --import tsx bench/tools/commit-window.ts [--windows 0,2,4] [--rate 1000] [--phase 3]
 *          [--rounds 4] [--warmup 2] [--groups 100] [--text-bytes 100] [--dir /tmp] [--json]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { type SqliteStore, createSqliteStore } from "../../services/adapters/sqlite/sqlite-store.js";
import { newId } from "../../services/core/ids.js";
import { systemClock } from "../../services/core/ports.js";

const { values: flags } = parseArgs({
  options: {
    windows: { type: "string", default: "0,2,4" },
    rate: { type: "string", default: "1000" },
    phase: { type: "string", default: "3" },
    rounds: { type: "string", default: "4" },
    warmup: { type: "string", default: "2" },
    groups: { type: "string", default: "100" },
    "text-bytes": { type: "string", default: "100" },
    dir: { type: "string", default: tmpdir() },
    json: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (flags.help) {
  process.stdout.write("usage: node --import tsx bench/tools/commit-window.ts [--windows 0,2,4] [--rate 1000] [--phase 3] [--rounds 4] [--warmup 2] [--groups 100] [--text-bytes 100] [--dir /tmp] [--json]\n");
  process.exit(0);
}
const windows = flags.windows.split(",").map(Number);
const RATE = Number(flags.rate);
const PHASE_MS = Number(flags.phase) * 1000;
const ROUNDS = Number(flags.rounds);
const WARMUP_MS = Number(flags.warmup) * 1000;
const G = Number(flags.groups);
const TEXT = "x".repeat(Number(flags["text-bytes"]));
for (const n of [RATE, PHASE_MS, ROUNDS, G, ...windows]) if (!Number.isFinite(n) || n < 0) throw new Error(`bad flag value ${n}`);

interface Variant {
  readonly windowMs: number;
  readonly store: SqliteStore;
  readonly groups: { id: string; owner: { id: string; username: string } }[];
  commits: number;
  commitSeconds: number;
  cpuUs: number;
  wallMs: number;
  appends: number;
  readonly latencies: number[];
}

const dir = mkdtempSync(join(flags.dir, "commit-window-"));
const variants: Variant[] = [];
try {
  for (const windowMs of windows) {
    const v: Variant = {
      windowMs,
      store: undefined as unknown as SqliteStore,
      groups: [],
      commits: 0,
      commitSeconds: 0,
      cpuUs: 0,
      wallMs: 0,
      appends: 0,
      latencies: [],
    };
    (v as { store: SqliteStore }).store = createSqliteStore({
      path: join(dir, `w${windowMs}`, "chat.db"),
      retentionMs: 86_400_000,
      clock: systemClock,
      commitWindowMs: windowMs,
      onCommit: (s) => {
        v.commits++;
        v.commitSeconds += s;
      },
    });
    for (let g = 0; g < G; g++) {
      const owner = { id: newId(), username: `u${windowMs}-${g}` };
      const id = newId();
      await v.store.createGroup({ id, name: "g", epoch: "e", createdAt: Date.now(), owner });
      v.groups.push({ id, owner });
    }
    variants.push(v);
  }

  /** phase appends at RATE for ms to v's store (open loop); measured unless warm-up. */
  const phase = async (v: Variant, ms: number, measured: boolean): Promise<void> => {
    const n = Math.round((RATE * ms) / 1000);
    const start = performance.now();
    const cpu0 = process.cpuUsage();
    const pending: Promise<void>[] = [];
    let i = 0;
    await new Promise<void>((done) => {
      const tick = () => {
        const now = performance.now();
        for (; i < n && start + (i * 1000) / RATE <= now; i++) {
          const due = start + (i * 1000) / RATE;
          const g = v.groups[i % G]!;
          pending.push(
            v.store
              .appendMessage({ id: newId(), groupId: g.id, sender: g.owner, text: TEXT, clientMessageId: newId(), sentAt: Date.now() })
              .then(() => {
                if (measured) v.latencies.push(performance.now() - due);
              }),
          );
        }
        if (i < n) setTimeout(tick, Math.max(0, start + (i * 1000) / RATE - performance.now()));
        else done();
      };
      tick();
    });
    await Promise.all(pending);
    if (!measured) return;
    const cpu = process.cpuUsage(cpu0);
    v.cpuUs += cpu.user + cpu.system;
    v.wallMs += performance.now() - start;
    v.appends += n;
  };
  // Commits are counted per store from here on; only the store of the running phase is written.

  for (const v of variants) await phase(v, WARMUP_MS, false);
  for (const v of variants) {
    v.commits = 0;
    v.commitSeconds = 0;
  }
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? variants : [...variants].reverse();
    for (const v of order) await phase(v, PHASE_MS, true);
  }

  const pct = (xs: number[], p: number) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
  };
  const rows = variants.map((v) => ({
    windowMs: v.windowMs,
    appends: v.appends,
    cpuUsPerAppend: v.cpuUs / v.appends,
    appendsPerCommit: v.appends / v.commits,
    loopInCommitsShare: (v.commitSeconds * 1000) / v.wallMs,
    p50Ms: pct(v.latencies, 50),
    p99Ms: pct(v.latencies, 99),
    maxMs: pct(v.latencies, 100),
  }));
  if (flags.json) process.stdout.write(`${JSON.stringify({ rate: RATE, phaseS: PHASE_MS / 1000, rounds: ROUNDS, groups: G, rows })}\n`);
  else {
    process.stdout.write(`commit window at ${RATE} appends/s, ${ROUNDS} × ${PHASE_MS / 1000} s per store, ${G} groups, ${TEXT.length}-byte texts\n`);
    process.stdout.write("window ms  appends  CPU µs/append  appends/commit  loop in commits  p50 ms  p99 ms  max ms\n");
    for (const r of rows) {
      process.stdout.write(
        `${String(r.windowMs).padStart(9)}  ${String(r.appends).padStart(7)}  ${r.cpuUsPerAppend.toFixed(1).padStart(13)}  ${r.appendsPerCommit.toFixed(2).padStart(14)}  ${`${(r.loopInCommitsShare * 100).toFixed(1)}%`.padStart(15)}  ${r.p50Ms.toFixed(2).padStart(6)}  ${r.p99Ms.toFixed(2).padStart(6)}  ${r.maxMs.toFixed(1).padStart(6)}\n`,
      );
    }
  }
} finally {
  for (const v of variants) await v.store.close();
  rmSync(dir, { recursive: true, force: true });
}
