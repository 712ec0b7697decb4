import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, it } from "node:test";
import { isChatError } from "../core/errors.js";
import type { AnyRequest, AnyResponse } from "./framing.js";
import { Base64Chunks, BodyBudget, BodyDeadlines, MAX_HELD_STREAM_BYTES, readRequestBody, readRequestStream } from "./request-body.js";

describe("Base64Chunks", () => {
  const bytes = Buffer.from(Array.from({ length: 40 }, (_, i) => (i * 37) % 256));

  it("decodes a body split anywhere, and separately padded chunks as their concatenation", () => {
    const whole = bytes.toString("base64");
    for (let cut = 0; cut <= whole.length; cut++) {
      const d = new Base64Chunks();
      const out = Buffer.concat([d.push(Buffer.from(whole.slice(0, cut))), d.push(Buffer.from(whole.slice(cut)))]);
      assert.deepEqual(out, bytes, `cut at ${cut}`);
      assert.ok(d.ended);
    }
    for (const sizes of [[1, 39], [2, 1, 37], [5, 5, 5, 25]]) {
      let at = 0;
      const text = sizes.map((n) => bytes.subarray(at, (at += n)).toString("base64")).join("");
      const d = new Base64Chunks();
      assert.deepEqual(d.push(Buffer.from(text)), bytes, String(sizes));
      assert.ok(d.ended);
    }
  });

  it("reports an unfinished group and refuses what is not base64 with InvalidArgument", () => {
    const d = new Base64Chunks();
    d.push(Buffer.from("QUJD" + "QU"));
    assert.equal(d.ended, false);
    for (const bad of ["QUJ!", "Q===", "QU=D", "QUJD QUJD", "QU\n"]) {
      assert.throws(() => new Base64Chunks().push(Buffer.from(bad)), (e) => isChatError(e, "InvalidArgument") && /must be base64/.test(e.message), bad);
    }
  });
});

describe("BodyBudget", () => {
  it("refuses what would exceed the limit, reserves nothing then, and takes again once bytes are given back", () => {
    const b = new BodyBudget(100);
    assert.equal(b.take(60), true);
    assert.equal(b.take(41), false);
    assert.equal(b.inUse, 60);
    assert.equal(b.take(40), true);
    b.give(60);
    assert.equal(b.take(60), true);
    assert.equal(b.inUse, 100);
  });
});

