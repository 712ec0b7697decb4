/**
 * Results: merging HDR histograms from the load generators, percentiles,
 * the printed table, the JSON file and a hand-written SVG chart.
 */
import { mkdirSync, writeFileSync, copyFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import * as hdr from "hdr-histogram-js";

export const RESULTS_DIR = join(import.meta.dirname, "../results");

/** Latency is a histogram summary in milliseconds. */
export interface Latency {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** mergeHistograms decodes and adds compressed base64 histograms (empty strings are skipped). */
export function mergeHistograms(encoded: readonly string[]): hdr.Histogram {
  const total = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
  for (const e of encoded) {
    if (!e) continue;
    const h = hdr.decodeFromCompressedBase64(e);
    total.add(h);
  }
  return total;
}

/** summarize reads the percentiles of a µs histogram, in ms. */
export function summarize(h: hdr.Histogram): Latency {
  const ms = (us: number) => Math.round(us) / 1000;
  if (h.totalCount === 0) return { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 };
  return {
    count: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
    mean: ms(h.mean),
  };
}

/** percentileCurve samples a µs histogram at log-spaced percentiles (for charts), in ms. */
export function percentileCurve(h: hdr.Histogram): [number, number][] {
  const pts: [number, number][] = [];
  if (h.totalCount === 0) return pts;
  for (const p of [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100]) {
    pts.push([p, Math.round(h.getValueAtPercentile(p)) / 1000]);
  }
  return pts;
}

/** machineInfo describes the machine for the report. */
export function machineInfo(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model ?? "unknown",
    cores: cpus.length,
    totalMemoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    hostname: os.hostname(),
    loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** Table prints aligned rows. */
export function table(rows: readonly (readonly [string, string])[]): string {
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([k, v]) => (k === "" ? "" : `  ${k.padEnd(w)}  ${v}`)).join("\n");
}

/** gridTable prints a table with a header row. */
export function gridTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) => `  ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join("  ")}`;
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

/** fmt formats a number with a fixed number of decimals and thousands separators. */
export function fmt(n: number, decimals = 0): string {
  if (!Number.isFinite(n)) return String(n);
  return n.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

/** mib formats bytes as MiB. */
export function mib(bytes: number): string {
  return `${fmt(bytes / 2 ** 20, 1)} MiB`;
}

/** resultName names a result by its target, and by the subscribers' transport when it is not the default (fixed-embedded-websocket-…). */
export function resultName(target: string, opts: { transport: string }): string {
  return opts.transport === "grpc" ? target : `${target}-${opts.transport}`;
}

/** writeResults writes <mode>-<target>-<stamp>.json (+ .svg) and copies them to latest-<mode>-<target>.*. */
export function writeResults(
  mode: string,
  target: string,
  result: unknown,
  svg: string | undefined,
  extra: Record<string, string> = {},
): { json: string; svg?: string; extra: string[] } {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-").replace(/-\d{3}Z$/, "Z");
  const base = join(RESULTS_DIR, `${mode}-${target}-${stamp}`);
  const latest = join(RESULTS_DIR, `latest-${mode}-${target}`);
  writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
  copyFileSync(`${base}.json`, `${latest}.json`);
  const out: { json: string; svg?: string; extra: string[] } = { json: `${base}.json`, extra: [] };
  if (svg) {
    writeFileSync(`${base}.svg`, svg);
    copyFileSync(`${base}.svg`, `${latest}.svg`);
    out.svg = `${base}.svg`;
  }
  for (const [suffix, text] of Object.entries(extra)) {
    writeFileSync(`${base}-${suffix}.svg`, text);
    copyFileSync(`${base}-${suffix}.svg`, `${latest}-${suffix}.svg`);
    out.extra.push(`${base}-${suffix}.svg`);
  }
  return out;
}

// ------------------------------------------------------------------ SVG

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Series is one line of a chart. */
export interface Series {
  label: string;
  color: string;
  points: [number, number][];
  dashed?: boolean;
  /** Draw dots at each point. */
  dots?: boolean;
}

/** ChartSpec describes a line chart. */
export interface ChartSpec {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Axis scales. */
  xScale?: "linear" | "percentile";
  yScale?: "linear" | "log";
  /** Horizontal reference lines (e.g. the p99 target). */
  hlines?: { y: number; label: string; color: string }[];
  /** Optional right-axis series (same x), drawn with its own scale. */
  right?: { label: string; series: Series[] };
}

/**
 * lineChart draws a simple SVG line chart. The "percentile" x scale maps a
 * percentile p to -log10(1 - p/100), the usual HDR percentile plot (50, 90,
 * 99, 99.9 ... equally spaced).
 */
export function lineChart(spec: ChartSpec): string {
  const W = 900;
  const H = 520;
  const m = { l: 80, r: spec.right ? 80 : 30, t: 70, b: 70 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const xf = spec.xScale === "percentile" ? (p: number) => -Math.log10(Math.max(1e-6, 1 - p / 100)) : (x: number) => x;
  const all = spec.series.flatMap((s) => s.points);
  const xs = all.map((p) => xf(p[0]));
  const xMin = Math.min(...xs, spec.xScale === "percentile" ? 0 : Infinity);
  const xMax = Math.max(...xs, xMin + 1e-9);
  const ys = [...all.map((p) => p[1]), ...(spec.hlines ?? []).map((h) => h.y)];
  const log = spec.yScale === "log";
  const yMinRaw = log ? Math.max(0.01, Math.min(...ys.filter((y) => y > 0))) : 0;
  const yMaxRaw = Math.max(...ys, yMinRaw * 10, 1e-9);
  const yMin = log ? 10 ** Math.floor(Math.log10(yMinRaw)) : 0;
  const yMax = log ? 10 ** Math.ceil(Math.log10(yMaxRaw)) : niceCeil(yMaxRaw * 1.05);
  const X = (x: number) => m.l + ((xf(x) - xMin) / (xMax - xMin || 1)) * pw;
  const Y = (y: number) =>
    log ? m.t + ph - ((Math.log10(Math.max(y, yMin)) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin) || 1)) * ph : m.t + ph - ((y - yMin) / (yMax - yMin || 1)) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">${esc(spec.title)}</text>`);
  if (spec.subtitle) out.push(`<text x="${W / 2}" y="44" text-anchor="middle" fill="#555">${esc(spec.subtitle)}</text>`);
  // y grid
  const yTicks: number[] = [];
  if (log) for (let v = yMin; v <= yMax * 1.0001; v *= 10) yTicks.push(v);
  else for (let i = 0; i <= 5; i++) yTicks.push(yMin + ((yMax - yMin) * i) / 5);
  for (const v of yTicks) {
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${Y(v)}" y2="${Y(v)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.l - 8}" y="${Y(v) + 4}" text-anchor="end">${esc(shortNum(v))}</text>`);
  }
  // x ticks
  const xTicks: number[] =
    spec.xScale === "percentile"
      ? [0, 50, 90, 99, 99.9, 99.99, 99.999].filter((p) => xf(p) <= xMax + 1e-9)
      : niceTicks(Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0])));
  for (const v of xTicks) {
    out.push(`<line x1="${X(v)}" x2="${X(v)}" y1="${m.t}" y2="${m.t + ph}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${X(v)}" y="${m.t + ph + 18}" text-anchor="middle">${esc(spec.xScale === "percentile" ? `${v}%` : shortNum(v))}</text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  out.push(`<text x="${m.l + pw / 2}" y="${H - 22}" text-anchor="middle">${esc(spec.xLabel)}</text>`);
  out.push(`<text transform="translate(20 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(spec.yLabel)}</text>`);
  for (const h of spec.hlines ?? []) {
    if (h.y < yMin || h.y > yMax) continue;
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${Y(h.y)}" y2="${Y(h.y)}" stroke="${h.color}" stroke-dasharray="6 4"/>`);
    out.push(`<text x="${m.l + pw - 4}" y="${Y(h.y) - 4}" text-anchor="end" fill="${h.color}">${esc(h.label)}</text>`);
  }
  const drawSeries = (s: Series, yFn: (y: number) => number) => {
    if (s.points.length === 0) return;
    const d = s.points.map((p, i) => `${i === 0 ? "M" : "L"}${X(p[0]).toFixed(1)},${yFn(p[1]).toFixed(1)}`).join(" ");
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ""}/>`);
    if (s.dots) for (const p of s.points) out.push(`<circle cx="${X(p[0]).toFixed(1)}" cy="${yFn(p[1]).toFixed(1)}" r="3" fill="${s.color}"/>`);
  };
  for (const s of spec.series) drawSeries(s, Y);
  let legend = [...spec.series];
  if (spec.right) {
    const rys = spec.right.series.flatMap((s) => s.points.map((p) => p[1]));
    const rMax = niceCeil(Math.max(...rys, 1e-9) * 1.05);
    const RY = (y: number) => m.t + ph - (y / rMax) * ph;
    for (let i = 0; i <= 5; i++) {
      const v = (rMax * i) / 5;
      out.push(`<text x="${m.l + pw + 8}" y="${RY(v) + 4}">${esc(shortNum(v))}</text>`);
    }
    out.push(`<text transform="translate(${W - 14} ${m.t + ph / 2}) rotate(90)" text-anchor="middle">${esc(spec.right.label)}</text>`);
    for (const s of spec.right.series) drawSeries(s, RY);
    legend = [...legend, ...spec.right.series];
  }
  legend.forEach((s, i) => {
    const lx = m.l + 10 + (i % 3) * 270;
    const ly = m.t + 16 + Math.floor(i / 3) * 16;
    out.push(`<line x1="${lx}" x2="${lx + 22}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ""}/>`);
    out.push(`<text x="${lx + 28}" y="${ly}">${esc(s.label)}</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

function niceCeil(v: number): number {
  if (v <= 0) return 1;
  const e = 10 ** Math.floor(Math.log10(v));
  for (const f of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (f * e >= v) return f * e;
  return 10 * e;
}

function niceTicks(min: number, max: number): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [];
  const span = max - min || 1;
  const step = niceCeil(span / 6);
  const out: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + 1e-9 && out.length < 20; v += step) out.push(v);
  return out;
}

function shortNum(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  if (a >= 100) return String(Math.round(v));
  if (a >= 1) return String(+v.toFixed(2));
  return String(+v.toPrecision(2));
}
