/** How the SDK reads the server's errors: status codes, retry hints, and which failures are worth retrying. */
import { Code, ConnectError } from "@connectrpc/connect";
import type { StreamError } from "../../../gen/chat/v1/stream_service_pb.js";

export { Code, ConnectError };

/**
 * retryAfterMs is the server's hint of how long to wait before retrying, in ms: the `retry-after` metadata (whole
 * seconds; a header or trailer of a unary call) of a ConnectError. Undefined when there is none.
 */
export function retryAfterMs(e: unknown): number | undefined {
  if (!(e instanceof ConnectError)) return undefined;
  const v = e.metadata.get("retry-after");
  if (v === null) return undefined;
  const s = Number(v);
  return Number.isFinite(s) && s >= 0 ? s * 1000 : undefined;
}

/** CODE_BY_NAME maps the snake_case status names of StreamError.code to codes. */
const CODE_BY_NAME: ReadonlyMap<string, Code> = new Map(
  Object.entries(Code)
    .filter((e): e is [string, Code] => typeof e[1] === "number")
    .map(([name, code]) => [name.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase(), code]),
);

/** codeName spells a code as gRPC status names are written in snake case (Code.NotFound → "not_found"). */
export function codeName(code: Code): string {
  return (Code[code] ?? "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

/**
 * fromStreamError turns a StreamError (the answer to one request of a Connect stream) into a ConnectError with
 * the same code and message; its retry_after becomes `retry-after` metadata, so retryAfterMs reads both kinds.
 */
export function fromStreamError(e: StreamError): ConnectError {
  const code = CODE_BY_NAME.get(e.code) ?? Code.Unknown;
  const metadata = new Headers();
  if (e.retryAfter) metadata.set("retry-after", String(Number(e.retryAfter.seconds) + e.retryAfter.nanos / 1e9));
  return new ConnectError(e.message, code, metadata);
}

/**
 * SEND_RETRYABLE are the codes on which a send is retried with the same client_message_id: the server stored
 * nothing, or may have stored the message, which the retry then returns instead of storing it twice.
 */
export const SEND_RETRYABLE: ReadonlySet<Code> = new Set([Code.Unavailable, Code.ResourceExhausted, Code.DeadlineExceeded, Code.Aborted, Code.Unknown]);

/** LIVE_RETRYABLE are the codes after which the live connection reconnects (UNAUTHENTICATED is handled apart). */
export const LIVE_RETRYABLE: ReadonlySet<Code> = new Set([
  Code.Unavailable,
  Code.ResourceExhausted,
  Code.DeadlineExceeded,
  Code.Aborted,
  Code.Unknown,
  Code.Internal,
  Code.Canceled,
]);
