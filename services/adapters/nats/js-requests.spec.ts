import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setImmediate as turn } from "node:timers/promises";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { JsRequests, RequestInterruptedError, RequestTimeoutError, RequestsClosedError } from "./js-requests.js";

/** FakeConnection records publishes, lets the test answer them on the one inbox subscription and emit status events. */
class FakeConnection {
  readonly published: { subject: string; reply: string; data: string }[] = [];
  private readonly statuses: { type: string }[] = [];
  private wakeStatus: (() => void) | undefined;
  private callback: ((err: Error | null, m: Msg) => void) | undefined;
  subscriptions = 0;
  throwOnPublish = false;

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
        while (!stopped) {
          const next = self.statuses.shift();
          if (next) yield next;
          else await new Promise<void>((resolve) => (self.wakeStatus = resolve));
        }
      },
    };
  }

  /** emit hands a status event to the status iterator and lets it run. */
  async emit(type: "disconnect" | "reconnect"): Promise<void> {
    this.statuses.push({ type });
    this.wakeStatus?.();
    await turn();
  }

  answer(reply: string, text: string): void {
    this.callback?.(null, { subject: reply, data: new TextEncoder().encode(text) } as unknown as Msg);
  }
}

function setUp(timeoutMs = 1000) {
  const nc = new FakeConnection();
  return { nc, requests: new JsRequests(nc as unknown as NatsConnection, timeoutMs) };
}

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (m: Msg) => new TextDecoder().decode(m.data);

describe("JsRequests", () => {
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

  it("rejects pending and later requests once closed", async () => {
    const { requests } = setUp();
    const pending = requests.request("a", bytes("1"));
    requests.close();
    await assert.rejects(pending, RequestsClosedError);
    await assert.rejects(requests.request("b", bytes("2")), RequestsClosedError);
  });
});
