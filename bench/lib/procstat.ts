/**
 * CPU and memory of processes from /proc (Linux): utime + stime of a
 * process and its live descendants, VmRSS and VmHWM.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, readlinkSync } from "node:fs";

let ticks: number | undefined;

/** clockTicks is the kernel's USER_HZ (getconf CLK_TCK; 100 nearly everywhere). */
export function clockTicks(): number {
  if (ticks === undefined) {
    try {
      ticks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

interface Stat {
  pid: number;
  ppid: number;
  /** utime + stime in seconds. */
  cpu: number;
  /** cutime + cstime in seconds (children that exited and were waited for). */
  childCpu: number;
}

function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "latin1");
  } catch {
    return undefined;
  }
  // The command name is in parentheses and may contain spaces: split after the last ')'.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state); field n is rest[n - 3].
  const hz = clockTicks();
  return {
    pid,
    ppid: Number(rest[1]),
    cpu: (Number(rest[11]) + Number(rest[12])) / hz,
    childCpu: (Number(rest[13]) + Number(rest[14])) / hz,
  };
}

/** descendants lists the live descendants of `pid` (not pid itself). */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const s = readStat(Number(e));
    if (!s) continue;
    const list = children.get(s.ppid) ?? [];
    list.push(s.pid);
    children.set(s.ppid, list);
  }
  const out: number[] = [];
  const queue = [...(children.get(pid) ?? [])];
  for (let i = 0; i < queue.length && i < 10_000; i++) {
    const p = queue[i] as number;
    out.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  return out;
}

/** ProcSample is a point-in-time reading of one process tree. */
export interface ProcSample {
  readonly pid: number;
  /** CPU seconds of the process, its live descendants and its waited-for children. */
  readonly cpuSeconds: number;
  /** Resident memory of the process tree in bytes (sum of VmRSS). */
  readonly rssBytes: number;
  /** Peak resident memory of the main process (VmHWM) in bytes. */
  readonly peakRssBytes: number;
  /**
   * Seconds the process's main thread (the event loop) has spent ready to run but waiting for a CPU (the run
   * queue: /proc/<pid>/schedstat, its second field), since it started.
   */
  readonly runQueueSeconds: number;
  readonly alive: boolean;
}

/**
 * parseSchedstat reads /proc/<pid>/schedstat's text ("<ns on a CPU> <ns waiting on a run queue> <timeslices>") and
 * returns the run-queue wait in seconds (0 for text it cannot read: a kernel without schedstats).
 */
export function parseSchedstat(text: string): number {
  const waitNs = Number(text.trim().split(/\s+/)[1]);
  return Number.isFinite(waitNs) ? waitNs / 1e9 : 0;
}

function runQueueSeconds(pid: number): number {
  try {
    return parseSchedstat(readFileSync(`/proc/${pid}/schedstat`, "latin1"));
  } catch {
    return 0;
  }
}

function statusKb(pid: number, field: string): number {
  try {
    const text = readFileSync(`/proc/${pid}/status`, "latin1");
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    return m?.[1] ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** sampleTree reads CPU and memory of `pid` and its descendants. */
export function sampleTree(pid: number, withDescendants = true): ProcSample {
  const main = readStat(pid);
  if (!main) return { pid, cpuSeconds: 0, rssBytes: 0, peakRssBytes: 0, runQueueSeconds: 0, alive: false };
  let cpu = main.cpu + main.childCpu;
  let rssKb = statusKb(pid, "VmRSS");
  if (withDescendants) {
    for (const d of descendants(pid)) {
      const s = readStat(d);
      if (!s) continue;
      cpu += s.cpu;
      rssKb += statusKb(d, "VmRSS");
    }
  }
  return {
    pid,
    cpuSeconds: cpu,
    rssBytes: rssKb * 1024,
    peakRssBytes: statusKb(pid, "VmHWM") * 1024,
    runQueueSeconds: runQueueSeconds(pid),
    alive: true,
  };
}

/** systemCpuSeconds is the busy CPU time of the whole machine (all cores, from /proc/stat), in seconds. */
export function systemCpuSeconds(): { busy: number; total: number } {
  try {
    const line = readFileSync("/proc/stat", "latin1").split("\n")[0] ?? "";
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    const hz = clockTicks();
    return { busy: (total - idle) / hz, total: total / hz };
  } catch {
    return { busy: 0, total: 0 };
  }
}

/**
 * pidListeningOn finds the process listening on TCP `port` (IPv4 or IPv6,
 * any address) by matching the socket inode of /proc/net/tcp{,6} against the
 * open file descriptors of every process; undefined if not found (or not
 * permitted to see).
 */
export function pidListeningOn(port: number): number | undefined {
  const inodes = new Set<string>();
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(f, "latin1");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      // local_address is cols[1] ("0100007F:1F90"), st is cols[3] (0A = LISTEN), inode is cols[9].
      if (cols[3] === "0A" && cols[1]?.endsWith(`:${hexPort}`) && cols[9]) inodes.add(cols[9]);
    }
  }
  if (inodes.size === 0) return undefined;
  let entries: string[] = [];
  try {
    entries = readdirSync("/proc");
  } catch {
    return undefined;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${e}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const link = readlinkSync(`/proc/${e}/fd/${fd}`);
        const m = /^socket:\[(\d+)\]$/.exec(link);
        if (m?.[1] && inodes.has(m[1])) return Number(e);
      } catch {
        // gone
      }
    }
  }
  return undefined;
}
