import { Code, ConnectError } from "@connectrpc/connect";
import { type ErrorKind, isChatError } from "../core/errors.js";

/**
 * CODE_OF_KIND is the one mapping from core error kinds to gRPC status
 * codes. The Record type makes the compiler reject a kind without a code.
 */
export const CODE_OF_KIND: Readonly<Record<ErrorKind, Code>> = {
  InvalidArgument: Code.InvalidArgument,
  NotFound: Code.NotFound,
  AlreadyExists: Code.AlreadyExists,
  PermissionDenied: Code.PermissionDenied,
  Unauthenticated: Code.Unauthenticated,
  FailedPrecondition: Code.FailedPrecondition,
  ResourceExhausted: Code.ResourceExhausted,
  Unavailable: Code.Unavailable,
  Internal: Code.Internal,
};

/**
 * toConnectError turns anything thrown into the status a client sees.
 * ChatError keeps its message (written for clients) and kind; a
 * ConnectError passes through; anything else becomes Internal with a
 * generic message, the original kept as `cause` for logging only.
 * A rate-limit hint travels as the `retry-after` trailer (seconds).
 */
export function toConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  if (isChatError(e)) {
    const metadata = new Headers();
    if (e.retryAfterMs !== undefined) metadata.set("retry-after", String(Math.ceil(e.retryAfterMs / 1000)));
    return new ConnectError(e.message, CODE_OF_KIND[e.kind], metadata, undefined, e);
  }
  return new ConnectError("internal error", Code.Internal, undefined, undefined, e);
}
