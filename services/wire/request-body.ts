/**
 * The one request-body reader: every unary and server-streaming call's body
 * is read here, by the front door, within a size cap per method, a deadline,
 * and (for calls without a verified token) a process-wide byte budget.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { ChatError } from "../core/errors.js";
import { envelope } from "../delivery/grpc-codec.js";
import { toConnectError } from "../rpc/errors.js";
import { type AnyRequest, type AnyResponse, type Frame, FrameReader } from "./framing.js";

/** BodyFraming is how a request body carries its message: length-prefixed, length-prefixed in base64 text, or bare (Connect unary). */
export type BodyFraming = "framed" | "text" | "unframed";

/**
 * BodyBudget is a process-wide count of buffered request-body bytes with a
 * limit: `take` refuses (false) what would go over it; `give` returns bytes.
 */
export class BodyBudget {
  private used = 0;

  constructor(readonly limit: number) {}

  /** take reserves `n` bytes; false (and nothing reserved) if that would exceed the limit. */
  take(n: number): boolean {
    if (this.used + n > this.limit) return false;
    this.used += n;
    return true;
  }

  /** give releases `n` bytes taken before. */
  give(n: number): void {
    this.used -= n;
  }

  /** inUse is how many bytes are reserved now. */
  get inUse(): number {
    return this.used;
  }
}

/** Pending is one body being read, with the time its deadline passes. */
interface Pending {
  readonly at: number;
  readonly expire: () => void;
}

/**
 * BodyDeadlines expires request bodies that take longer than `timeoutMs`:
 * one shared timer (not one per call) looks every `timeoutMs / 4` (at most
 * 1 s, at least 25 ms), so a body is expired no earlier than its deadline
 * and at most that period after it. The timer runs while bodies are
 * pending (and up to one period after) and never holds the process open.
 */
export class BodyDeadlines {
  private readonly pending = new Set<Pending>();
  private timer: NodeJS.Timeout | undefined;
  private readonly periodMs: number;

  constructor(readonly timeoutMs: number) {
    this.periodMs = Math.max(25, Math.min(1000, Math.floor(timeoutMs / 4)));
  }

