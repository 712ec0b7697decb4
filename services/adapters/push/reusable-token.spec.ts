import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { reusableToken } from "./reusable-token.js";

/** gate is a make() whose calls are counted and each settled by the test. */
function gate() {
  const calls: { resolve: (t: { n: number }) => void; reject: (e: Error) => void }[] = [];
  const make = () =>
    new Promise<{ n: number }>((resolve, reject) => {
      calls.push({ resolve, reject });
    });
  return { calls, make };
}

describe("reusableToken", () => {
  it("shares one make among concurrent gets, then reuses the token while it is fresh", async () => {
    const g = gate();
    let fresh = true;
    const token = reusableToken(g.make, () => fresh);
    const a = token.get();
    const b = token.get();
    await Promise.resolve();
    assert.equal(g.calls.length, 1);
    g.calls[0]?.resolve({ n: 1 });
    const [ta, tb] = await Promise.all([a, b]);
    assert.equal(ta, tb);
    assert.equal(await token.get(), ta);
    assert.equal(g.calls.length, 1);

    fresh = false;
    const c = token.get();
    await Promise.resolve();
    assert.equal(g.calls.length, 2);
    g.calls[1]?.resolve({ n: 2 });
    assert.deepEqual(await c, { n: 2 });
  });

  it("gives a failed make's error to every waiting get and keeps nothing", async () => {
    const g = gate();
    const token = reusableToken(g.make, () => true);
    const a = token.get();
    const b = token.get();
    await Promise.resolve();
    g.calls[0]?.reject(new Error("refused"));
    await assert.rejects(a, /refused/);
    await assert.rejects(b, /refused/);
    const c = token.get();
    await Promise.resolve();
    assert.equal(g.calls.length, 2);
    g.calls[1]?.resolve({ n: 2 });
    assert.deepEqual(await c, { n: 2 });
  });

  it("drop forgets only the token that was used", async () => {
    const g = gate();
    const token = reusableToken(g.make, () => true);
    const first = token.get();
    await Promise.resolve();
    g.calls[0]?.resolve({ n: 1 });
    const used = await first;

    token.drop({ n: 1 }); // an equal but other token: the kept one stays
    assert.equal(await token.get(), used);
    assert.equal(g.calls.length, 1);

    token.drop(used);
    const next = token.get();
    await Promise.resolve();
    assert.equal(g.calls.length, 2);
    g.calls[1]?.resolve({ n: 2 });
    const newer = await next;
    token.drop(used); // a stale send's drop leaves the newer token
    assert.equal(await token.get(), newer);
    assert.equal(g.calls.length, 2);
  });
});
