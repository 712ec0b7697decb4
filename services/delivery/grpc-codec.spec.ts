import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { ENVELOPE_HEADER_BYTES, envelope, varintSize, writeVarint } from "./grpc-codec.js";

/** Numbers across every varint width, up to the largest a seq or a time may be (2^53 - 1). */
const NUMBERS = [0, 1, 127, 128, 300, 16_383, 16_384, 2 ** 21 - 1, 2 ** 21, 2 ** 28 - 1, 2 ** 28, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 35, 2 ** 42, 2 ** 49, 2 ** 49 + 12_345, 2 ** 53 - 1];

describe("grpc-codec", () => {
  it("writes varints as protobuf-es does, and sizes them", () => {
    for (const n of NUMBERS) {
      const expected = new BinaryWriter().uint64(BigInt(n)).finish();
      const buf = new Uint8Array(12).fill(0xee);
      const end = writeVarint(buf, 2, n);
      assert.deepEqual(buf.subarray(2, end), expected, `varint ${n}`);
      assert.equal(varintSize(n), expected.length, `varintSize ${n}`);
      assert.equal(buf[end], 0xee, `nothing written past varint ${n}`);
    }
  });

  it("frames a payload as connect-es does, for every flag the paths use and lengths across widths", () => {
    for (const flags of [0x00, 0x02, 0x80]) {
      for (const length of [0, 1, 255, 256, 65_536, 70_000]) {
        const payload = Uint8Array.from({ length }, (_, i) => i % 251);
        const frame = envelope(flags, payload);
        assert.deepEqual(new Uint8Array(frame), encodeEnvelope(flags, payload), `flags ${flags}, ${length} bytes`);
        assert.equal(frame.length, ENVELOPE_HEADER_BYTES + length);
      }
    }
  });

  it("frames what protobuf-es wrote: the header, then its very bytes", () => {
    const message = new BinaryWriter().tag(1, 2).string("group").tag(2, 0).uint64(2n ** 40n).finish();
    const frame = envelope(0, message);
    assert.equal(frame.readUInt8(0), 0);
    assert.equal(frame.readUInt32BE(1), message.length);
    assert.deepEqual(new Uint8Array(frame.subarray(ENVELOPE_HEADER_BYTES)), message);
  });
});
