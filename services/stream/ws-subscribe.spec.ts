import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { closeReason } from "./ws-subscribe.js";

describe("closeReason", () => {
  it("keeps a message that fits a close frame", () => {
    assert.equal(closeReason("server is shutting down; reconnect with your cursors"), "server is shutting down; reconnect with your cursors");
    const exact = "a".repeat(123);
    assert.equal(closeReason(exact), exact);
  });

  it("cuts a longer one to 123 bytes on a character boundary, marked with an ellipsis", () => {
    const long = "é".repeat(100); // 200 bytes of 2-byte characters
    const cut = closeReason(long);
    assert.ok(Buffer.byteLength(cut) <= 123, `${Buffer.byteLength(cut)} bytes`);
    assert.ok(cut.endsWith("..."));
    assert.equal(cut.slice(0, -3), "é".repeat(60), "whole characters only");
    assert.equal(Buffer.from(cut, "utf8").toString("utf8"), cut, "valid UTF-8");
  });
});
