/**
 * The wire's framing, shared by the framed paths (framed-subscribe.ts, framed-connect.ts, framed-unary.ts), the
 * front door and the connect-node adapter: FrameWriter, the StreamSink that writes pre-framed items to a response
 * and ends a stream in its protocol's way; FrameReader, which cuts a request body into frames; grpc-message
 * percent-encoding. The bytes of an envelope are written by delivery/grpc-codec.ts.
 */
import type { EventEmitter } from "node:events";
import type http from "node:http";
import http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { ChatError } from "../core/errors.js";
import { envelope } from "../delivery/grpc-codec.js";
import type { OutboundItem, StreamSink } from "../delivery/outbound.js";
import { toConnectError } from "../rpc/errors.js";

/**
 * WireProtocol is a streaming protocol whose binary framing the fast paths
 * write themselves. "grpc-web-text" is gRPC-Web with each written chunk
 * base64-encoded on its own (padded), as Google's grpc-web client reads it.
 */
export type WireProtocol = "grpc" | "grpc-web" | "grpc-web-text" | "connect";

const RESPONSE_TYPES: Readonly<Record<WireProtocol, string>> = {
  grpc: "application/grpc",
  "grpc-web": "application/grpc-web+proto",
  "grpc-web-text": "application/grpc-web-text+proto",
  connect: "application/connect+proto",
};

/** AnyRequest is an HTTP/1.1 or HTTP/2 (compat) request. */
export type AnyRequest = http.IncomingMessage | http2.Http2ServerRequest;
/** AnyResponse is an HTTP/1.1 or HTTP/2 (compat) response. */
export type AnyResponse = http.ServerResponse | http2.Http2ServerResponse;

/**
 * FrameWriter is the StreamSink of the fast path: it writes pre-framed items
 * to the response and ends the stream in the protocol's own way. Its buffer
 * is the response's write buffer (for HTTP/2, the stream's; for HTTP/1.1,
 * the response's and its socket's) plus the items not yet handed over.
 *
 * Items from the hub (`write`) are queued and handed to the response when
 * the current callback's synchronous work is done (process.nextTick), all
 * of them to one stream in one write: a write costs the same for one frame
 * as for several (on HTTP/2, ~10 µs of node:http2 machinery, a DATA frame
 * and a socket write), and the events of one callback often share streams
 * (a group commit's appends, a bus client's read). The bytes reach the
 * socket no later than before: node:http2 sends at the end of the loop
 * turn. Frames of the handler's own (`writeFrame`, e.g. replies on
 * Connect) go out at once, after the queue.
 *
 * On HTTP/2 the frames go straight to the ServerHttp2Stream under the
 * compat response (whose `write` adds only checks this class makes itself);
 * the headers and the end still go through the compat response.
 */
export class FrameWriter implements StreamSink, Flushable {
  private started = false;
  private ended = false;
  /** h2 is the HTTP/2 stream the frames are written to, when the response is an HTTP/2 one. */
  private readonly h2: http2.ServerHttp2Stream | undefined;
  /** pending holds the frames written by the current callback, not yet given to the response. */
  private readonly pending = new CallbackFrames(this);
  private readonly drain = new DrainWait();

  constructor(
    private readonly protocol: WireProtocol,
    private readonly res: AnyResponse,
    /** frameOf picks the shared frame to write for a hub item (Subscribe: grpcFrame; Connect: connectFrame). */
    private readonly frameOf: (item: OutboundItem) => Buffer = grpcFrameOf,
    /** contentType is the response's content type; by default the protocol's with the binary codec. */
    private readonly contentType: string = RESPONSE_TYPES[protocol],
  ) {
    this.h2 = "stream" in res ? res.stream : undefined;
  }

  /** Once the stream has ended or its response is gone nothing more is written, so nothing is waited for: 0. */
  get bufferedBytes(): number {
    if (this.ended || this.res.destroyed) return 0;
    return (this.h2 ?? this.res).writableLength + this.pending.bytes;
  }

