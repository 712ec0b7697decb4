import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setImmediate as turn } from "node:timers/promises";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { ConnectionClosedError, JsRequests, RequestInterruptedError, RequestTimeoutError, RequestsClosedError } from "./js-requests.js";

/** FakeConnection records publishes, lets the test answer them on the one inbox subscription and emit status events. */
class FakeConnection {
  readonly published: { subject: string; reply: string; data: string }[] = [];
  private readonly statuses: { type: string }[] = [];
  private wakeStatus: (() => void) | undefined;
  private callback: ((err: Error | null, m: Msg) => void) | undefined;
  subscriptions = 0;
  throwOnPublish = false;
  /** Where nats.js keeps whether it is connected right now (read once, when a JsRequests is made). */
  readonly protocol = { connected: true };
  private ended = false;

  isClosed(): boolean {
    return false;
  }

  subscribe(_subject: string, opts: { callback: (err: Error | null, m: Msg) => void }) {
    this.subscriptions++;
    this.callback = opts.callback;
    return { unsubscribe: () => void (this.callback = undefined) };
  }

  publish(subject: string, data: Uint8Array, opts: { reply: string }) {
    if (this.throwOnPublish) throw new Error("connection closed");
    this.published.push({ subject, reply: opts.reply, data: new TextDecoder().decode(data) });
  }

  /**
   * status yields what {@link emit} emits until stop() is called (JsRequests
   * stops it on close()).
   */
  status(): AsyncIterable<{ type: string }> & { stop(): void } {
    const self = this;
    let stopped = false;
    return {
      stop: () => {
        stopped = true;
        self.wakeStatus?.();
      },
      async *[Symbol.asyncIterator]() {
        while (!stopped && !self.ended) {
          const next = self.statuses.shift();
          if (next) yield next;
          else await new Promise<void>((resolve) => (self.wakeStatus = resolve));
        }
      },
    };
  }

  /** emit hands a status event to the status iterator and lets it run. */
  async emit(type: "disconnect" | "reconnect" | "close"): Promise<void> {
    this.statuses.push({ type });
    this.wakeStatus?.();
    await turn();
  }

  /** end ends the status events without a "close" event (as when the connection closes under the iterator). */
  async end(): Promise<void> {
    this.ended = true;
    this.wakeStatus?.();
    await turn();
  }

  answer(reply: string, text: string): void {
    this.callback?.(null, { subject: reply, data: new TextEncoder().encode(text) } as unknown as Msg);
  }
}

function setUp(timeoutMs = 1000, connected = true) {
  const nc = new FakeConnection();
  nc.protocol.connected = connected;
  return { nc, requests: new JsRequests(nc as unknown as NatsConnection, timeoutMs) };
}

/** isRejection tells whether a {@link settled} outcome is a rejection with an error of class `type`. */
function isRejection(outcome: unknown, type: new (...args: never[]) => Error): boolean {
  return typeof outcome === "object" && outcome !== null && "rejected" in outcome && outcome.rejected instanceof type;
}

/** settled resolves with how `p` settled, or "pending" if it has not within `ms` (bounded wait); call it before `p` can settle. */
async function settled(p: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const pending = new Promise<string>((resolve) => (timer = setTimeout(() => resolve("pending"), ms)));
  try {
    return await Promise.race([p.then((v) => ({ resolved: v }), (e: unknown) => ({ rejected: e })), pending]);
  } finally {
    clearTimeout(timer);
  }
}

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (m: Msg) => new TextDecoder().decode(m.data);