  /** add registers a body started now; `expire` is called once if it is still pending at its deadline. */
  add(expire: () => void): Pending {
    const entry = { at: Date.now() + this.timeoutMs, expire };
    this.pending.add(entry);
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), this.periodMs);
      this.timer.unref();
    }
    return entry;
  }

  /** delete forgets a body (read, refused or abandoned). */
  delete(entry: Pending): void {
    this.pending.delete(entry);
  }

  private sweep(): void {
    const now = Date.now();
    for (const entry of this.pending) {
      if (entry.at > now) continue;
      this.pending.delete(entry);
      entry.expire();
    }
    // Stopped by a sweep, not by the last delete: calls one after another do not start and stop it each time.
    if (this.pending.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}

/** BodyLimits bound one body: its message's size, its time, and (without a verified token) the process-wide budget. */
export interface BodyLimits {
  readonly framing: BodyFraming;
  /** maxBytes caps the request message (framed: the announced length, refused before it is buffered; bare: the body). */
  readonly maxBytes: number;
  /** method names the call in messages, e.g. "Login". */
  readonly method: string;
  readonly deadlines: BodyDeadlines;
  /** budget, when given, counts every buffered byte until the body is handed over or refused. */
  readonly budget?: BodyBudget;
}

/**
 * BodyRefusal is why a body was not read: the status for the client, and
 * whether the client had finished sending (if not, the caller answers and
 * lets the connection discard the rest).
 */
export interface BodyRefusal {
  readonly error: ConnectError;
  readonly bodyComplete: boolean;
}

/**
 * readRequestBody reads the body of a unary or server-streaming call: one
 * message (framed: exactly one length-prefixed frame; text: the same in
 * base64, padded chunks tolerated; bare: the whole body), handed to
 * `onMessage` at the body's end. Refusals go to `onRefused` as soon as they
 * are seen, and then nothing more is read or held: a message over
 * `maxBytes` (RESOURCE_EXHAUSTED, from the frame header or content-length,
 * before it is buffered), a second or incomplete message or bad base64
 * (INVALID_ARGUMENT), a compressed frame (UNIMPLEMENTED), the budget
 * exhausted (RESOURCE_EXHAUSTED, retry-after 1) or the deadline passed
 * (DEADLINE_EXCEEDED), the client gone (CANCELLED; nobody hears the
 * answer, but the outcome is reported).
 */
export function readRequestBody(
  req: AnyRequest,
  res: AnyResponse,
  limits: BodyLimits,
  onMessage: (message: Buffer, flags: number) => void,
  onRefused: (refusal: BodyRefusal) => void,
): () => void {
  const { framing, maxBytes, budget } = limits;
  let done = false;
  let held = 0;
  let frame: Frame | undefined;
  let size = 0;
  const chunks: Buffer[] = [];
  const reader = framing === "unframed" ? undefined : new FrameReader(maxBytes);
  const text = framing === "text" ? new Base64Chunks() : undefined;

  const release = () => {
    done = true;
    limits.deadlines.delete(entry);
    if (held > 0) budget?.give(held);
    held = 0;
    req.off("data", onData);
    req.off("end", onEnd);
    res.off("close", onClose);
  };
  const refuse = (e: unknown, bodyComplete = false) => {
    if (done) return;
    release();
    onRefused({ error: toConnectError(e), bodyComplete });
  };
  const oneMessage = () => new ChatError("InvalidArgument", `a ${limits.method} request must carry exactly one message`);
  const tooLarge = () => new ChatError("ResourceExhausted", `request message is larger than ${maxBytes} bytes`);

  const onData = (chunk: Buffer) => {
    if (done) return;
    if (budget) {
      if (!budget.take(chunk.length)) {
        const metadata = new Headers({ "retry-after": "1" });
        return refuse(new ConnectError("the server is reading too many requests without a token at once; retry in a moment", Code.ResourceExhausted, metadata));
      }
      held += chunk.length;
    }
    try {
      if (!reader) {
        size += chunk.length;
        if (size > maxBytes) throw tooLarge();
        chunks.push(chunk);
        return;
      }
      for (const f of reader.push(text ? text.push(chunk) : chunk)) {
        if (frame) throw oneMessage();
        frame = f;
      }
    } catch (e) {
      refuse(e);
    }
  };
  const onEnd = () => {
    if (done) return;
    if (!reader) {
      release();
      onMessage(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), 0);
      return;
    }
    if (text && !text.ended) return refuse(new ChatError("InvalidArgument", "the grpc-web-text request body ends inside a base64 group"), true);
    if (!frame || reader.leftover > 0) return refuse(oneMessage(), true);
    release();
    onMessage(frame.payload, frame.flags);
  };
  // A client that resets its stream or closes its connection never ends the body: let go at once (CANCELLED).
  const cancelled = () => new ConnectError("the client cancelled the call before its request was complete", Code.Canceled);
  const onClose = () => refuse(cancelled());
  const entry = limits.deadlines.add(() =>
    refuse(
      new ConnectError(
        `the request body did not arrive within ${limits.deadlines.timeoutMs} ms (REQUEST_BODY_TIMEOUT); send the whole request at once`,
        Code.DeadlineExceeded,
      ),
    ),
  );
  // cancel lets go of the body at once, with neither callback (the caller answered by itself, e.g. at its grpc-timeout).
  const cancel = () => {
    if (!done) release();
  };
  if (res.destroyed) {
    refuse(cancelled());
    return cancel;
  }
  const length = Number(req.headers["content-length"]);
  if (framing === "unframed" && length > maxBytes) {
    refuse(tooLarge());
    return cancel;
  }
  req.on("data", onData);
  req.on("end", onEnd);
  res.once("close", onClose);
  return cancel;
}

