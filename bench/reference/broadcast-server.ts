/**
 * The reference of `npm run bench -- fixed|max --target reference` (issue 16.1): a bare group broadcast server, the
 * least a group chat's fan-out can be, so that the product's figures can be put next to it on the same machine, driven
 * by the same subscriber workers and the same sender (bench/README.md, "Targets").
 *
 * What it deliberately does NOT do: no authentication (the bearer token is no credential: the bench puts in it the
 * comma-separated ids of the groups the connection joins), no membership check, no validation beyond the framing, no
 * storage and no durability (a message exists only while it is written to the sockets), no idempotency, no resume and
 * no history (a SubscribeRequest's cursors are ignored), no heartbeats, no per-connection buffer cap (a slow reader just
 * buffers), no rate limits, no metrics, no logging, no TLS, no graceful shutdown. Its only state is a map of group → its
 * connections and the group's last seq (a counter, so the bench's gap and duplicate checks hold for it too).
 *
 * Wire: one plaintext port; a connection that starts with the HTTP/2 preface is h2c, any other HTTP/1.1.
 * - POST /chat.v1.MessageService/SendMessage, gRPC unary over h2c (what bench/sender.ts posts): reads group_id and
 *   text, answers SendMessageResponse { message { seq } } with grpc-status 0, then writes the event to the group.
 * - Subscribe: a WebSocket upgrade of GET /chat.v1.StreamService/Subscribe (subprotocol chat.v1.proto), or a gRPC
 *   server stream POST to that path over h2c. It gets a StreamReady with each group's position, then one
 *   SubscribeResponse { event { group_id, seq, message { text } } } per message (a WebSocket binary message each, or
 *   a gRPC frame each). Each event is encoded once; the same bytes go to every connection of its group.
 *
 * Usage: node --import tsx bench/reference/broadcast-server.ts [port] (0, the default: any free port; printed as JSON).
 * SIGTERM and SIGINT end the process with exit(0), so that `node --cpu-prof` (the bench's --profile) writes its profile.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { type WebSocket, WebSocketServer } from "ws";

const SEND = "/chat.v1.MessageService/SendMessage";
const SUBSCRIBE = "/chat.v1.StreamService/Subscribe";

/** Group is one group's live connections and its last seq. */
interface Group {
  seq: number;
  readonly ws: Set<WebSocket>;
  readonly h2: Set<http2.ServerHttp2Stream>;
}
const groups = new Map<string, Group>();
function group(id: string): Group {
  let g = groups.get(id);
  if (!g) groups.set(id, (g = { seq: 0, ws: new Set(), h2: new Set() }));
  return g;
}

// Protobuf, the few fields used: a length-delimited field, a varint field, and reading a message's length-delimited fields.
const varint = (n: number): number[] => (n > 0x7f ? [(n % 0x80) | 0x80, ...varint(Math.floor(n / 0x80))] : [n]);
const bytesField = (field: number, b: Uint8Array): Buffer => Buffer.concat([Buffer.from([(field << 3) | 2, ...varint(b.length)]), b]);
const uintField = (field: number, n: number): Buffer => Buffer.from([field << 3, ...varint(n)]);
function lengthDelimitedFields(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  const read = () => {
    let v = 0;
    for (let mul = 1; ; mul *= 0x80) {
      const b = buf[pos++] ?? 0;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
    }
  };
  while (pos < buf.length) {
    const tag = read();
    if ((tag & 7) !== 2) throw new Error(`unexpected wire type in field ${tag >>> 3}`);
    const len = read();
    out[tag >>> 3] = buf.subarray(pos, pos + len);
    pos += len;
  }
  return out;
}
const grpcFrame = (payload: Buffer): Buffer => Buffer.concat([Buffer.from([0, ...[24, 16, 8, 0].map((s) => (payload.length >>> s) & 0xff)]), payload]);

/** join adds a connection to its groups and writes its StreamReady (SubscribeResponse.ready: each group at its head). */
function join(authorization: string | undefined, add: (g: Group) => void, write: (payload: Buffer) => void): string[] {
  const ids = (authorization ?? "").replace(/^Bearer /, "").split(",").filter((id) => id !== "");
  for (const id of ids) add(group(id));
  const positions = ids.map((id) => bytesField(1, Buffer.concat([bytesField(1, Buffer.from(id)), uintField(2, group(id).seq), uintField(3, group(id).seq)])));
  write(bytesField(1, Buffer.concat(positions)));
  return ids;
}

/** publish gives the message its group's next seq and writes the same encoded event to every connection of the group. */
function publish(groupId: Buffer, text: Buffer): number {
  const g = group(groupId.toString("latin1"));
  g.seq++;
  const event = bytesField(2, Buffer.concat([bytesField(1, groupId), uintField(2, g.seq), bytesField(10, bytesField(5, text))]));
  if (g.h2.size > 0) {
    const frame = grpcFrame(event);
    for (const stream of g.h2) stream.write(frame);
  }
  for (const ws of g.ws) ws.send(event);
  return g.seq;
}

const h2 = http2.createServer({ settings: { maxConcurrentStreams: 100_000 } });
h2.on("stream", (stream, headers) => {
  const path = headers[":path"];
  if (path === SUBSCRIBE) {
    stream.respond({ ":status": 200, "content-type": "application/grpc" });
    const ids = join(headers.authorization, (g) => g.h2.add(stream), (payload) => stream.write(grpcFrame(payload)));
    stream.on("close", () => ids.forEach((id) => groups.get(id)?.h2.delete(stream)));
    stream.on("error", () => {});
    stream.resume(); // the SubscribeRequest is read and ignored
    return;
  }
  if (path !== SEND) {
    stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "12" }, { endStream: true });
    return;
  }
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  stream.on("error", () => {});
  stream.on("end", () => {
    let fields: Buffer[];
    try {
      fields = lengthDelimitedFields(Buffer.concat(chunks).subarray(5)); // after the 5-byte gRPC frame header
    } catch {
      stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "3" }, { endStream: true });
      return;
    }
    const [groupId, text] = [fields[1] ?? Buffer.alloc(0), fields[2] ?? Buffer.alloc(0)];
    const seq = group(groupId.toString("latin1")).seq + 1;
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(grpcFrame(bytesField(1, uintField(3, seq)))); // SendMessageResponse { message { seq } }
    publish(groupId, text);
  });
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const h1 = http.createServer((_req, res) => res.writeHead(404).end());
h1.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
  if (req.url !== SUBSCRIBE) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const ids = join(req.headers.authorization, (g) => g.ws.add(ws), (payload) => ws.send(payload));
    ws.on("close", () => ids.forEach((id) => groups.get(id)?.ws.delete(ws)));
    ws.on("error", () => {});
  });
});

const server = net.createServer({ noDelay: true }, (socket) => {
  socket.on("error", () => socket.destroy());
  // The first read holds the start of the request (always so on loopback): "PRI " is the HTTP/2 preface.
  socket.once("data", (chunk: Buffer) => {
    socket.pause();
    socket.unshift(chunk);
    if (chunk.subarray(0, 4).toString("latin1") === "PRI ") h2.emit("connection", socket);
    else {
      h1.emit("connection", socket);
      socket.resume();
    }
  });
});
for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, () => process.exit(0));
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  const address = server.address() as net.AddressInfo;
  process.stdout.write(`${JSON.stringify({ msg: "reference server listening", port: address.port })}\n`);
});
