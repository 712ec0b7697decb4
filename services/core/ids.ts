import { randomFillSync } from "node:crypto";
import { v7 as uuidv7 } from "uuid";

/** How many ids one fill of the random pool serves (16 bytes each). */
const IDS_PER_FILL = 256;
const pool = new Uint8Array(16 * IDS_PER_FILL);
/** The next unused id's slot in `pool`; IDS_PER_FILL means "refill first". */
let slot = IDS_PER_FILL;
/** The last id's time and counter (RFC 9562 §6.2, method 1: a counter seeded at random each millisecond). */
const last = { msecs: -Infinity, seq: 0 };

/**
 * newId returns a fresh UUIDv7: unique, lower case, and strictly increasing
 * within this process (ids made in the same millisecond are ordered by a
 * counter, as `uuid`'s own v7 does).
 *
 * `uuid` asks the CSPRNG for 16 bytes per id, a call into Node's crypto
 * each (~3 µs; about 1–4% of the event loop on the send path under load);
 * here one call fills a pool for 256 ids. The bytes are the same CSPRNG's, each used once. Ids are
 * not secrets: tokens take their own randomness (`randomBytes`).
 */
export function newId(): string {
  if (slot === IDS_PER_FILL) {
    randomFillSync(pool);
    slot = 0;
  }
  const random = pool.subarray(slot * 16, ++slot * 16);
  const now = Date.now();
  if (now > last.msecs) {
    last.msecs = now;
    // uuid's seeding: 31 random bits, so the counter has room to grow within the millisecond.
    last.seq = ((random[6]! & 0x7f) << 24) | (random[7]! << 16) | (random[8]! << 8) | random[9]!;
  } else {
    // The same millisecond (or the clock went back): count on; on overflow borrow the next millisecond.
    last.seq = (last.seq + 1) | 0;
    if (last.seq === 0) last.msecs++;
  }
  return uuidv7({ random, msecs: last.msecs, seq: last.seq });
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** isId tells whether s has the shape of an id this server issues (a lower-case UUID). */
export function isId(s: string): boolean {
  return UUID_RE.test(s);
}