/**
 * MAX_HELD_STREAM_BYTES is how many raw bytes of a streamed body may wait
 * for its handler (one HTTP/2 stream window): past it, once a complete
 * message waits, the request is paused (flow control). Messages are cut
 * from these bytes one at a time, as the handler asks for them.
 */
export const MAX_HELD_STREAM_BYTES = 64 * 1024;

/**
 * HeldFlow keeps a streamed body's flow control and deadline in step with
 * the raw bytes its FrameReader holds (messages are cut one at a time, as
 * the handler takes them): the request is paused while more than
 * MAX_HELD_STREAM_BYTES are held with a complete message waiting, and a
 * partial message first in line must complete within the body deadline
 * (`onTimeout` runs once then). After `stop` nothing is timed again.
 */
export class HeldFlow {
  private paused = false;
  private entry: Pending | undefined;
  private stopped = false;

  constructor(
    private readonly req: { pause(): unknown; resume(): unknown },
    private readonly reader: FrameReader,
    private readonly deadlines: BodyDeadlines,
    private readonly onTimeout: () => void,
  ) {}

  /** review sets the flow and the deadline from what is held; returns whether a complete message waits. Throws for a bad header. */
  review(): boolean {
    const ready = this.reader.ready();
    const pause = ready && this.reader.leftover > MAX_HELD_STREAM_BYTES;
    if (pause !== this.paused) {
      this.paused = pause;
      if (pause) this.req.pause();
      else this.req.resume();
    }
    const partial = !ready && this.reader.leftover > 0;
    if (!partial && this.entry) {
      this.deadlines.delete(this.entry);
      this.entry = undefined;
    } else if (partial && !this.entry && !this.stopped) {
      this.entry = this.deadlines.add(() => {
        this.entry = undefined;
        this.onTimeout();
      });
    }
    return ready;
  }

  /** stop drops the deadline for good (the body is done with: ended, failed or closed). */
  stop(): void {
    this.stopped = true;
    if (this.entry) this.deadlines.delete(this.entry);
    this.entry = undefined;
  }
}

/**
 * readRequestStream reads the body of a client-streaming or bidirectional
 * call as it arrives, for a handler that consumes it message by message
 * (connect-node): it yields each complete length-prefixed message (its
 * envelope included). It holds the body's raw bytes and cuts one message
 * per step of the iteration, so it holds at most MAX_HELD_STREAM_BYTES (or
 * one message, if larger) plus one chunk: past that, with a complete
 * message waiting, the request is paused until the handler takes it. Each
 * message is bounded like a unary body: at most `maxBytes` (refused from
 * its header), complete within the deadline from its first byte (an idle
 * stream, or one whose handler has not taken a complete message yet, has
 * none), and every raw byte held counts against the budget until the
 * handler takes its message. A refusal ends the iteration with its status;
 * a body that ends inside a message is INVALID_ARGUMENT.
 */
