/**
 * jetstream-cost: nats-server CPU per message on an R3 timeline-like stream
 * of a private 3-node cluster (test/support/private-nats-cluster.ts), by what
 * is added: the publish alone (slot subjects, expected 0, a msg id, four
 * headers, 300 bytes, with full republish), a republish subscriber, a durable
 * R3 pull consumer acking each message (the persister's shape), and the same
 * consumer with AckAll every 100 instead, and an R1 consumer instead. 4,000 messages per phase at 500/s,
 * open loop; CPU read from /proc for the three nats-server PIDs.
 *
 *   node --import tsx bench/tools/jetstream-cost.ts
 *
 * With `--sweep` it measures instead how the publish alone costs by rate and
 * storage: file and memory storage at 500/s and 1,500/s, and 100 messages/s
 * of five events' payload each (what batching five sends per message would
 * publish for 500 sends/s), and 500/s sent in bursts (what a publish linger
 * of 4, 10 or 20 ms in the sequencer would send: each event still its own
 * message).
 *
 * With `--rounds` it separates what an R3 publish costs per raft round from
 * what it costs per event: the three servers' CPU idle (20 s, the stream
 * made), then 500 events/s arriving one at a time, in bursts of 5 every
 * 10 ms (the sequencer's 10 ms linger) and in bursts of 50 every 100 ms, and
 * 1,500/s in bursts of 15 every 10 ms. Events that reach the leader together
 * are replicated in one round, so the rounds per second, not the events, set
 * most of the cost; a longer linger buys fewer rounds with send latency.
 *
 * With `--consumer` it measures what the persister's durable consumer adds to
 * publishes made as the sequencer makes them with its 10 ms linger (bursts of
 * 5 every 10 ms, 500/s), by how it pulls and acks: the publish alone; an R3
 * consumer read with consume() and each event acked as its group's write ends
 * (the persister before issue 13.4's third session: deliveries as they come,
 * acks spread over the write); the same with a whole 200 ms batch's acks sent
 * in one turn; a pull of everything pending every 200 ms (`no_wait`) with the
 * batch's acks in one turn; and that pull on an R1 consumer.
 */
