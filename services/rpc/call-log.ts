/**
 * The request-id and log policy of every call, in one place for connect-node's interceptors (interceptors.ts) and
 * the paths that answer calls themselves (wire/: the framed paths, the WebSocket, the front door's refusals):
 * - a call's request id is the client's (or Envoy's) `x-request-id` when well-formed, else a new one, and the
 *   answer echoes it;
 * - a call ends with one structured line: the rpc, the code, the request id, the user id and the duration (never a
 *   token); Internal at error, Unavailable at warn, other errors (the client's) and completed calls at debug.
 */
import { Code, type ConnectError } from "@connectrpc/connect";
import { newId } from "../core/ids.js";
import type { Logger } from "../core/logger.js";

/** REQUEST_ID_RE is what a client's `x-request-id` must look like to be kept. */
export const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** requestIdOf is the request id of a call whose `x-request-id` header is `given`: kept when well-formed, else new. */
export function requestIdOf(given: string | readonly string[] | null | undefined): string {
  return typeof given === "string" && REQUEST_ID_RE.test(given) ? given : newId();
}

/** CallLine is what a call's line says besides its status. */
export interface CallLine {
  /** rpc is "package.Service/Method". */
  readonly rpc: string;
  readonly requestId?: string;
  /** userId is the verified caller's, if any. */
  readonly userId?: string | undefined;
  readonly durationMs?: number;
  /** transport names a transport other than HTTP (e.g. "websocket"). */
  readonly transport?: string;
}

/**
 * logCallEnd writes a call's line: without an error "OK" at debug (with `okMessage`), else the error's code at its
 * level, with its message and the error it was made from (`err`, for the stack).
 */
export function logCallEnd(logger: Logger, line: CallLine, error: ConnectError | undefined, okMessage = "rpc done"): void {
  const { rpc, ...rest } = line;
  if (!error) {
    logger.debug({ rpc, code: "OK", ...rest }, okMessage);
    return;
  }
  const fields = { rpc, code: Code[error.code], ...rest, err: error.cause instanceof Error ? error.cause : undefined };
  if (error.code === Code.Internal) logger.error(fields, error.rawMessage);
  else if (error.code === Code.Unavailable) logger.warn(fields, error.rawMessage);
  else logger.debug(fields, error.rawMessage);
}
