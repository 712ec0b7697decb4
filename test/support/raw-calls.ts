/**
 * Raw protocol calls for tests that need bytes no generated client sends:
 * gRPC over node:http2, gRPC-Web (binary or base64 text) and Connect over
 * HTTP/1.1 with fetch, and the decoding of their answers.
 */
import http2 from "node:http2";

/** Frame is one length-prefixed message or trailer frame of a response. */
export interface Frame {
  readonly flags: number;
  readonly payload: Buffer;
}

/** frame wraps a message in the 5-byte gRPC envelope. */
export function frame(payload: Uint8Array, flags = 0): Buffer {
  const out = Buffer.alloc(5 + payload.length);
  out.writeUInt8(flags, 0);
  out.writeUInt32BE(payload.length, 1);
  Buffer.from(payload).copy(out, 5);
  return out;
}

/** parseFrames cuts bytes into frames; `rest` is an incomplete frame's bytes. */
export function parseFrames(bytes: Buffer): { frames: Frame[]; rest: Buffer } {
  const frames: Frame[] = [];
  let at = 0;
  while (bytes.length - at >= 5) {
    const length = bytes.readUInt32BE(at + 1);
    if (bytes.length - at < 5 + length) break;
    frames.push({ flags: bytes[at]!, payload: bytes.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return { frames, rest: bytes.subarray(at) };
}

/** trailerOf reads a gRPC-Web trailer frame into a lower-case map. */
export function trailerOf(f: Frame): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of f.payload.toString("latin1").split("\r\n")) {
    const i = line.indexOf(":");
    if (i > 0) out[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return out;
}

/**
 * decodeBase64Text decodes gRPC-Web text as Google's grpc-web client does:
 * in 4-character groups, a padded group ending a run (the server encodes
 * each chunk on its own). Throws on characters outside base64.
 */
export function decodeBase64Text(text: string): Buffer {
  if (!/^[A-Za-z0-9+/=]*$/.test(text) || text.length % 4 !== 0) throw new Error(`not base64 in 4-character groups: ${JSON.stringify(text.slice(0, 80))}`);
  const out: Buffer[] = [];
  let from = 0;
  for (let i = 3; i < text.length; i += 4) {
    if (text[i] !== "=") continue;
    out.push(Buffer.from(text.slice(from, i + 1), "base64"));
    from = i + 1;
  }
  out.push(Buffer.from(text.slice(from), "base64"));
  return Buffer.concat(out);
}

/** H2Result is what a raw HTTP/2 call saw: the status headers and trailers, the body frames and any reset. */
export interface H2Result {
  readonly headers: http2.IncomingHttpHeaders;
  readonly trailers: http2.IncomingHttpHeaders;
  readonly frames: Frame[];
  readonly rstCode: number | undefined;
  /** grpcStatus and grpcMessage come from the trailers, or from the headers of a trailers-only answer. */
  readonly grpcStatus: string | undefined;
  readonly grpcMessage: string | undefined;
}

/**
 * h2Call sends `body` (ending the request unless `end` is false) to `path`
 * with `headers` over a fresh HTTP/2 connection and resolves when the
 * response is complete or the stream closes, or after `ms` with what it saw
 * by then (the connection dropped).
 */
export function h2Call(baseUrl: string, path: string, headers: Record<string, string>, body: Buffer, end = true, ms = 10_000): Promise<H2Result> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, te: "trailers", ...headers });
    let head: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (head = h));
    stream.on("trailers", (t) => (trailers = t));
    stream.on("data", (d: Buffer) => chunks.push(d));
    stream.on("error", () => {});
    const timer = setTimeout(() => session.destroy(), ms);
    stream.on("close", () => {
      clearTimeout(timer);
      session.close();
      const pick = (k: string) => (trailers[k] ?? head[k]) as string | undefined;
      resolve({
        headers: head,
        trailers,
        frames: parseFrames(Buffer.concat(chunks)).frames,
        rstCode: stream.rstCode,
        grpcStatus: pick("grpc-status"),
        grpcMessage: pick("grpc-message"),
      });
    });
    if (end) stream.end(body);
    else stream.write(body);
  });
}

/** WebResult is a gRPC-Web answer: HTTP status and content type, the message frames and the trailer. */
export interface WebResult {
  readonly status: number;
  readonly contentType: string | null;
  readonly messages: Buffer[];
  readonly trailer: Record<string, string>;
  /** chunks is the raw response body as received, chunk by chunk (text mode: each chunk is base64). */
  readonly chunks: string[];
}

/** webCall makes a gRPC-Web call over HTTP/1.1 (fetch); in "text" mode the body is sent and read as base64. */
export async function webCall(baseUrl: string, path: string, body: Buffer | string, opts: { text?: boolean; token?: string | undefined } = {}): Promise<WebResult> {
  const headers: Record<string, string> = {
    "content-type": opts.text ? "application/grpc-web-text" : "application/grpc-web+proto",
    accept: opts.text ? "application/grpc-web-text" : "application/grpc-web+proto",
    "x-grpc-web": "1",
  };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const sent = opts.text && typeof body !== "string" ? body.toString("base64") : body;
  const res = await fetch(`${baseUrl}${path}`, { method: "POST", headers, body: sent });
  const chunks: string[] = [];
  const raw: Buffer[] = [];
  if (res.body) {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      chunks.push(Buffer.from(chunk).toString("latin1"));
      raw.push(Buffer.from(chunk));
    }
  }
  const bytes = opts.text ? decodeBase64Text(chunks.join("")) : Buffer.concat(raw);
  const { frames } = parseFrames(bytes);
  const trailerFrame = frames.find((f) => f.flags & 0x80);
  return {
    status: res.status,
    contentType: res.headers.get("content-type"),
    messages: frames.filter((f) => !(f.flags & 0x80)).map((f) => f.payload),
    trailer: trailerFrame ? trailerOf(trailerFrame) : Object.fromEntries([...res.headers.entries()].filter(([k]) => k.startsWith("grpc-"))),
    chunks,
  };
}
