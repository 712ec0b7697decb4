import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { streamSeqOfAck } from "./jetstream-pull.js";

describe("streamSeqOfAck", () => {
  it("reads the stream sequence of an ack subject without and with a domain", () => {
    assert.equal(streamSeqOfAck("$JS.ACK.CHAT_TIMELINE.persister.1.4021.17.1796668942023114082.3"), 4021);
    assert.equal(streamSeqOfAck("$JS.ACK.hub.ACCHASH.CHAT_TIMELINE.persister.2.77.18.1796668942023114082.0.tok"), 77);
  });

  it("refuses what is not an ack subject or carries no valid sequence", () => {
    for (const s of [
      "_INBOX.abc",
      "$JS.API.CONSUMER.MSG.NEXT.S.d",
      "$JS.ACK.S.d.1.x.17.1.0",
      "$JS.ACK.S.d.1.0.17.1.0",
      "$JS.ACK.S.d.1.1.1",
      "$JS.ACK.S.d.1.-3.17.1.0",
    ]) {
      assert.equal(streamSeqOfAck(s), undefined, s);
    }
  });
});
