// Opens connections to the server: each one h2c session with one streaming POST whose response stays open.
import http2 from "node:http2";
let port;
const cfg = JSON.parse(process.env.H2CLIENT || "{}");
const sessions = [];
const auth = "Bearer " + "x".repeat(cfg.authBytes ?? 400);
const body = Buffer.alloc(cfg.bodyBytes ?? 60, 2);
import net from "node:net";
function openRaw() {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    s.on("error", reject);
    s.write(Buffer.alloc(600, 3));
    s.once("data", () => { sessions.push(s); resolve(); });
  });
}
function openNoStream() {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`http://127.0.0.1:${port}`, cfg.clientOptions ?? {});
    s.on("error", reject);
    s.once("remoteSettings", () => { sessions.push(s); setTimeout(resolve, 5); });
  });
}
function open() {
  if (cfg.raw) return openRaw();
  if (cfg.noStream) return openNoStream();
  return new Promise((resolve, reject) => {
    const s = http2.connect(`http://127.0.0.1:${port}`, cfg.clientOptions ?? {});
    s.on("error", reject);
    const req = s.request({ ":method": "POST", ":path": "/chat.v1.StreamService/Subscribe", "content-type": "application/grpc", te: "trailers", authorization: auth });
    req.on("error", reject);
    if (cfg.keepRequestOpen) req.write(body); else req.end(body);
    req.once("data", () => { sessions.push(s); resolve(); });
    req.on("data", () => {});
  });
}
async function openMany(n, conc = 64) {
  let next = 0, failed = 0;
  await Promise.all(Array.from({ length: conc }, async () => {
    while (next < n) { next++; try { await open(); } catch (e) { if (!failed) console.error("open failed:", e?.message); failed++; } }
  }));
  return failed;
}
process.on("message", async (msg) => {
  if (msg.cmd === "open") { port = msg.port;
    const t = Date.now();
    const failed = await openMany(msg.n);
    process.send({ opened: sessions.length, failed, ms: Date.now() - t });
  } else if (msg.cmd === "exit") process.exit(0);
});
