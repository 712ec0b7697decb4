import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isChatError } from "../core/errors.js";
import { Base64Chunks, BodyBudget, BodyDeadlines } from "./request-body.js";

describe("Base64Chunks", () => {
  const bytes = Buffer.from(Array.from({ length: 40 }, (_, i) => (i * 37) % 256));

  it("decodes a body split anywhere, and separately padded chunks as their concatenation", () => {
    const whole = bytes.toString("base64");
    for (let cut = 0; cut <= whole.length; cut++) {
      const d = new Base64Chunks();
      const out = Buffer.concat([d.push(Buffer.from(whole.slice(0, cut))), d.push(Buffer.from(whole.slice(cut)))]);
      assert.deepEqual(out, bytes, `cut at ${cut}`);
      assert.ok(d.ended);
    }
    for (const sizes of [[1, 39], [2, 1, 37], [5, 5, 5, 25]]) {
      let at = 0;
      const text = sizes.map((n) => bytes.subarray(at, (at += n)).toString("base64")).join("");
      const d = new Base64Chunks();
      assert.deepEqual(d.push(Buffer.from(text)), bytes, String(sizes));
      assert.ok(d.ended);
    }
  });

  it("reports an unfinished group and refuses what is not base64 with InvalidArgument", () => {
    const d = new Base64Chunks();
    d.push(Buffer.from("QUJD" + "QU"));
    assert.equal(d.ended, false);
    for (const bad of ["QUJ!", "Q===", "QU=D", "QUJD QUJD", "QU\n"]) {
      assert.throws(() => new Base64Chunks().push(Buffer.from(bad)), (e) => isChatError(e, "InvalidArgument") && /must be base64/.test(e.message), bad);
    }
  });
});

describe("BodyBudget", () => {
  it("refuses what would exceed the limit, reserves nothing then, and takes again once bytes are given back", () => {
    const b = new BodyBudget(100);
    assert.equal(b.take(60), true);
    assert.equal(b.take(41), false);
    assert.equal(b.inUse, 60);
    assert.equal(b.take(40), true);
    b.give(60);
    assert.equal(b.take(60), true);
    assert.equal(b.inUse, 100);
  });
});

describe("BodyDeadlines", () => {
  it("expires a pending body once its deadline has passed, never one deleted before", async () => {
    const d = new BodyDeadlines(100);
    const expired: { name: string; afterMs: number }[] = [];
    const t0 = Date.now();
    d.add(() => expired.push({ name: "slow", afterMs: Date.now() - t0 }));
    const done = d.add(() => expired.push({ name: "done", afterMs: Date.now() - t0 }));
    d.delete(done);
    while (expired.length === 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(expired.map((e) => e.name), ["slow"]);
    assert.ok(expired[0]!.afterMs >= 100, `expired after ${expired[0]!.afterMs} ms, not before its deadline`);
  });
});
