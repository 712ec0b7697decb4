/**
 * Reading a server's Prometheus metrics in tests: GET /metrics over real
 * HTTP, parsed into series.
 */
import assert from "node:assert/strict";
import type { TestServer } from "./test-server.js";

/** Scrape is one parsed scrape: series (`name{a="x",b="y"}`, labels sorted) to value. */
export class Scrape {
  constructor(readonly series: ReadonlyMap<string, number>) {}

  /** get returns a series' value; a series that is absent (never recorded) is 0. */
  get(name: string, labels: Record<string, string> = {}): number {
    return this.series.get(seriesKey(name, labels)) ?? 0;
  }
}

function seriesKey(name: string, labels: Record<string, string>): string {
  const parts = Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}="${v}"`);
  return parts.length ? `${name}{${parts.join(",")}}` : name;
}

/** parse reads the Prometheus text format (as prom-client writes it: no timestamps, no escaped quotes in our labels). */
export function parse(text: string): Scrape {
  const series = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a metric line: ${line}`);
    const [, name = "", rawLabels, value = ""] = m;
    const labels: Record<string, string> = {};
    for (const l of rawLabels ? rawLabels.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g) : []) labels[l[1] ?? ""] = l[2] ?? "";
    series.set(seriesKey(name, labels), value === "+Inf" ? Infinity : Number(value));
  }
  return new Scrape(series);
}

export async function scrape(server: TestServer): Promise<Scrape> {
  const res = await fetch(`${server.baseUrl}/metrics`);
  assert.equal(res.status, 200);
  return parse(await res.text());
}

