import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MAX_BACKOFF_MS, type RetryPolicy, nextRetry, retryDelay } from "./backoff.js";
import { PREVIEW_CODE_POINTS, previewOf } from "./push-plan.js";

const policy: RetryPolicy = { maxAttempts: 5, baseMs: 100, windowMs: 10_000 };
const almostOne = 1 - Number.EPSILON;

describe("retryDelay", () => {
  it("draws each wait uniformly below base * 2^(retry-1) (full jitter), capped", () => {
    assert.equal(retryDelay(1, policy, undefined, () => 0), 0);
    assert.equal(retryDelay(1, policy, undefined, () => 0.5), 50);
    assert.equal(retryDelay(1, policy, undefined, () => almostOne), 99);
    assert.equal(retryDelay(2, policy, undefined, () => almostOne), 199);
    assert.equal(retryDelay(4, policy, undefined, () => almostOne), 799);
    assert.equal(retryDelay(40, policy, undefined, () => almostOne), MAX_BACKOFF_MS - 1, "capped, also for large retry numbers");
  });

  it("honours Retry-After: never earlier, with a jitter below the base", () => {
    assert.equal(retryDelay(1, policy, 2_000, () => 0), 2_000);
    assert.equal(retryDelay(3, policy, 2_000, () => almostOne), 2_100);
    assert.equal(retryDelay(1, policy, 0, () => 0.5), 50, "Retry-After: 0 is ordinary backoff");
  });
});

describe("nextRetry", () => {
  it("stops after maxAttempts attempts", () => {
    assert.equal(nextRetry(4, 0, policy, undefined, () => 0.5), 400);
    assert.equal(nextRetry(5, 0, policy, undefined, () => 0), undefined);
  });

  it("gives up when the wait would start an attempt past the retry window", () => {
    assert.equal(nextRetry(1, 9_000, policy, 1_000, () => 0), 1_000);
    assert.equal(nextRetry(1, 9_001, policy, 1_000, () => 0), undefined);
    assert.equal(nextRetry(1, 0, policy, 20_000, () => 0), undefined, "a Retry-After beyond the window gives up at once");
  });
});

describe("previewOf", () => {
  it("puts the text on one line and cuts it by code points, ending in an ellipsis", () => {
    assert.equal(previewOf("  hello\n\n  world\t!  "), "hello world !");
    const long = "😀".repeat(PREVIEW_CODE_POINTS + 5);
    const cut = previewOf(long);
    assert.equal(Array.from(cut).length, PREVIEW_CODE_POINTS);
    assert.ok(cut.endsWith("😀…"), "no surrogate pair is split");
    const exact = "a".repeat(PREVIEW_CODE_POINTS);
    assert.equal(previewOf(exact), exact);
  });
});
