import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { PushContent } from "../../core/ports.js";
import { MAX_RETRY_AFTER_MS, retryAfterMs } from "./outcomes.js";
import { apnsCollapseId, fitPayload, renderPushText, webPushTopic } from "./push-payload.js";

function content(over: Partial<PushContent> = {}): PushContent {
  return {
    groupId: "g1",
    groupName: "Book club",
    newestSeq: 9,
    count: 1,
    latestSender: "dana",
    preview: "chapter 3 tonight",
    badge: 1,
    collapseKey: "k",
    ...over,
  };
}

describe("renderPushText", () => {
  it("says who wrote what for one message, and how many for more", () => {
    assert.deepEqual(renderPushText(content()), { title: "Book club", body: "dana: chapter 3 tonight" });
    assert.deepEqual(renderPushText(content({ count: 5 })), { title: "Book club", body: "5 new messages in Book club\ndana: chapter 3 tonight" });
    assert.deepEqual(renderPushText(content({ preview: "" })), { title: "Book club", body: "New message from dana" });
  });

  it("caps very long names at 100 code points", () => {
    const text = renderPushText(content({ groupName: "n".repeat(500) }));
    assert.equal(Array.from(text.title).length, 100);
    assert.ok(text.title.endsWith("…"));
  });
});

describe("fitPayload", () => {
  const build = (t: { title: string; body: string }) => JSON.stringify(t);

  it("keeps a preview that fits as it is", () => {
    assert.equal(fitPayload(content(), 4096, build), JSON.stringify(renderPushText(content())));
  });

  it("cuts the longest fitting prefix by code points and adds …", () => {
    const preview = "😀".repeat(100);
    for (const max of [60, 61, 62, 63, 64, 65, 100, 200]) {
      const out = fitPayload(content({ preview }), max, build);
      assert.ok(out !== undefined);
      assert.ok(Buffer.byteLength(out) <= max, `${Buffer.byteLength(out)} > ${max}`);
      const body = (JSON.parse(out) as { body: string }).body;
      assert.doesNotMatch(body, /\p{Cs}/u);
      // One more emoji would not fit: the cut is the longest.
      if (body.endsWith("…")) {
        const longer = body.replace(/…$/, "😀…");
        assert.ok(Buffer.byteLength(JSON.stringify({ title: "Book club", body: longer })) > max);
      }
    }
  });

  it("keeps at least one code point when that fits, and gives up when nothing fits", () => {
    const one = JSON.stringify({ title: "Book club", body: "dana: l…" });
    assert.equal(fitPayload(content({ preview: "long preview text" }), Buffer.byteLength(one), build), one);
    assert.equal(fitPayload(content({ preview: "long preview text" }), Buffer.byteLength(one) - 1, build), undefined);
    assert.equal(fitPayload(content(), 10, build), undefined);
  });
});

describe("collapse keys", () => {
  it("webPushTopic keeps a valid topic and hashes anything else to 32 base64url characters", () => {
    assert.equal(webPushTopic("grp_1-a"), "grp_1-a");
    assert.equal(webPushTopic(""), undefined);
    for (const key of ["g:1", "x".repeat(33), "ünï"]) {
      const t = webPushTopic(key);
      assert.match(t ?? "", /^[A-Za-z0-9_-]{32}$/);
      assert.equal(webPushTopic(key), t, "stable");
    }
    assert.notEqual(webPushTopic("g:1"), webPushTopic("g:2"));
  });

  it("apnsCollapseId keeps printable ASCII up to 64 bytes and hashes the rest", () => {
    assert.equal(apnsCollapseId("g:1"), "g:1");
    assert.equal(apnsCollapseId("x".repeat(64)), "x".repeat(64));
    assert.equal(apnsCollapseId(""), undefined);
    const long = apnsCollapseId("x".repeat(65));
    assert.ok(long !== undefined && long.length <= 64 && long !== "x".repeat(64));
    assert.ok((apnsCollapseId("grüße") ?? "").length <= 64);
  });
});

describe("retryAfterMs", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  it("reads delay-seconds and HTTP dates, clamps, and ignores garbage", () => {
    assert.equal(retryAfterMs("120", now), 120_000);
    assert.equal(retryAfterMs(["5", "9"], now), 5000);
    assert.equal(retryAfterMs("Thu, 01 Jan 2026 00:00:30 GMT", now), 30_000);
    assert.equal(retryAfterMs("Wed, 31 Dec 2025 23:59:00 GMT", now), 0);
    assert.equal(retryAfterMs("999999999", now), MAX_RETRY_AFTER_MS);
    assert.equal(retryAfterMs(undefined, now), undefined);
    assert.equal(retryAfterMs("", now), undefined);
    assert.equal(retryAfterMs("soon", now), undefined);
    assert.equal(retryAfterMs("-5", now), undefined);
  });
});