export function readRequestStream(
  req: AnyRequest,
  res: AnyResponse,
  limits: Omit<BodyLimits, "framing"> & {
    /** openingMaxBytes caps the first message (default maxBytes), e.g. Connect's subscribe with its cursors. */
    readonly openingMaxBytes?: number;
    /** check throws (InvalidArgument) for a message that does not decode; it ends the stream with that status. */
    readonly check?: (message: Buffer) => void;
  },
): AsyncIterable<Uint8Array> {
  const { budget, deadlines } = limits;
  const reader = new FrameReader(limits.maxBytes, limits.openingMaxBytes ?? limits.maxBytes);
  let ended = false;
  let inputEnded = false;
  let error: unknown;
  let held = 0;
  let wake: (() => void) | undefined;
  const settle = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const stop = () => {
    flow.stop();
    if (held > 0) budget?.give(held);
    held = 0;
    req.off("data", onData);
    req.off("end", onEnd);
    res.off("close", onClose);
  };
  const fail = (e: unknown) => {
    if (ended || error !== undefined) return;
    error = toConnectError(e);
    stop();
    settle();
  };
  const flow = new HeldFlow(req, reader, deadlines, () =>
    fail(new ConnectError(`a ${limits.method} request message did not arrive within ${deadlines.timeoutMs} ms (REQUEST_BODY_TIMEOUT)`, Code.DeadlineExceeded)),
  );
  const review = () => flow.review();
  const onData = (chunk: Buffer) => {
    if (error !== undefined) return;
    if (budget) {
      if (!budget.take(chunk.length)) {
        return fail(new ConnectError("the server is reading too many requests without a token at once; retry in a moment", Code.ResourceExhausted, new Headers({ "retry-after": "1" })));
      }
      held += chunk.length;
    }
    try {
      reader.add(chunk);
      if (review()) settle();
    } catch (e) {
      fail(e);
    }
  };
  const onEnd = () => {
    inputEnded = true;
    settle();
  };
  const onClose = () => fail(new ConnectError("the client cancelled the call", Code.Canceled));
  /** take cuts the next message, if complete: checked, its bytes given back to the budget (the handler's now). */
  const take = (): Buffer | undefined => {
    const before = reader.leftover;
    const f = reader.next();
    if (!f) return undefined;
    if (budget) {
      const n = Math.min(held, before - reader.leftover);
      budget.give(n);
      held -= n;
    }
    limits.check?.(f.payload);
    try {
      review();
    } catch (e) {
      fail(e); // the next message's header is bad: this one is still the handler's, the stream ends after it
    }
    return envelope(f.flags, f.payload);
  };
  req.on("data", onData);
  req.on("end", onEnd);
  res.once("close", onClose);
  return {
    async *[Symbol.asyncIterator]() {
      try {
        for (;;) {
          if (error !== undefined) throw error;
          let next: Buffer | undefined;
          try {
            next = take();
          } catch (e) {
            fail(e);
            continue;
          }
          if (next) {
            yield next;
            continue;
          }
          if (inputEnded) {
            if (reader.leftover > 0) {
              fail(new ChatError("InvalidArgument", `the ${limits.method} request stream ended inside a message`));
              continue;
            }
            ended = true;
            stop();
            return;
          }
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
        }
      } finally {
        // The handler stopped reading (it answered, or failed): nothing more is held for it.
        if (!ended && error === undefined) {
          error = new ConnectError("the handler stopped reading", Code.Canceled);
          stop();
        }
      }
    },
  };
}

/** A complete base64 group: four characters, or two or three and padding. */
const GROUPS_RE = /^(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)*$/;

/**
 * Base64Chunks decodes a base64 body as it arrives, in 4-character groups:
 * a padded group ends a run, and the next run decodes on its own, so a body
 * made of separately encoded (padded) chunks decodes as their concatenation
 * (what gRPC-Web text mode allows). Anything else than base64 throws
 * InvalidArgument.
 */
export class Base64Chunks {
  private carry = "";

  /** push decodes the complete groups seen so far. */
  push(chunk: Buffer): Buffer {
    const s = this.carry + chunk.toString("latin1");
    const n = s.length - (s.length % 4);
    const groups = s.slice(0, n);
    this.carry = s.slice(n);
    if (!GROUPS_RE.test(groups) || /[^A-Za-z0-9+/=]/.test(this.carry)) {
      throw new ChatError("InvalidArgument", "a grpc-web-text request body must be base64 (A-Z, a-z, 0-9, '+', '/', '=' padding)");
    }
    let from = 0;
    const out: Buffer[] = [];
    for (let i = 3; i < n; i += 4) {
      if (groups.charCodeAt(i) !== 0x3d) continue; // '='
      out.push(Buffer.from(groups.slice(from, i + 1), "base64"));
      from = i + 1;
    }
    if (from < n) out.push(Buffer.from(groups.slice(from), "base64"));
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  /** ended is true when no partial group is pending. */
  get ended(): boolean {
    return this.carry.length === 0;
  }
}
