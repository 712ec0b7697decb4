import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { HealthRegistry, MAX_SERVICE_NAME_BYTES, ServingStatus, healthRoutes } from "./health.js";

function setup(registry = new HealthRegistry()): { registry: HealthRegistry; client: Client<typeof Health> } {
  const transport = createRouterTransport((router) => healthRoutes(router, registry));
  return { registry, client: createClient(Health, transport) };
}

/** Waits (bounded) until cond() holds. */
async function eventually(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await sleep(5);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** Opens Watch and returns a next() that fails if no message comes within 2 s. */
function openWatch(client: Client<typeof Health>, service: string) {
  const abort = new AbortController();
  const it = client.watch({ service }, { signal: abort.signal })[Symbol.asyncIterator]();
  return {
    abort,
    async next(): Promise<ServingStatus | "end"> {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("no Watch message within 2 s")), 2000);
      });
      try {
        const r = await Promise.race([it.next(), timeout]);
        return r.done ? "end" : r.value.status;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

describe("HealthRegistry", () => {
  it("knows only the overall status at first, SERVING by default", () => {
    const r = new HealthRegistry();
    assert.deepEqual([...r.list()], [["", ServingStatus.SERVING]]);
    assert.equal(r.getStatus("chat.v1.MessageService"), undefined);
  });

  it("takes initial statuses, including the overall one", () => {
    const r = new HealthRegistry({ "": ServingStatus.NOT_SERVING, "chat.v1.AuthService": ServingStatus.SERVING });
    assert.equal(r.getStatus(""), ServingStatus.NOT_SERVING);
    assert.equal(r.getStatus("chat.v1.AuthService"), ServingStatus.SERVING);
  });

  it("rejects SERVICE_UNKNOWN as a stored status", () => {
    assert.throws(() => new HealthRegistry().setStatus("x", ServingStatus.SERVICE_UNKNOWN), RangeError);
  });

  it("coalesces changes for a slow watcher to the latest, without repeating the last one seen", async () => {
    const r = new HealthRegistry();
    const abort = new AbortController();
    const w = r.watch("", abort.signal);
    assert.deepEqual(await w.next(), { done: false, value: ServingStatus.SERVING });
    r.setStatus("", ServingStatus.NOT_SERVING);
    r.setStatus("", ServingStatus.SERVING);
    r.setStatus("", ServingStatus.NOT_SERVING);
    assert.deepEqual(await w.next(), { done: false, value: ServingStatus.NOT_SERVING });
    r.setStatus("", ServingStatus.SERVING);
    r.setStatus("", ServingStatus.NOT_SERVING); // back to what it saw: nothing to send
    const pending = w.next();
    r.setStatus("", ServingStatus.SERVING);
    assert.deepEqual(await pending, { done: false, value: ServingStatus.SERVING });
    assert.equal(r.watcherCount, 1);
    abort.abort();
    assert.equal(r.watcherCount, 0, "abort deregisters at once");
    assert.deepEqual(await w.next(), { done: true, value: undefined });
  });

  it("resume() undoes shutdown() and makes every known service SERVING", () => {
    const r = new HealthRegistry({ a: ServingStatus.NOT_SERVING });
    r.shutdown();
    assert.equal(r.isShutDown, true);
    assert.equal(r.setStatus("a", ServingStatus.SERVING), false);
    r.resume();
    assert.equal(r.getStatus("a"), ServingStatus.SERVING);
    assert.equal(r.getStatus(""), ServingStatus.SERVING);
    assert.equal(r.setStatus("a", ServingStatus.NOT_SERVING), true);
  });
});

describe("grpc.health.v1.Health (in process)", () => {
  it("Check returns the overall status for the empty service name", async () => {
    const { client } = setup();
    const res = await client.check({ service: "" });
    assert.equal(res.status, ServingStatus.SERVING);
  });

  it("Check returns the status set for a service", async () => {
    const { registry, client } = setup();
    registry.setStatus("chat.v1.MessageService", ServingStatus.NOT_SERVING);
    assert.equal((await client.check({ service: "chat.v1.MessageService" })).status, ServingStatus.NOT_SERVING);
    registry.setStatus("chat.v1.MessageService", ServingStatus.SERVING);
    assert.equal((await client.check({ service: "chat.v1.MessageService" })).status, ServingStatus.SERVING);
  });

  it("Check fails with NOT_FOUND for an unknown service", async () => {
    const { client } = setup();
    await assert.rejects(client.check({ service: "no.such.Service" }), (e: unknown) => {
      assert.equal(ConnectError.from(e).code, Code.NotFound);
      return true;
    });
  });

  it("Check and Watch refuse a service name over 256 UTF-8 bytes with INVALID_ARGUMENT, before any watcher exists", async () => {
    const { registry, client } = setup();
    const long = "s".repeat(MAX_SERVICE_NAME_BYTES + 1);
    const wide = "é".repeat(129); // 258 bytes in 129 UTF-16 units
    for (const name of [long, wide]) {
      await assert.rejects(client.check({ service: name }), (e: unknown) => {
        assert.ok(e instanceof ConnectError);
        assert.equal(e.code, Code.InvalidArgument);
        assert.match(e.rawMessage, /service name is \d+ bytes; at most 256/);
        return true;
      });
      await assert.rejects(
        (async () => {
          for await (const _ of client.watch({ service: name })) assert.fail("no status for a name over the cap");
        })(),
        (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument,
      );
    }
    assert.equal(registry.watcherCount, 0);
    // At the cap, the name is served (unknown: NOT_FOUND).
    await assert.rejects(client.check({ service: "s".repeat(MAX_SERVICE_NAME_BYTES) }), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
  });

  it("Check fails with NOT_FOUND after clearStatus", async () => {
    const { registry, client } = setup();
    registry.setStatus("a", ServingStatus.SERVING);
    assert.equal(registry.clearStatus("a"), true);
    await assert.rejects(client.check({ service: "a" }), (e: unknown) => ConnectError.from(e).code === Code.NotFound);
  });

  it("List returns every known service", async () => {
    const { registry, client } = setup();
    registry.setStatus("chat.v1.AuthService", ServingStatus.SERVING);
    registry.setStatus("chat.v1.StreamService", ServingStatus.NOT_SERVING);
    const res = await client.list({});
    const got = Object.fromEntries(Object.entries(res.statuses).map(([k, v]) => [k, v.status]));
    assert.deepEqual(got, {
      "": ServingStatus.SERVING,
      "chat.v1.AuthService": ServingStatus.SERVING,
      "chat.v1.StreamService": ServingStatus.NOT_SERVING,
    });
  });

  it("Watch sends the current status at once and then each change", async () => {
    const { registry, client } = setup();
    registry.setStatus("chat.v1.GroupService", ServingStatus.SERVING);
    const w = openWatch(client, "chat.v1.GroupService");
    assert.equal(await w.next(), ServingStatus.SERVING);
    registry.setStatus("chat.v1.GroupService", ServingStatus.NOT_SERVING);
    assert.equal(await w.next(), ServingStatus.NOT_SERVING);
    registry.setStatus("chat.v1.GroupService", ServingStatus.SERVING);
    assert.equal(await w.next(), ServingStatus.SERVING);
    w.abort.abort();
    await eventually(() => registry.watcherCount === 0, "watcher to deregister");
  });

  it("Watch sends SERVICE_UNKNOWN for an unknown service, stays open, and reports it once known", async () => {
    const { registry, client } = setup();
    const w = openWatch(client, "chat.v1.NotYet");
    assert.equal(await w.next(), ServingStatus.SERVICE_UNKNOWN);
    registry.setStatus("chat.v1.NotYet", ServingStatus.SERVING);
    assert.equal(await w.next(), ServingStatus.SERVING);
    registry.clearStatus("chat.v1.NotYet");
    assert.equal(await w.next(), ServingStatus.SERVICE_UNKNOWN);
    w.abort.abort();
    await eventually(() => registry.watcherCount === 0, "watcher to deregister");
  });

  it("Watch ends on the server when the client cancels", async () => {
    const { registry, client } = setup();
    const watches = [openWatch(client, ""), openWatch(client, ""), openWatch(client, "x")];
    for (const w of watches) await w.next();
    assert.equal(registry.watcherCount, 3);
    watches[0]?.abort.abort();
    await eventually(() => registry.watcherCount === 2, "one watcher to deregister");
    for (const w of watches) w.abort.abort();
    await eventually(() => registry.watcherCount === 0, "all watchers to deregister");
  });

  it("shutdown() makes Check answer NOT_SERVING, pushes NOT_SERVING to watchers and freezes statuses", async () => {
    const { registry, client } = setup();
    registry.setStatus("chat.v1.MessageService", ServingStatus.SERVING);
    const overall = openWatch(client, "");
    const msg = openWatch(client, "chat.v1.MessageService");
    assert.equal(await overall.next(), ServingStatus.SERVING);
    assert.equal(await msg.next(), ServingStatus.SERVING);

    registry.shutdown();
    assert.equal(await overall.next(), ServingStatus.NOT_SERVING);
    assert.equal(await msg.next(), ServingStatus.NOT_SERVING);
    assert.equal((await client.check({ service: "" })).status, ServingStatus.NOT_SERVING);
    assert.equal((await client.check({ service: "chat.v1.MessageService" })).status, ServingStatus.NOT_SERVING);

    assert.equal(registry.setStatus("", ServingStatus.SERVING), false, "ignored after shutdown");
    assert.equal((await client.check({ service: "" })).status, ServingStatus.NOT_SERVING);
    registry.shutdown(); // idempotent
    overall.abort.abort();
    msg.abort.abort();
    await eventually(() => registry.watcherCount === 0, "watchers to deregister");
  });

  it("close() ends open Watch streams with OK and later ones after their first message", async () => {
    const { registry, client } = setup();
    const w = openWatch(client, "");
    assert.equal(await w.next(), ServingStatus.SERVING);
    registry.shutdown();
    assert.equal(await w.next(), ServingStatus.NOT_SERVING);
    registry.close();
    assert.equal(await w.next(), "end");
    assert.equal(registry.watcherCount, 0);

    const late = openWatch(client, "");
    assert.equal(await late.next(), ServingStatus.NOT_SERVING);
    assert.equal(await late.next(), "end");
  });
});