describe("JsRequests", () => {
  it("with a linger, sends a request at once after a quiet spell and holds the next ones for the next batch", async () => {
    const nc = new FakeConnection();
    const requests = new JsRequests(nc as unknown as NatsConnection, 5000, 200);
    const first = requests.request("a", bytes("1"));
    await turn();
    assert.deepEqual(nc.published.map((p) => p.subject), ["a"], "the first request after a quiet spell goes out in its own turn");
    const second = requests.request("b", bytes("2"));
    const third = requests.request("c", bytes("3"));
    await turn();
    await turn();
    assert.deepEqual(nc.published.map((p) => p.subject), ["a"], "requests within the linger wait for the next batch");
    assert.equal(requests.held, 2);
    await new Promise((r) => setTimeout(r, 250));
    assert.deepEqual(nc.published.map((p) => p.subject), ["a", "b", "c"], "the next batch carries both, together");
    for (const p of nc.published) nc.answer(p.reply, `re ${p.subject}`);
    assert.deepEqual((await Promise.all([first, second, third])).map(text), ["re a", "re b", "re c"]);
    requests.close();
  });

  it("publishes the requests of one turn together and resolves each with its own reply, in any order", async () => {
    const { nc, requests } = setUp();
    const one = requests.request("a", bytes("1"));
    const two = requests.request("b", bytes("2"));
    assert.equal(nc.published.length, 0, "nothing is sent before the check phase");
    await turn();
    assert.deepEqual(
      nc.published.map((p) => [p.subject, p.data]),
      [
        ["a", "1"],
        ["b", "2"],
      ],
    );
    assert.equal(nc.subscriptions, 1, "one inbox subscription for every request");
    const [r1, r2] = nc.published.map((p) => p.reply);
    assert.notEqual(r1, r2);
    nc.answer(r2 ?? "", "for two");
    nc.answer(r1 ?? "", "for one");
    nc.answer(r1 ?? "", "again: dropped");
    assert.equal(text(await one), "for one");
    assert.equal(text(await two), "for two");
    assert.equal(requests.size, 0);
  });

  it("times requests out oldest first, and drops a reply that comes too late", async () => {
    const { nc, requests } = setUp(60);
    const first = requests.request("a", bytes("1"));
    await new Promise((r) => setTimeout(r, 30));
    const second = requests.request("b", bytes("2"));
    await assert.rejects(first, (e) => e instanceof RequestTimeoutError && /no reply to a within 60 ms/.test(e.message));
    assert.equal(requests.size, 1, "the younger request still waits");
    await assert.rejects(second, RequestTimeoutError);
    nc.answer(nc.published[0]?.reply ?? "", "late");
    assert.equal(requests.size, 0);
  });

  it("rejects with the connection's error when the publish fails", async () => {
    const { nc, requests } = setUp();
    nc.throwOnPublish = true;
    await assert.rejects(requests.request("a", bytes("1")), /connection closed/);
    assert.equal(requests.size, 0);
  });

  it("fails the requests sent before a disconnect at once, and holds later ones until the reconnect", async () => {
    const { nc, requests } = setUp(60_000);
    const sent = assert.rejects(requests.request("a", bytes("1")), (e) => e instanceof RequestInterruptedError && /reply to a/.test(e.message));
    await turn();
    assert.equal(nc.published.length, 1);
    await nc.emit("disconnect");
    await sent;
    const held = requests.request("b", bytes("2"));
    await turn();
    assert.equal(nc.published.length, 1, "nothing is sent while the connection is down");
    assert.equal(requests.size, 1);
    await nc.emit("reconnect");
    await turn();
    assert.deepEqual(
      nc.published.map((p) => p.data),
      ["1", "2"],
      "the held request is sent once the connection is back",
    );
    nc.answer(nc.published[1]?.reply ?? "", "for two");
    assert.equal(text(await held), "for two");
    requests.close();
  });

  it("drops requests that time out while held: nothing of them stays in the outbox", async () => {
    const { nc, requests } = setUp(50);
    await nc.emit("disconnect");
    const held = [1, 2, 3].map((n) => requests.request(`s${n}`, bytes(String(n))));
    await turn();
    assert.equal(requests.held, 3, "held while the connection is down");
    for (const p of held) await assert.rejects(p, RequestTimeoutError);
    assert.equal(requests.size, 0);
    assert.equal(requests.held, 0, "an expired held request leaves the outbox with its payload");
    await nc.emit("reconnect");
    await turn();
    assert.equal(nc.published.length, 0, "nothing expired is sent after the reconnect");
    requests.close();
  });

  it("holds requests made while the connection is down at construction until the reconnect", async () => {
    const { nc, requests } = setUp(60_000, false);
    const held = requests.request("a", bytes("1"));
    await turn();
    assert.equal(nc.published.length, 0, "a connection down when the JsRequests was made holds requests");
    await nc.emit("reconnect");
    await turn();
    assert.equal(nc.published.length, 1);
    nc.answer(nc.published[0]?.reply ?? "", "for one");
    assert.equal(text(await held), "for one");
    requests.close();
  });

  it("fails at the reconnect a request sent before it in an earlier connection epoch, even without a disconnect seen", async () => {
    // nats.js said it was connected (or the disconnect came before the status subscription): the request went to nats.js, which discards it on redial.
    const { nc, requests } = setUp(60_000);
    const lost = requests.request("a", bytes("1"));
    await turn();
    assert.equal(nc.published.length, 1);
    const outcome = settled(lost, 500);
    await nc.emit("reconnect");
    assert.ok(
      isRejection(await outcome, RequestInterruptedError),
      `failed as interrupted at the reconnect, not after the 60 s timeout (${String(await outcome)})`,
    );
    // A request sent after the reconnect belongs to the new epoch and is answered as usual.
    const fresh = requests.request("b", bytes("2"));
    await turn();
    nc.answer(nc.published[1]?.reply ?? "", "for two");
    assert.equal(text(await fresh), "for two");
    assert.equal(requests.size, 0);
    requests.close();
  });

  for (const how of ["its close event", "the end of its status events"] as const) {
    it(`fails held requests at once, and later ones, when the connection closes for good (${how})`, async () => {
      const { nc, requests } = setUp(60_000);
      await nc.emit("disconnect");
      const held = requests.request("a", bytes("1"));
      await turn();
      assert.equal(nc.published.length, 0);
      const outcome = settled(held, 500);
      if (how === "its close event") await nc.emit("close");
      else await nc.end();
      assert.ok(
        isRejection(await outcome, ConnectionClosedError),
        `failed with the closed connection at once, not after the 60 s timeout (${String(await outcome)})`,
      );
      assert.equal(requests.size, 0);
      assert.equal(requests.held, 0);
      await assert.rejects(requests.request("b", bytes("2")), ConnectionClosedError);
      requests.close();
    });
  }

  it("rejects pending and later requests once closed", async () => {
    const { requests } = setUp();
    const pending = requests.request("a", bytes("1"));
    requests.close();
    await assert.rejects(pending, RequestsClosedError);
    await assert.rejects(requests.request("b", bytes("2")), RequestsClosedError);
  });
});