describe("BodyDeadlines", () => {
  it("expires a pending body once its deadline has passed, never one deleted before", async () => {
    const d = new BodyDeadlines(100);
    const expired: { name: string; afterMs: number }[] = [];
    const t0 = Date.now();
    d.add(() => expired.push({ name: "slow", afterMs: Date.now() - t0 }));
    const done = d.add(() => expired.push({ name: "done", afterMs: Date.now() - t0 }));
    d.delete(done);
    while (expired.length === 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(expired.map((e) => e.name), ["slow"]);
    assert.ok(expired[0]!.afterMs >= 100, `expired after ${expired[0]!.afterMs} ms, not before its deadline`);
  });
});

describe("readRequestStream", () => {
  /** fakeCall is a request that records pause/resume, and its response. */
  const fakeCall = () => {
    const req = Object.assign(new EventEmitter(), {
      paused: false,
      headers: {},
      pause() {
        req.paused = true;
        return req;
      },
      resume() {
        req.paused = false;
        return req;
      },
    });
    return { req, asRequest: req as unknown as AnyRequest, res: new EventEmitter() as unknown as AnyResponse };
  };
  /** A 16 KiB HTTP/2 DATA frame's worth of empty 5-byte frames (3,276 of them). */
  const emptyFrames = (n: number) => Buffer.alloc(5 * n);

  it("holds a chunk of many empty frames as raw bytes, counted, and pauses past the bound until the handler takes them", async () => {
    const { req, asRequest, res } = fakeCall();
    const budget = new BodyBudget(16 * 1024 * 1024);
    const body = readRequestStream(asRequest, res, { maxBytes: 8192, method: "ServerReflectionInfo", deadlines: new BodyDeadlines(10_000), budget });
    const chunk = emptyFrames(3276);
    req.emit("data", chunk);
    // Nothing is cut before the handler asks: the bytes are held raw and stay counted against the budget.
    assert.equal(budget.inUse, chunk.length, "the raw bytes held count against the budget until consumed");
    assert.equal(req.paused, false, "under the bound the request keeps flowing");
    let sent = chunk.length;
    while (sent <= MAX_HELD_STREAM_BYTES) {
      req.emit("data", chunk);
      sent += chunk.length;
    }
    assert.equal(req.paused, true, `paused once ${sent} bytes are held (bound ${MAX_HELD_STREAM_BYTES})`);
    assert.equal(budget.inUse, sent);

    const it = body[Symbol.asyncIterator]();
    const first = await it.next();
    assert.deepEqual(first.value, Buffer.alloc(5), "one empty message, its envelope included");
    assert.equal(budget.inUse, sent - 5, "a message taken is the handler's: its bytes are given back");
    let taken = 1;
    while (req.paused) {
      await it.next();
      taken++;
    }
    assert.ok(sent - 5 * taken <= MAX_HELD_STREAM_BYTES, "resumed once at most the bound is held");
    assert.equal(budget.inUse, sent - 5 * taken);
    await it.return?.(undefined);
    assert.equal(budget.inUse, 0, "a handler that stops reading releases what was held");
  });

  it("times an incomplete message, not complete ones waiting for the handler, and ends with DEADLINE_EXCEEDED", async () => {
    const { req, asRequest, res } = fakeCall();
    const budget = new BodyBudget(1 << 20);
    const body = readRequestStream(asRequest, res, { maxBytes: 8192, method: "ServerReflectionInfo", deadlines: new BodyDeadlines(100), budget });
    const partial = Buffer.alloc(5 + 10);
    partial.writeUInt32BE(1000, 1);
    req.emit("data", Buffer.concat([Buffer.alloc(5), partial]));
    const it = body[Symbol.asyncIterator]();
    assert.deepEqual((await it.next()).value, Buffer.alloc(5));
    const t0 = Date.now();
    const alive = setInterval(() => {}, 50); // the deadlines' timer does not hold the process open
    await assert.rejects(it.next(), (e: Error) => /REQUEST_BODY_TIMEOUT/.test(e.message));
    clearInterval(alive);
    assert.ok(Date.now() - t0 >= 50, "expired by its deadline");
    assert.equal(budget.inUse, 0);
  });

  it("yields the messages before an end inside a message, then INVALID_ARGUMENT", async () => {
    const { req, asRequest, res } = fakeCall();
    const body = readRequestStream(asRequest, res, { maxBytes: 8192, method: "M", deadlines: new BodyDeadlines(10_000) });
    req.emit("data", Buffer.concat([Buffer.from([0, 0, 0, 0, 1, 7]), Buffer.from([0, 0, 0])]));
    req.emit("end");
    const it = body[Symbol.asyncIterator]();
    assert.deepEqual((await it.next()).value, Buffer.from([0, 0, 0, 0, 1, 7]));
    await assert.rejects(it.next(), /ended inside a message/);
  });
});

describe("readRequestBody", () => {
  it("cancel lets go of a body at once: its bytes go back to the budget, its deadline is dropped, and neither callback runs", async () => {
    const req = Object.assign(new EventEmitter(), { headers: {} });
    const res = new EventEmitter();
    const budget = new BodyBudget(1024 * 1024);
    const deadlines = new BodyDeadlines(100);
    const heard: string[] = [];
    const cancel = readRequestBody(
      req as unknown as AnyRequest,
      res as unknown as AnyResponse,
      { framing: "framed", maxBytes: 8192, method: "SendMessage", deadlines, budget },
      () => heard.push("message"),
      (r) => heard.push(`refused ${r.error.code}`),
    );
    const partial = Buffer.alloc(1000);
    partial.writeUInt32BE(4000, 1); // announces 4,000 bytes, sends 995
    req.emit("data", partial);
    assert.equal(budget.inUse, 1000);
    cancel();
    assert.equal(budget.inUse, 0, "the held bytes are given back at once");
    assert.equal(req.listenerCount("data"), 0, "nothing more is read");
    await new Promise((r) => setTimeout(r, 1200)); // past the deadline and its sweep
    req.emit("end");
    assert.deepEqual(heard, [], "the caller answered by itself: no callback");
  });
});
