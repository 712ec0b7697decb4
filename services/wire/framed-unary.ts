import { Code, ConnectError } from "@connectrpc/connect";
import { ChatError } from "../core/errors.js";
import type { Logger } from "../core/logger.js";
import type { Principal } from "../core/principal.js";
import { envelope } from "../delivery/grpc-codec.js";
import { logCallEnd, requestIdOf } from "../rpc/call-log.js";
import { toConnectError } from "../rpc/errors.js";
import { type AnyRequest, type AnyResponse, FrameWriter } from "./framing.js";

/** FastUnaryRoute is one authenticated unary RPC served by the fast path. */
export interface FastUnaryRoute {
  /** rpc is "package.Service/Method"; the path is "/" + rpc. */
  readonly rpc: string;
  /** handle decodes the request bytes, runs the use-case and returns the encoded response (throwing ChatError on refusal). */
  handle(principal: Principal, request: Buffer): Promise<Uint8Array>;
  /** onResult hears each call's outcome: undefined for OK, else the status code (metrics). */
  readonly onResult?: (code: Code | undefined) => void;
}

/** FastUnaryDeps are what the unary fast path needs from the app. */
export interface FastUnaryDeps {
  readonly logger: Logger;
}

/**
 * serveFastUnary serves a hot unary RPC over gRPC and gRPC-Web (binary or
 * base64 text) without connect-node's per-call machinery (for SendMessage
 * it was the largest CPU cost after the store): the request message the
 * front door read for the caller it authenticated (front-door.ts), the
 * route's handler, one framed response out. It keeps what the interceptors
 * give the other RPCs: the same status codes and messages (with
 * retry-after on RESOURCE_EXHAUSTED), and the request id and log lines of
 * rpc/call-log.ts. It keeps the client's `grpc-timeout`, counted
 * from `arrivedAt` (performance.now() when the request's headers came): a
 * call whose deadline has passed when its request is complete is not run, and a
 * call still running at its deadline is answered DEADLINE_EXCEEDED then
 * (its work may still finish: sends are durable and idempotent, so a retry
 * with the same client_message_id returns the message if it was stored). A
 * malformed `grpc-timeout` is INVALID_ARGUMENT.
 */
export function serveFastUnary(
  route: FastUnaryRoute,
  protocol: "grpc" | "grpc-web" | "grpc-web-text",
  req: AnyRequest,
  res: AnyResponse,
  deps: FastUnaryDeps,
  principal: Principal,
  payload: Buffer,
  arrivedAt: number,
): void {
  const started = Date.now() - (performance.now() - arrivedAt);
  const startedPrecise = arrivedAt;
  const requestId = requestIdOf(req.headers["x-request-id"]);
  const line = () => ({ rpc: route.rpc, requestId, userId: principal?.userId, durationMs: Date.now() - started });
  const writer = new FrameWriter(protocol, res);
  let done = false;

  let deadlineTimer: NodeJS.Timeout | undefined;
  const finish = (error: ConnectError | undefined, reply?: Uint8Array) => {
    if (done) return;
    done = true;
    clearTimeout(deadlineTimer);
    route.onResult?.(error?.code);
    logCallEnd(deps.logger, line(), error);
    if (res.destroyed) return;
    res.setHeader("x-request-id", requestId);
    if (reply) {
      writer.start();
      writer.writeFrame(envelope(0, reply));
    }
    writer.finish(error);
  };
  const fail = (e: unknown) => finish(toConnectError(e));
  const deadlinePassed = () =>
    finish(new ConnectError(`the call's deadline (grpc-timeout) passed before it completed; a retry is safe`, Code.DeadlineExceeded));

  // A call the client cancels (stream reset, connection gone) ends here: no
  // deadline timer outlives it, and it is counted as cancelled, not as a
  // malformed request (the request's end that follows the reset) or a timeout.
  const cancelled = () => {
    if (done) return;
    done = true;
    clearTimeout(deadlineTimer);
    route.onResult?.(Code.Canceled);
    logCallEnd(deps.logger, line(), new ConnectError("client cancelled the call", Code.Canceled));
  };
  (req as unknown as NodeJS.EventEmitter).once("aborted", cancelled);
  res.once("close", cancelled);
  let timeoutMs: number | undefined;
  try {
    timeoutMs = grpcTimeoutMs(req.headers["grpc-timeout"]);
  } catch (e) {
    fail(e);
    return;
  }
  if (timeoutMs !== undefined) {
    // The deadline counts from the request's arrival, not from the end of its body: what is left of it.
    const leftMs = timeoutMs - (performance.now() - startedPrecise);
    if (leftMs <= 0) return deadlinePassed();
    // (A deadline beyond setTimeout's range, ~24 days, is no deadline for this call.)
    if (leftMs < 2 ** 31 - 1) deadlineTimer = setTimeout(deadlinePassed, Math.ceil(leftMs));
  }
  route.handle(principal, payload).then((reply) => finish(undefined, reply), fail);
}

const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 1e-3, n: 1e-6 };

/**
 * grpcTimeoutMs reads a `grpc-timeout` header (1 to 8 digits and a unit:
 * H, M, S, m, u or n) as milliseconds; undefined when absent, ChatError
 * InvalidArgument when malformed.
 */
export function grpcTimeoutMs(header: string | string[] | undefined): number | undefined {
  if (header === undefined) return undefined;
  const m = typeof header === "string" ? /^(\d{1,8})([HMSmun])$/.exec(header) : null;
  if (!m) throw new ChatError("InvalidArgument", `grpc-timeout ${JSON.stringify(header)} is malformed: 1 to 8 digits and a unit (H, M, S, m, u, n), e.g. "10S"`);
  return Number(m[1]) * TIMEOUT_UNIT_MS[m[2]!]!;
}
