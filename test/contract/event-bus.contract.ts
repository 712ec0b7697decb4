/**
 * Contract suite for the EventBus port (services/core/ports.ts). Every
 * EventBus adapter (memory, NATS JetStream, ...) runs it; it tests only what
 * the port's doc comments promise.
 *
 * The suite may run against a shared, long-lived server: every test uses
 * fresh group and user ids (newId()) and never assumes it is alone.
 *
 * Delivery is at-least-once, so checks drop repeated seqs the way a real
 * subscriber must (see `firstSeen`) before they compare. Waiting is tolerant:
 * `waitFor` polls until a condition holds or a timeout passes. "Not delivered"
 * is asserted after a later marker event has arrived and a further quiet
 * period has passed.
 */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, afterEach, before, describe, it } from "node:test";
import { newId } from "../../services/core/ids.js";
import type { EventBody, GroupEvent, UserRef } from "../../services/core/model.js";
import type { EventBus, Subscription, UserNotice } from "../../services/core/ports.js";

/** EventBusContractOptions tunes eventBusContract for one adapter. */
export interface EventBusContractOptions {
  /** Skip the whole suite (e.g. when the adapter's server is not configured). */
  readonly skip?: boolean;
  /**
   * makePair returns two buses that reach each other: what one publishes,
   * the other's subscribers receive (two processes' connections to one
   * server). Defaults to calling `make` twice, which is right for networked
   * adapters; an in-process adapter passes one instance twice.
   */
  readonly makePair?: () => Promise<[EventBus, EventBus]>;
  /** cleanup runs once after the suite has closed every bus it made (delete streams, close clients). */
  readonly cleanup?: () => Promise<void>;
  /** quietMs is how long "not delivered" checks wait after a marker arrived; default 200. */
  readonly quietMs?: number;
  /** timeoutMs bounds every wait for a delivery; default 5000. */
  readonly timeoutMs?: number;
}

/** Recorder collects what a handler receives. */
class Recorder<T> {
  readonly values: T[] = [];
  readonly handler = (value: T): void => {
    this.values.push(value);
  };
}

/** firstSeen drops every event whose seq is not above all earlier ones (what a subscriber does with repeats) and returns the rest. */
function firstSeen(events: readonly GroupEvent[]): GroupEvent[] {
  let last = 0;
  const kept: GroupEvent[] = [];
  for (const e of events) {
    if (e.seq > last) {
      kept.push(e);
      last = e.seq;
    }
  }
  return kept;
}

/** distinctSeqs counts the different seqs among events. */
function distinctSeqs(events: readonly GroupEvent[]): number {
  return new Set(events.map((e) => e.seq)).size;
}

/** bySeq returns one event per seq, ascending (for checks that do not care about order). */
function bySeq(events: readonly GroupEvent[]): GroupEvent[] {
  const map = new Map<number, GroupEvent>();
  for (const e of events) if (!map.has(e.seq)) map.set(e.seq, e);
  return [...map.values()].sort((x, y) => x.seq - y.seq);
}

/** distinctNotices returns the notices without repeats, sorted (notices carry no seq; order is not promised). */
function distinctNotices(notices: readonly UserNotice[]): UserNotice[] {
  const map = new Map<string, UserNotice>();
  for (const n of notices) map.set(JSON.stringify(n), n);
  return [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, n]) => n);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

function userRef(): UserRef {
  const id = newId();
  return { id, username: `u-${id}` };
}

const ACTOR = userRef();

/** event builds a group event; the default body is a message. */
function event(groupId: string, seq: number, body?: EventBody): GroupEvent {
  return {
    groupId,
    seq,
    at: 1_700_000_000_000 + seq,
    actor: ACTOR,
    body: body ?? {
      type: "message",
      message: {
        id: newId(),
        groupId,
        seq,
        sender: ACTOR,
        text: `message ${seq}`,
        sentAt: 1_700_000_000_000 + seq,
        clientMessageId: newId(),
      },
    },
  };
}

/**
 * eventBusContract registers the EventBus contract tests for one adapter.
 * `make` opens a bus on the adapter's shared server (for an in-process
 * adapter: a new, unconnected instance); the suite closes every bus it made,
 * then calls `opts.cleanup`.
 */
