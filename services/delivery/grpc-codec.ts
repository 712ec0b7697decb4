/**
 * The hand codec's writing half, the one place every path writes these bytes with: the length-prefixed envelope
 * (a flag byte and a 32-bit big-endian length; gRPC, gRPC-Web and the Connect streaming protocol frame a message
 * alike) and protobuf varints. The hub's frames (outbound.ts, event-frame.ts) and the wire's (wire/framing.ts, the
 * framed paths, the front door, the connect-node adapter) are written with it; it lives here, below wire/, because
 * delivery builds frames too. Reading frames is wire/framing.ts's FrameReader. grpc-codec.spec.ts checks it byte
 * for byte against protobuf-es and connect-es.
 */

/** ENVELOPE_HEADER_BYTES is the size of an envelope's header: the flag byte and the 32-bit length. */
export const ENVELOPE_HEADER_BYTES = 5;

/** writeEnvelopeHeader writes an envelope's header at the start of `frame`: `flags`, then `length` big-endian. */
export function writeEnvelopeHeader(frame: Buffer, flags: number, length: number): void {
  frame[0] = flags;
  frame.writeUInt32BE(length, 1);
}

/**
 * envelope frames a payload with the given flags (0: a message; 0x02: Connect's end of stream; 0x80: a gRPC-Web
 * trailer frame). The frame is a Buffer of its own size.
 */
export function envelope(flags: number, payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(ENVELOPE_HEADER_BYTES + payload.length);
  writeEnvelopeHeader(frame, flags, payload.length);
  frame.set(payload, ENVELOPE_HEADER_BYTES);
  return frame;
}

/** varintSize is the encoded size of a non-negative safe integer. */
export function varintSize(n: number): number {
  let v = n;
  let size = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    size++;
  }
  return size;
}

/** writeVarint writes a non-negative safe integer at `p` and returns the position after it. */
export function writeVarint(buf: Uint8Array, p: number, n: number): number {
  let v = n;
  let q = p;
  while (v >= 0x80) {
    buf[q++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[q++] = v;
  return q;
}
