/**
 * send-cpu measures a running server's CPU per call, per thread (from
 * /proc/<pid>/task), for SendMessage ("send") or ListMessages of 50 ("list"),
 * called over gRPC by connect-node with `concurrency` calls in flight.
 *
 * Usage: node --import tsx bench/tools/send-cpu.ts <baseUrl> <server pid> <calls> <concurrency> [send|list]
 */
import { readFileSync, readdirSync } from "node:fs";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService } from "../../gen/chat/v1/auth_service_pb.js";
import { GroupService } from "../../gen/chat/v1/group_service_pb.js";
import { MessageService } from "../../gen/chat/v1/message_service_pb.js";
const [baseUrl, pid, nStr, concStr, mode = "send"] = process.argv.slice(2);
const n = Number(nStr), conc = Number(concStr);
let token = "";
const t = createGrpcTransport({ baseUrl: baseUrl!, interceptors: [(next) => (req) => { if (token) req.header.set("authorization", `Bearer ${token}`); return next(req); }] });
const auth = createClient(AuthService, t), groups = createClient(GroupService, t), messages = createClient(MessageService, t);
const r = await auth.register({ username: `u${Date.now() % 100000000}`, password: "correct horse battery" });
token = r.tokens!.accessToken;
const { group } = await groups.createGroup({ name: "g" });
function threads() {
  const out: Record<string, number> = {};
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    out[`${name}-${tid}`] =  (Number(f[11]) + Number(f[12])) * 10;
  }
  return out;
}
// warm up
for (let i = 0; i < 500; i++) await messages.sendMessage({ groupId: group!.groupId, text: "w".repeat(100), clientMessageId: `w${i}` });
const before = threads(); const t0 = performance.now();
let next = 0;
const call = (i: number) =>
  mode === "list" ? messages.listMessages({ groupId: group!.groupId, limit: 50 }) : messages.sendMessage({ groupId: group!.groupId, text: "x".repeat(100), clientMessageId: `c${i}` });
await Promise.all(Array.from({ length: conc }, async () => { while (next < n) { const i = next++; await call(i); } }));
const wall = performance.now() - t0; const after = threads();
let total = 0;
for (const k of Object.keys(after)) { const d = after[k]! - (before[k] ?? 0); total += d; if (d > 0) console.log(k.padEnd(20), `${d} ms`, `${((d * 1000) / n).toFixed(0)} µs/call`); }
console.log(`total ${total} ms cpu, ${((total * 1000) / n).toFixed(0)} µs/call; ${(n / (wall / 1000)).toFixed(0)} calls/s`);