  /** start sends the response headers. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.res.writeHead(200, { "content-type": this.contentType });
  }

  /** write queues a hub item; the callback's items go to the response together (see the class comment). */
  write(item: OutboundItem): void {
    if (this.ended) return;
    this.pending.add(this.frameOf(item));
  }

  /** writeFrame writes an already framed message of the handler's own (e.g. a reply), after any queued items. */
  writeFrame(frame: Buffer): void {
    if (this.ended) return;
    this.flush();
    this.send(frame);
  }

  /** flush gives the queued items to the response in one write. */
  flush(): void {
    const queued = this.pending.take();
    if (queued === undefined) return;
    this.send(Array.isArray(queued) ? Buffer.concat(queued) : queued);
  }

  private send(frame: Buffer): void {
    if (!this.started) this.start();
    // grpc-web-text: each write is base64 on its own, padded, so no byte of a live stream waits for the next write.
    const data: Buffer | string = this.protocol === "grpc-web-text" ? frame.toString("base64") : frame;
    const h2 = this.h2;
    if (h2) {
      if (!h2.destroyed) h2.write(data);
    } else if (!this.res.destroyed) {
      (this.res as http.ServerResponse).write(data);
    }
  }

  /** abort drops the stream at once (a write failed): the client sees it reset and resumes. */
  abort(): void {
    this.pending.take();
    this.ended = true;
    destroy(this.res);
  }

  /** isEnded is true once the stream was finished. */
  get isEnded(): boolean {
    return this.ended;
  }

  /**
   * drained waits for 'drain' when the response asked for it; below the
   * stream's high-water mark no 'drain' comes, so it waits a moment for the
   * socket to take the bytes and lets the caller look again. Queued items
   * are handed over first.
   */
  drained(): Promise<void> {
    const res = this.res;
    this.flush();
    if (this.bufferedBytes === 0) return Promise.resolve();
    return this.drain.wait(res, "stream" in res ? res.stream.writableNeedDrain : res.writableNeedDrain);
  }

  end(error?: ChatError): void {
    this.finish(error ? toConnectError(error) : undefined);
  }

  /** finish ends the stream with a status (OK without an error). */
  finish(error: ConnectError | undefined): void {
    if (this.ended) return;
    // What was queued goes out before the end, as if it had been written at once.
    this.flush();
    this.ended = true;
    const res = this.res;
    if (res.destroyed || res.writableEnded) return;
    if (!this.started) {
      this.started = true;
      res.writeHead(200, { "content-type": this.contentType });
    }
    const code = error?.code ?? 0;
    const message = error?.rawMessage;
    switch (this.protocol) {
      case "grpc":
        (res as http2.Http2ServerResponse).addTrailers(grpcStatus(code, message, error?.metadata));
        res.end();
        break;
      case "grpc-web":
        res.end(grpcWebTrailerFrame(grpcStatus(code, message, error?.metadata)));
        break;
      case "grpc-web-text":
        res.end(grpcWebTrailerFrame(grpcStatus(code, message, error?.metadata)).toString("base64"));
        break;
      case "connect": {
        // The error's metadata (e.g. retry-after) travels as the end-of-stream message's "metadata", as the Connect
        // protocol has it for trailers: a value list per lower-case key.
        const metadata: Record<string, string[]> = {};
        error?.metadata.forEach((value, key) => {
          (metadata[key] ??= []).push(value);
        });
        const endStream = error
          ? { error: { code: codeToString(error.code), message: error.rawMessage }, ...(Object.keys(metadata).length > 0 ? { metadata } : {}) }
          : {};
        res.end(envelope(0x02, Buffer.from(JSON.stringify(endStream), "utf8")));
        break;
      }
    }
    if (error) {
      // The end waits behind the buffered data; a client that never reads
      // again must not pin that buffer: give it 10 s, then drop the stream.
      const timer = setTimeout(() => destroy(res), 10_000);
      timer.unref();
      res.once("close", () => clearTimeout(timer));
    }
  }
}

/**
 * DrainWait is a sink's wait for its writer to drain. Callers loop on the
 * sink's bufferedBytes, so a wait never resolves in the turn it was asked
 * for: a loop on an already-resolved promise would starve I/O, including
 * the 'close' that ends it. Concurrent callers share one wait.
 */
