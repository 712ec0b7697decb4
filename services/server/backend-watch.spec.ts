import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { pino } from "pino";
import { BackendWatch, SLOW_START_REPORTS } from "./backend-watch.js";

function capture() {
  const lines: { level: number; msg: string; backend: string }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split("\n")) if (l.trim()) lines.push(JSON.parse(l) as (typeof lines)[number]);
      done();
    },
  });
  return { logger: pino({ level: "debug" }, sink), lines };
}
const tick = () => new Promise((r) => setImmediate(r));
const WARN = 40;
const INFO = 30;

describe("BackendWatch", () => {
  it("a backend still connecting at start is not an incident: one info line when it comes up, no warning", async () => {
    const { logger, lines } = capture();
    const watch = new BackendWatch(logger);
    let up = false;
    const probe = { name: "redis", healthy: () => up };
    assert.equal(watch.report(probe), false);
    up = true;
    assert.equal(watch.report(probe), true);
    watch.report(probe);
    await tick();
    assert.deepEqual(lines.map((l) => [l.level, l.msg, l.backend]), [[INFO, "backend reachable", "redis"]]);
  });

  it("an outage warns at both ends, once each", async () => {
    const { logger, lines } = capture();
    const watch = new BackendWatch(logger);
    let up = true;
    const probe = { name: "nats", healthy: () => up };
    watch.report(probe);
    up = false;
    watch.report(probe);
    watch.report(probe);
    up = true;
    watch.report(probe);
    await tick();
    assert.deepEqual(lines.map((l) => [l.level, l.msg]), [
      [WARN, "backend unreachable"],
      [WARN, "backend reachable again"],
    ]);
  });

  it("a backend that never comes up after start is warned about once", async () => {
    const { logger, lines } = capture();
    const watch = new BackendWatch(logger);
    const probe = { name: "redis", healthy: () => false };
    for (let i = 0; i < SLOW_START_REPORTS * 3; i++) watch.report(probe);
    await tick();
    assert.deepEqual(lines.map((l) => [l.level, l.msg]), [[WARN, "backend unreachable since start"]]);
  });
});
