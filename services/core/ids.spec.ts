import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { validate, version } from "uuid";
import { isId, newId } from "./ids.js";

/** msecsOf reads a UUIDv7's Unix milliseconds (its first 48 bits). */
function msecsOf(id: string): number {
  return Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}

describe("newId", () => {
  it("makes valid, lower-case UUIDv7s stamped with the current time", () => {
    const before = Date.now();
    const id = newId();
    const after = Date.now();
    assert.ok(validate(id), id);
    assert.equal(version(id), 7);
    assert.ok(isId(id), "lower case");
    assert.ok(msecsOf(id) >= before && msecsOf(id) <= after, `${msecsOf(id)} in [${before}, ${after}]`);
  });

  it("is unique and strictly increasing, within a millisecond and across many refills of its random pool", () => {
    const ids = Array.from({ length: 100_000 }, newId);
    assert.equal(new Set(ids).size, ids.length, "no id twice");
    let sameMillisecond = 0;
    for (let i = 1; i < ids.length; i++) {
      assert.ok(ids[i - 1]! < ids[i]!, `${ids[i - 1]} < ${ids[i]} (#${i})`);
      if (msecsOf(ids[i - 1]!) === msecsOf(ids[i]!)) sameMillisecond++;
    }
    assert.ok(sameMillisecond > 1000, "the run made many ids per millisecond, so the counter was exercised");
  });

  it("draws fresh random bits for every id (the tail differs even between neighbours)", () => {
    const tails = new Set(Array.from({ length: 10_000 }, () => newId().slice(-12)));
    assert.equal(tails.size, 10_000);
  });
});