export class DrainWait {
  private pending: Promise<void> | undefined;

  /** wait resolves once `writer` drains or closes or, when it asked for no drain (`needDrain` false), after a moment. */
  wait(writer: EventEmitter, needDrain: boolean): Promise<void> {
    // Below the high-water mark no 'drain' comes: look again in a moment.
    if (!needDrain) return new Promise((resolve) => setTimeout(resolve, 5));
    this.pending ??= new Promise<void>((resolve) => {
      const done = () => {
        writer.off("drain", done);
        writer.off("close", done);
        this.pending = undefined;
        setImmediate(resolve);
      };
      writer.on("drain", done);
      writer.on("close", done);
    });
    return this.pending;
  }
}

/** Flushable is a sink that queues the items of a callback and hands them to its transport in one go. */
export interface Flushable {
  /** flush hands the queued items over; it may throw if the transport is broken. */
  flush(): void;
  /** abort drops the stream at once (its flush threw): the client resumes from its cursors. */
  abort(): void;
}

/**
 * CallbackFrames holds the frames one callback wrote to a sink and not yet
 * handed to its transport: one Buffer (the usual case, no array) or several,
 * in write order, and their size. The first frame has the sink flushed once
 * the callback's synchronous work is done (queueFlush); `take` empties it.
 */
export class CallbackFrames {
  private frames: Buffer | Buffer[] | undefined;
  /** bytes is the size of the frames held. */
  bytes = 0;

  constructor(private readonly sink: Flushable) {}

  add(frame: Buffer): void {
    const frames = this.frames;
    if (frames === undefined) {
      this.frames = frame;
      queueFlush(this.sink);
    } else if (Array.isArray(frames)) {
      frames.push(frame);
    } else {
      this.frames = [frames, frame];
    }
    this.bytes += frame.length;
  }

  /** take returns the frames held (undefined if none) and forgets them. */
  take(): Buffer | Buffer[] | undefined {
    const frames = this.frames;
    this.frames = undefined;
    this.bytes = 0;
    return frames;
  }
}

/** Sinks with queued items; one process.nextTick flushes them all. */
let toFlush: Flushable[] = [];
let flushQueued = false;

/**
 * queueFlush has `writer.flush()` called once the current callback's
 * synchronous work is done (process.nextTick), with every other sink queued
 * in the same callback: the items of one callback go to each stream in one
 * transport write.
 */
export function queueFlush(writer: Flushable): void {
  toFlush.push(writer);
  if (flushQueued) return;
  flushQueued = true;
  process.nextTick(flushAll);
}

function flushAll(): void {
  flushQueued = false;
  const writers = toFlush;
  toFlush = [];
  for (const w of writers) {
    try {
      w.flush();
    } catch {
      // A response that throws on write is broken: drop it, the client resumes from its cursors.
      w.abort();
    }
  }
}

function grpcFrameOf(item: OutboundItem): Buffer {
  return item.grpcFrame;
}

function destroy(res: AnyResponse): void {
  if (res.destroyed) return;
  if ("stream" in res) res.stream.close(http2.constants.NGHTTP2_CANCEL);
  else res.destroy();
}

/** Frame is one length-prefixed message as read off the wire. */
export interface Frame {
  readonly flags: number;
  readonly payload: Buffer;
}

/**
 * FrameReader cuts a request body into length-prefixed frames as chunks
 * arrive, copying each frame's bytes at most once (when it is complete and
 * spans chunks). A frame longer than `maxBytes` fails ResourceExhausted before it
 * is buffered; a compressed frame fails Unimplemented (this server does not
 * compress, and says so instead of guessing).
 *
 * Frames are cut eagerly by `push` (every frame a chunk completes) or lazily
 * by `add` and `next` (one frame per call): a reader that cuts lazily holds
 * raw bytes only, so a chunk of thousands of tiny frames costs its bytes, not
 * one object per frame, until they are consumed.
 */
