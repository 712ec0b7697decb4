// h2c server under test. Config from env H2CFG (JSON). Talks to the parent over IPC.
import http2 from "node:http2";
import net from "node:net";
import fs from "node:fs";
const cfg = JSON.parse(process.env.H2CFG || "{}");
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const serverOptions = cfg.serverOptions ?? { settings: { maxConcurrentStreams: 1000 } };
let streams = 0, sessions = 0;
const payload = Buffer.alloc(cfg.dataBytes ?? 32, 1);
const keep = []; // keep per-stream objects like the app would (closure)

function onStream(stream) {
  streams++;
  stream.on("error", () => {});
  stream.once("close", () => streams--);
  if (cfg.read === "pause") stream.pause();
  else if (cfg.read === "ignore") {} // no listener: paused mode, data buffered
  else stream.on("data", () => {}); // consume (default)
  stream.respond({ ":status": 200, "content-type": "application/grpc" });
  stream.write(payload);
}
function onRequest(req, res) {
  // compat API, like the real server: app state per stream roughly like FrameWriter + closures
  streams++;
  req.on("error", () => {}); res.on("error", () => {});
  res.stream.once("close", () => streams--);
  const chunks = [];
  if (cfg.read === "pause") req.pause();
  else req.on("data", (c) => chunks.push(c));
  const go = () => { res.writeHead(200, { "content-type": "application/grpc" }); res.stream.write(payload); };
  if (cfg.read === "pause") go(); else req.on("end", go);
}
const h2 = http2.createServer(serverOptions, cfg.api === "compat" ? onRequest : undefined);
if (cfg.api !== "compat") h2.on("stream", onStream);
h2.on("session", (s) => {
  sessions++;
  s.once("close", () => sessions--);
  s.on("error", () => {});
  if (cfg.sessionSetup) for (const [k, v] of Object.entries(cfg.sessionSetup)) s[k](...v);
});
function tuneSocket(socket) {
  if (cfg.noDelay !== undefined) socket.setNoDelay(cfg.noDelay);
  if (cfg.keepAlive) socket.setKeepAlive(true, cfg.keepAlive);
}
let server;
if (cfg.listen === "tcp") {
  // floor: bare TCP sockets held open, read once, answer once (libuv + net.Socket only)
  server = net.createServer({ noDelay: true }, (socket) => {
    sessions++; streams++;
    socket.on("error", () => {});
    socket.once("data", () => socket.write(payload));
    socket.once("close", () => { sessions--; streams--; });
  });
} else if (cfg.listen === "sniff") {
  // the one-port-server way: net.Server, sniff preface, unshift, emit('connection')
  server = net.createServer({ pauseOnConnect: false, noDelay: cfg.netNoDelay ?? true }, (socket) => {
    tuneSocket(socket);
    socket.on("error", () => socket.destroy());
    let seen = Buffer.alloc(0);
    const timer = cfg.noTimer ? undefined : setTimeout(() => socket.destroy(), 10_000);
    const onData = (chunk) => {
      seen = Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      const isPrefix = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (isPrefix && seen.length < PREFACE.length) return;
      clearTimeout(timer);
      socket.off("data", onData);
      socket.pause();
      socket.unshift(cfg.copyUnshift ? Buffer.from(seen) : seen);
      if (cfg.clearSeen) seen = undefined;
      h2.emit("connection", socket);
    };
    socket.on("data", onData);
    socket.once("close", () => clearTimeout(timer));
  });
} else {
  server = h2;
  h2.on("connection", tuneSocket);
}
server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }));

function vm(field) {
  const m = fs.readFileSync("/proc/self/status", "utf8").match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return Number(m[1]) * 1024;
}
process.on("message", async (msg) => {
  if (msg.cmd === "measure") {
    for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 50)); }
    const mu = process.memoryUsage();
    process.send({ rss: vm("VmRSS"), heapUsed: mu.heapUsed, heapTotal: mu.heapTotal, external: mu.external, arrayBuffers: mu.arrayBuffers, streams, sessions });
  } else if (msg.cmd === "exit") process.exit(0);
});
