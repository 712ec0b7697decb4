import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setImmediate as turn } from "node:timers/promises";
import { MemoryPresence } from "../adapters/memory/memory-presence.js";
import { PresenceReporter } from "./presence-reporter.js";

describe("PresenceReporter", () => {
  const setUp = () => {
    let now = 1_000;
    const presence = new MemoryPresence(() => now);
    const errors: unknown[] = [];
    const reporter = new PresenceReporter(presence, { holder: "p1", ttlMs: 30_000, onError: (e) => errors.push(e) });
    return { presence, reporter, errors, advance: (ms: number) => (now += ms) };
  };

  it("makes a user online with the first stream and offline with the last", async () => {
    const { presence, reporter } = setUp();
    try {
      reporter.opened("ann");
      reporter.opened("ann");
      await turn();
      assert.deepEqual([...(await presence.online(["ann"]))], ["ann"]);
      reporter.closed("ann");
      await turn();
      assert.deepEqual([...(await presence.online(["ann"]))], ["ann"], "one stream is still open");
      reporter.closed("ann");
      await turn();
      assert.deepEqual([...(await presence.online(["ann"]))], []);
    } finally {
      await reporter.stop();
    }
  });

  it("sends a user who came and went within one turn as offline, and keeps other holders' entries", async () => {
    const { presence, reporter } = setUp();
    try {
      await presence.setOnline("p2", ["bob"], 30_000);
      reporter.opened("bob");
      reporter.closed("bob");
      reporter.opened("cy");
      reporter.closed("cy");
      await turn();
      assert.deepEqual([...(await presence.online(["bob", "cy"]))], ["bob"], "bob is still held by p2");
    } finally {
      await reporter.stop();
    }
  });

  it("refresh keeps local users alive past the TTL; stop takes them offline", async () => {
    const { presence, reporter, advance } = setUp();
    reporter.opened("dee");
    await turn();
    advance(20_000);
    await reporter.refresh();
    advance(20_000);
    assert.deepEqual([...(await presence.online(["dee"]))], ["dee"], "refreshed 20 s ago with a 30 s TTL");
    await reporter.stop();
    assert.deepEqual([...(await presence.online(["dee"]))], []);
  });

  it("reports a failing Presence instead of throwing", async () => {
    const errors: unknown[] = [];
    const down = () => Promise.reject(new Error("down"));
    const reporter = new PresenceReporter({ setOnline: down, setOffline: down, online: down }, { holder: "p", ttlMs: 30_000, onError: (e) => errors.push(e) });
    reporter.opened("eve");
    await turn();
    await turn();
    await reporter.stop();
    assert.equal(errors.length, 2, "the setOnline of the flush and the setOffline of stop");
  });
});