export function eventBusContract(name: string, make: () => Promise<EventBus>, opts: EventBusContractOptions = {}): void {
  const quietMs = opts.quietMs ?? 200;
  const timeoutMs = opts.timeoutMs ?? 5000;

  describe(`EventBus contract: ${name}`, { skip: opts.skip ?? false }, () => {
    const opened = new Set<EventBus>();
    const closed = new Set<EventBus>();
    let subscriptions: Subscription[] = [];
    /** a and b reach each other (possibly the same instance). */
    let a: EventBus;
    let b: EventBus;

    async function open(): Promise<EventBus> {
      const bus = await make();
      opened.add(bus);
      return bus;
    }

    async function waitFor(what: string, condition: () => boolean): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!condition()) {
        if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await sleep(5);
      }
    }

    /** quiet gives stray deliveries time to arrive before a "not delivered" check. */
    const quiet = () => sleep(quietMs);

    async function onGroup(bus: EventBus, groupId: string, handler?: (e: GroupEvent) => void): Promise<Recorder<GroupEvent>> {
      const rec = new Recorder<GroupEvent>();
      const h = handler ?? rec.handler;
      subscriptions.push(await bus.subscribeGroup(groupId, h));
      return rec;
    }

    async function onUser(bus: EventBus, userId: string): Promise<Recorder<UserNotice>> {
      const rec = new Recorder<UserNotice>();
      subscriptions.push(await bus.subscribeUser(userId, rec.handler));
      return rec;
    }

    before(async () => {
      const pair: [EventBus, EventBus] = opts.makePair ? await opts.makePair() : [await make(), await make()];
      [a, b] = pair;
      opened.add(a);
      opened.add(b);
    });

    afterEach(() => {
      for (const s of subscriptions) s.unsubscribe();
      subscriptions = [];
    });

    after(async () => {
      for (const bus of opened) if (!closed.has(bus)) await bus.close();
      await opts.cleanup?.();
    });

    describe("group events", () => {
      it("delivers events published after subscribeGroup resolves to every subscriber, on either bus", async () => {
        const g = newId();
        const recs = [await onGroup(a, g), await onGroup(a, g), await onGroup(b, g)];
        const published = [event(g, 1), event(g, 2)];
        await a.publishEvent(published[0] as GroupEvent);
        await b.publishEvent(published[1] as GroupEvent);
        for (const [i, rec] of recs.entries()) {
          await waitFor(`both events at subscriber ${i}`, () => distinctSeqs(rec.values) === 2);
          assert.deepEqual(bySeq(rec.values), published);
        }
      });

      it("delivers every kind of event body intact", async () => {
        const g = newId();
        const member = userRef();
        const published = [
          event(g, 1),
          event(g, 2, { type: "member_added", member, role: "admin" }),
          event(g, 3, { type: "member_role_changed", member, role: "owner" }),
          event(g, 4, { type: "member_removed", member }),
          event(g, 5, { type: "group_renamed", name: "Ünïcödé ✓ \"quoted\" \n new line" }),
        ];
        const rec = await onGroup(b, g);
        for (const e of published) await a.publishEvent(e);
        await waitFor("all five events", () => distinctSeqs(rec.values) === published.length);
        assert.deepEqual(bySeq(rec.values), published);
      });

      it("does not deliver other groups' events", async () => {
        const g1 = newId();
        const g2 = newId();
        const rec1 = await onGroup(b, g1);
        const rec2 = await onGroup(b, g2);
        for (const seq of [1, 2, 3]) await a.publishEvent(event(g2, seq));
        const marker = event(g1, 1);
        await a.publishEvent(marker);
        await waitFor("the marker on g1", () => rec1.values.length > 0);
        await waitFor("g2's events", () => distinctSeqs(rec2.values) === 3);
        await quiet();
        assert.deepEqual(bySeq(rec1.values), [marker]);
        assert.ok(
          rec2.values.every((e) => e.groupId === g2),
          "g2's subscriber got only g2's events",
        );
      });

      it("delivers a burst of 500 events of one group in publish order", async () => {
        const g = newId();
        const near = await onGroup(a, g);
        const far = await onGroup(b, g);
        for (const seq of range(1, 500)) await a.publishEvent(event(g, seq));
        for (const [label, rec] of [
          ["publisher's bus", near],
          ["other bus", far],
        ] as const) {
          await waitFor(`500 events on the ${label}`, () => distinctSeqs(rec.values) === 500);
          assert.deepEqual(
            firstSeen(rec.values).map((e) => e.seq),
            range(1, 500),
            `order on the ${label}`,
          );
        }
      });

      it("keeps publish order for every subscriber when a handler publishes", async () => {
        const g = newId();
        const errors: unknown[] = [];
        const publisher = new Recorder<GroupEvent>();
        await onGroup(a, g, (e) => {
          publisher.handler(e);
          if (e.seq === 1) a.publishEvent(event(g, 2)).catch((err: unknown) => errors.push(err));
        });
        const other = await onGroup(b, g);
        await a.publishEvent(event(g, 1));
        await waitFor("both events", () => distinctSeqs(other.values) === 2 && distinctSeqs(publisher.values) === 2);
        assert.deepEqual(errors, []);
        assert.deepEqual(
          firstSeen(other.values).map((e) => e.seq),
          [1, 2],
        );
        assert.deepEqual(
          firstSeen(publisher.values).map((e) => e.seq),
          [1, 2],
        );
      });

      it("stops delivery on unsubscribe, leaves other subscriptions alone, and is idempotent", async () => {
        const g = newId();
        const stopped = new Recorder<GroupEvent>();
        const stoppedSub = await b.subscribeGroup(g, stopped.handler);
        subscriptions.push(stoppedSub);
        const kept = await onGroup(b, g);
        await a.publishEvent(event(g, 1));
        await waitFor("seq 1 at both", () => stopped.values.length > 0 && kept.values.length > 0);

        stoppedSub.unsubscribe();
        stoppedSub.unsubscribe();
        await a.publishEvent(event(g, 2));
        await waitFor("seq 2 at the kept subscriber", () => distinctSeqs(kept.values) === 2);
        await quiet();
        assert.deepEqual(
          bySeq(stopped.values).map((e) => e.seq),
          [1],
        );

        // The group can be subscribed again after its subscriptions ended.
        for (const s of subscriptions) s.unsubscribe();
        const again = await onGroup(b, g);
        await a.publishEvent(event(g, 3));
        await waitFor("seq 3 after subscribing again", () => again.values.length > 0);
        assert.deepEqual(
          bySeq(again.values).map((e) => e.seq),
          [3],
        );
      });

      it("starts no handler call after unsubscribe returns, even for events already in flight", async () => {
        const g = newId();
        let late = 0;
        let unsubscribed = false;
        let selfCalls = 0;
        let victim: Subscription | undefined;
        let self: Subscription | undefined;
        // Subscribed first, so an in-process bus calls it before the victim for the same event.
        await onGroup(b, g, () => {
          if (!unsubscribed && victim) {
            victim.unsubscribe();
            unsubscribed = true;
          }
        });
        victim = await b.subscribeGroup(g, () => {
          if (unsubscribed) late++;
        });
        subscriptions.push(victim);
        self = await b.subscribeGroup(g, () => {
          selfCalls++;
          self?.unsubscribe();
        });
        subscriptions.push(self);
        const marker = await onGroup(b, g);
        for (const seq of range(1, 20)) await a.publishEvent(event(g, seq));
        await waitFor("all 20 events at the marker subscriber", () => distinctSeqs(marker.values) === 20);
        await quiet();
        assert.equal(late, 0, "handler calls after unsubscribe returned");
        assert.equal(selfCalls, 1, "a handler that unsubscribes itself is not called again");
      });

      it("keeps delivering to other subscribers when a handler throws", async () => {
        const g = newId();
        const u = newId();
        let thrown = 0;
        const boom = () => {
          thrown++;
          throw new Error("handler failure (expected by the test)");
        };
        subscriptions.push(await a.subscribeGroup(g, boom), await b.subscribeGroup(g, boom));
        subscriptions.push(await a.subscribeUser(u, boom), await b.subscribeUser(u, boom));
        const groupRecs = [await onGroup(a, g), await onGroup(b, g)];
        const userRecs = [await onUser(a, u), await onUser(b, u)];
        for (const seq of [1, 2, 3]) await a.publishEvent(event(g, seq));
        const notices: UserNotice[] = [
          { type: "session_revoked", sessionId: newId() },
          { type: "session_revoked", sessionId: newId() },
        ];
        for (const n of notices) await a.publishUser(u, n);
        for (const rec of groupRecs) {
          await waitFor("three events despite the throwing handler", () => distinctSeqs(rec.values) === 3);
          assert.deepEqual(
            firstSeen(rec.values).map((e) => e.seq),
            [1, 2, 3],
          );
        }
        for (const rec of userRecs) {
          await waitFor("two notices despite the throwing handler", () => distinctNotices(rec.values).length === 2);
          assert.deepEqual(distinctNotices(rec.values), distinctNotices(notices));
        }
        assert.ok(thrown > 0, "the throwing handlers were called");
      });
    });

    describe("user notices", () => {
      it("delivers notices to every subscriber of that user and to no other user", async () => {
        const u1 = newId();
        const u2 = newId();
        const recs1 = [await onUser(a, u1), await onUser(b, u1)];
        const rec2 = await onUser(b, u2);
        const forU1: UserNotice[] = [
          { type: "joined", groupId: newId(), seq: 7 },
          { type: "session_revoked", sessionId: newId() },
        ];
        const forU2: UserNotice = { type: "joined", groupId: newId(), seq: 1 };
        for (const n of forU1) await a.publishUser(u1, n);
        await a.publishUser(u2, forU2);
        for (const rec of recs1) await waitFor("u1's two notices", () => distinctNotices(rec.values).length === 2);
        await waitFor("u2's notice", () => rec2.values.length > 0);
        await quiet();
        for (const rec of recs1) assert.deepEqual(distinctNotices(rec.values), distinctNotices(forU1));
        assert.deepEqual(distinctNotices(rec2.values), [forU2]);
      });

      it("stops notices on unsubscribe (idempotent) and keeps the user's other subscriptions", async () => {
        const u = newId();
        const stopped = new Recorder<UserNotice>();
        const stoppedSub = await b.subscribeUser(u, stopped.handler);
        subscriptions.push(stoppedSub);
        const kept = await onUser(a, u);
        stoppedSub.unsubscribe();
        stoppedSub.unsubscribe();
        const notice: UserNotice = { type: "session_revoked", sessionId: newId() };
        await a.publishUser(u, notice);
        await waitFor("the notice at the kept subscriber", () => kept.values.length > 0);
        await quiet();
        assert.deepEqual(stopped.values, []);
        assert.deepEqual(distinctNotices(kept.values), [notice]);
      });

      it("keeps user notices and group events apart, even for one id", async () => {
        const id = newId();
        const groupRec = await onGroup(b, id);
        const userRec = await onUser(b, id);
        const notice: UserNotice = { type: "joined", groupId: id, seq: 1 };
        const e = event(id, 1);
        await a.publishUser(id, notice);
        await a.publishEvent(e);
        await waitFor("the event and the notice", () => groupRec.values.length > 0 && userRec.values.length > 0);
        await quiet();
        assert.deepEqual(bySeq(groupRec.values), [e]);
        assert.deepEqual(distinctNotices(userRec.values), [notice]);
      });
    });

    describe("close", () => {
      it("ends all of the bus's subscriptions", async () => {
        const x = await open();
        const g = newId();
        const u = newId();
        const groupRec = new Recorder<GroupEvent>();
        const userRec = new Recorder<UserNotice>();
        await x.subscribeGroup(g, groupRec.handler);
        await x.subscribeUser(u, userRec.handler);
        const first: UserNotice = { type: "joined", groupId: g, seq: 1 };
        await x.publishEvent(event(g, 1));
        await x.publishUser(u, first);
        await waitFor("delivery before close", () => groupRec.values.length > 0 && userRec.values.length > 0);

        await x.close();
        closed.add(x);
        // Publishing on a closed bus may fail; either way nothing may reach x's handlers.
        await x.publishEvent(event(g, 2)).catch(() => {});
        await x.publishUser(u, { type: "session_revoked", sessionId: newId() }).catch(() => {});
        const markerGroup = await onGroup(b, g);
        const markerUser = await onUser(b, u);
        await a.publishEvent(event(g, 3));
        await a.publishUser(u, { type: "session_revoked", sessionId: newId() });
        await waitFor("the markers on a live bus", () => markerGroup.values.length > 0 && markerUser.values.length > 0);
        await quiet();
        assert.deepEqual(
          bySeq(groupRec.values).map((e) => e.seq),
          [1],
        );
        assert.deepEqual(distinctNotices(userRec.values), [first]);
      });
    });
  });
}
