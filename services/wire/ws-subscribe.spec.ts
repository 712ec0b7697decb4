import assert from "node:assert/strict";
import type { Writable } from "node:stream";
import { describe, it } from "node:test";
import * as ws from "ws";
import { wsBinaryFrame } from "../delivery/outbound.js";
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

describe("wsBinaryFrame", () => {
  it("frames payloads of every length class as one binary message a WebSocket client reads back", async () => {
    for (const n of [0, 1, 125, 126, 65_535, 65_536, 200_000]) {
      const payload = Buffer.alloc(n, n % 251);
      const frame = wsBinaryFrame(payload);
      assert.equal(frame[0], 0x82, "FIN + binary");
      assert.equal(frame[1]! & 0x80, 0, "not masked (server to client)");
      // ws's own parser, as a client: binary message, same bytes. (ws exports its Receiver; @types/ws does not declare it.)
      const { Receiver } = ws as unknown as { Receiver: new (options: object) => Writable };
      const receiver = new Receiver({ isServer: false, binaryType: "nodebuffer", maxPayload: 0 });
      const got = new Promise<[Buffer, boolean]>((resolve, reject) => {
        receiver.on("message", (data: Buffer, isBinary: boolean) => resolve([data, isBinary]));
        receiver.on("error", reject);
      });
      receiver.write(frame);
      const [data, isBinary] = await got;
      assert.ok(isBinary, `${n} bytes: binary`);
      assert.ok(data.equals(payload), `${n} bytes: payload`);
    }
  });
});