import { connect, headers } from "@nats-io/transport-node";
import { jetstreamManager, AckPolicy, DeliverPolicy, StorageType } from "@nats-io/jetstream";
import { readFileSync } from "node:fs";
import { PrivateNatsCluster } from "../../test/support/private-nats-cluster.js";
function cpuOf(pid: number): number { const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" "); return (Number(f[11]) + Number(f[12])) / 100; }
const cluster = await PrivateNatsCluster.start();
const pids = [0, 1, 2].map((i) => cluster.pid(i)!);
const nc = await connect({ servers: cluster.urls.split(",") });
const jsm = await jetstreamManager(nc);
await jsm.streams.add({ name: "T", subjects: ["t.>"], num_replicas: 3, republish: { src: "t.>", dest: "r.>", headers_only: false }, allow_direct: true, duplicate_window: 120e9 });
async function phase(label: string, prefix: string, { subject = "t", RATE = 500, N = 4000, eventsPerMessage = 1, burst = 1 } = {}) {
  const before = pids.map(cpuOf);
  const t0 = Date.now();
  let inflight: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) {
    const h = headers(); h.set("Nats-Msg-Id", `${prefix}${i}`); h.set("Nats-Expected-Last-Subject-Sequence", "0");
    for (const k of ["Chat-Seq", "Chat-Prev", "Chat-Type", "Chat-Change"]) h.set(k, "12345");
    inflight.push(nc.request(`${subject}.${prefix}.g${i % 100}.${i}`, new TextEncoder().encode("x".repeat(300 * eventsPerMessage)), { headers: h, timeout: 10000 }));
    if ((i + 1) % burst !== 0) continue;
    const due = t0 + ((i + 1) * 1000) / RATE; const w = due - Date.now(); if (w > 0) await new Promise((r) => setTimeout(r, w));
  }
  await Promise.all(inflight);
  await new Promise((r) => setTimeout(r, 1500));
  const after = pids.map(cpuOf);
  const cpu = after.reduce((s, a, i) => s + a - before[i]!, 0);
  console.log(label, "nats CPU µs/msg", Math.round((cpu * 1e6) / N), eventsPerMessage > 1 ? `(µs/event ${Math.round((cpu * 1e6) / N / eventsPerMessage)})` : "");
}
if (process.argv.includes("--consumer")) {
  const sub = nc.subscribe("r.>", { callback: () => {} });
  const opts = { burst: 5, N: 5000 };
  await phase("publish alone (bursts of 5 every 10 ms):", "k0", opts);
  const spread = (acks: (() => void)[]) => { let i = 0; const step = () => { for (let k = 0; k < 8 && i < acks.length; k++, i++) acks[i]!(); if (i < acks.length) setTimeout(step, 1); }; step(); };
  // consume(): deliveries as they come; every 200 ms the batch is acked, spread (as group writes end) or at once.
  for (const [label, at] of [["R3, consume(), acks spread over the write:", "spread"], ["R3, consume(), a batch's acks in one turn:", "once"]] as const) {
    const durable = `c${at}`;
    await jsm.consumers.add("T", { durable_name: durable, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, filter_subject: "t.>", max_ack_pending: 20000 });
    const c = await jsm.jetstream().consumers.get("T", durable);
    const msgs = await c.consume({ max_messages: 512 });
    let pending: (() => void)[] = [];
    const t = setInterval(() => { const acks = pending; pending = []; if (at === "once") for (const a of acks) a(); else spread(acks); }, 200);
    (async () => { for await (const m of msgs) pending.push(() => m.ack()); })();
    await phase(label, `k${at}`, opts);
    clearInterval(t); await msgs.close(); await jsm.consumers.delete("T", durable);
  }
  // A pull of everything pending every 200 ms (no_wait), its acks in one turn once it ended.
  for (const [label, replicas] of [["R3, no_wait pull every 200 ms, acks in one turn:", 3], ["R1, no_wait pull every 200 ms, acks in one turn:", 1]] as const) {
    const durable = `p${replicas}`;
    await jsm.consumers.add("T", { durable_name: durable, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, filter_subject: "t.>", max_ack_pending: 20000, num_replicas: replicas });
    const inbox = `_PULL.${durable}`;
    let got: string[] = [];
    const psub = nc.subscribe(inbox, { callback: (_e, m) => { if (m.reply) got.push(m.reply); else ackAll(); } });
    const ackAll = () => { const acks = got; got = []; for (const r of acks) nc.publish(r, "+ACK"); };
    const t = setInterval(() => { ackAll(); nc.publish(`$JS.API.CONSUMER.MSG.NEXT.T.${durable}`, JSON.stringify({ batch: 2048, no_wait: true }), { reply: inbox }); }, 200);
    await phase(label, `kp${replicas}`, opts);
    clearInterval(t); psub.unsubscribe(); await jsm.consumers.delete("T", durable);
  }
  sub.unsubscribe();
  await nc.close(); await cluster.dispose();
  process.exit(0);
}
if (process.argv.includes("--rounds")) {
  await new Promise((r) => setTimeout(r, 3000));
  const before = pids.map(cpuOf);
  await new Promise((r) => setTimeout(r, 20_000));
  const idle = pids.map(cpuOf).reduce((s, a, i) => s + a - before[i]!, 0) / 20;
  console.log("idle: nats CPU", idle.toFixed(4), "cores (three servers, the stream made, nothing published)");
  await phase("500/s, one at a time (500 rounds/s at most):", "r1", { N: 5000 });
  await phase("500/s, bursts of 5 every 10 ms (~100 rounds/s):", "r2", { N: 5000, burst: 5 });
  await phase("500/s, bursts of 50 every 100 ms (~10 rounds/s):", "r3", { N: 5000, burst: 50 });
  await phase("1,500/s, bursts of 15 every 10 ms (~100 rounds/s):", "r4", { RATE: 1500, N: 15000, burst: 15 });
  await nc.close(); await cluster.dispose();
  process.exit(0);
}
if (process.argv.includes("--sweep")) {
  await jsm.streams.add({ name: "M", subjects: ["m.>"], storage: StorageType.Memory, num_replicas: 3, republish: { src: "m.>", dest: "q.>", headers_only: false }, allow_direct: true, duplicate_window: 120e9 });
  await phase("file storage, 500/s:", "s1");
  await phase("memory storage, 500/s:", "s2", { subject: "m" });
  await phase("file storage, 1,500/s:", "s3", { RATE: 1500, N: 9000 });
  await phase("memory storage, 1,500/s:", "s4", { subject: "m", RATE: 1500, N: 9000 });
  await phase("file storage, 100/s of 5 events each:", "s5", { RATE: 100, N: 1000, eventsPerMessage: 5 });
  await phase("file storage, 500/s in bursts of 2 every 4 ms:", "s6", { burst: 2 });
  await phase("file storage, 500/s in bursts of 5 every 10 ms:", "s7", { burst: 5 });
  await phase("file storage, 500/s in bursts of 10 every 20 ms:", "s8", { burst: 10 });
  await nc.close(); await cluster.dispose();
  process.exit(0);
}
await phase("publish only (R3, republish, nobody listening):", "a");
const sub = nc.subscribe("r.>", { callback: () => {} });
await phase("+ a republish subscriber:", "b");
await jsm.consumers.add("T", { durable_name: "p", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, filter_subject: "t.>", max_ack_pending: 20000 });
const c = await jsm.jetstream().consumers.get("T", "p");
const msgs = await c.consume({ max_messages: 512 });
(async () => { for await (const m of msgs) m.ack(); })();
await phase("+ durable R3 consumer, ack each:", "c");
await msgs.close();
await jsm.consumers.delete("T", "p");
await jsm.consumers.add("T", { durable_name: "q", ack_policy: AckPolicy.All, deliver_policy: DeliverPolicy.New, filter_subject: "t.>", max_ack_pending: 20000 });
const c2 = await jsm.jetstream().consumers.get("T", "q");
const msgs2 = await c2.consume({ max_messages: 512 });
let n = 0; (async () => { for await (const m of msgs2) { if (++n % 100 === 0) m.ack(); } })();
await phase("+ durable R3 consumer, AckAll every 100 (instead):", "d");
await msgs2.close();
await jsm.consumers.delete("T", "q");
await jsm.consumers.add("T", { durable_name: "r", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, filter_subject: "t.>", max_ack_pending: 20000, num_replicas: 1 });
const c3 = await jsm.jetstream().consumers.get("T", "r");
const msgs3 = await c3.consume({ max_messages: 512 });
(async () => { for await (const m of msgs3) m.ack(); })();
await phase("+ durable R1 consumer, ack each (instead):", "e");
await msgs3.close();
sub.unsubscribe();
await nc.close(); await cluster.dispose();