export class FrameReader {
  /** chunks hold the bytes not yet cut into frames, in order; they are joined only once a frame is complete. */
  private chunks: Buffer[] = [];
  private size = 0;

  /** frames counts the frames cut so far (the first may have its own cap). */
  private frames = 0;

  /**
   * Creates a reader that accepts frames of at most `maxBytes`, the first
   * one of at most `firstMaxBytes` (a stream's opening message may be
   * larger than the rest: a SubscribeRequest with many cursors).
   */
  constructor(
    private readonly maxBytes: number,
    private readonly firstMaxBytes: number = maxBytes,
  ) {}

  /** push adds a chunk and returns the frames it completed. */
  push(chunk: Buffer): Frame[] {
    this.add(chunk);
    const frames: Frame[] = [];
    for (let f = this.next(); f; f = this.next()) frames.push(f);
    return frames;
  }

  /** add holds a chunk, uncut; the header of the first frame held is checked at once (throws as `next` does). */
  add(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.size += chunk.length;
    this.ready();
  }

  /**
   * ready tells whether the first frame held is complete (`next` would
   * return it). Its header, once held, is checked: over its cap
   * ResourceExhausted, compressed Unimplemented (thrown).
   */
  ready(): boolean {
    if (this.size < 5) return false;
    if (this.chunks[0]!.length < 5) this.join();
    const head = this.chunks[0]!;
    const flags = head.readUInt8(0);
    const length = head.readUInt32BE(1);
    const max = this.frames === 0 ? this.firstMaxBytes : this.maxBytes;
    if (length > max) throw new ChatError("ResourceExhausted", `request message is larger than ${max} bytes`);
    if (flags & 0x01) throw new ConnectError("compressed messages are not supported; send them uncompressed", Code.Unimplemented);
    return this.size >= 5 + length;
  }

  /** next cuts the first frame held, if complete (else undefined); it throws for a bad header as `ready` does. */
  next(): Frame | undefined {
    if (!this.ready()) return undefined;
    const length = this.chunks[0]!.readUInt32BE(1);
    if (this.chunks[0]!.length < 5 + length) this.join();
    const joined = this.chunks[0]!;
    const frame = { flags: joined.readUInt8(0), payload: joined.subarray(5, 5 + length) };
    this.frames++;
    if (joined.length > 5 + length) this.chunks[0] = joined.subarray(5 + length);
    else this.chunks.shift();
    this.size -= 5 + length;
    return frame;
  }

  /** leftover is how many bytes are held and not cut yet (after `push`: those of an incomplete frame). */
  get leftover(): number {
    return this.size;
  }

  private join(): void {
    this.chunks = [Buffer.concat(this.chunks, this.size)];
  }
}

/** grpcWebTrailerFrame is the gRPC-Web trailer frame (flag 0x80) carrying `trailers` as HTTP/1.1-style header lines. */
export function grpcWebTrailerFrame(trailers: Readonly<Record<string, string>>): Buffer {
  let lines = "";
  for (const [k, v] of Object.entries(trailers)) lines += `${k}: ${v}\r\n`;
  return envelope(0x80, Buffer.from(lines, "latin1"));
}

/** grpcStatus is the trailers of a gRPC status: code, message and the error's metadata (e.g. retry-after). */
function grpcStatus(code: number, message: string | undefined, metadata?: Headers): Record<string, string> {
  const status: Record<string, string> = {};
  metadata?.forEach((value, key) => {
    status[key] = value;
  });
  status["grpc-status"] = String(code);
  if (message) status["grpc-message"] = percentEncode(message);
  return status;
}

/**
 * percentEncode encodes grpc-message as the gRPC spec asks: the UTF-8 bytes
 * outside 0x20-0x7E, and '%', as %XX; everything else as is. It is the one
 * encoder of every path (the fast paths', the front door's and connect-node's
 * answers, re-encoded by connect-adapter.ts): grpc-js decodes it with
 * decodeURI, connect-es with decodeURIComponent, and both get the original
 * text back (encodeURIComponent's `%3A` for ':' would reach grpc-js users
 * as is).
 */
export function percentEncode(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
