import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { mapLimit } from "./map-limit.js";

describe("mapLimit", () => {
  it("keeps the input order and never has more than `limit` calls in flight", async () => {
    let inFlight = 0;
    let most = 0;
    const out = await mapLimit([5, 1, 4, 2, 3, 0], 2, async (n) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, n));
      inFlight--;
      return n * 10;
    });
    assert.deepEqual(out, [50, 10, 40, 20, 30, 0]);
    assert.equal(most, 2);
  });

  it("maps nothing to nothing, and a limit below one still makes progress", async () => {
    assert.deepEqual(await mapLimit([], 4, async (n: number) => n), []);
    assert.deepEqual(await mapLimit([1, 2], 0, async (n) => n + 1), [2, 3]);
  });
});
