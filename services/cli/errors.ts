/**
 * Errors of the command-line client. Every failure ends as one line on
 * stderr, `error: <code>: <message>`, where code is a gRPC status name in
 * snake case (the server's, or the client's own for local problems).
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** CliError is a failure the client detects itself (not logged in, no such group, ...); exit code 1. */
export class CliError extends Error {
  override readonly name = "CliError";
  /** code is a snake_case gRPC status name such as "not_found" or "unauthenticated". */
  constructor(
    readonly code: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** UsageError is a malformed command line; exit code 2 with the usage text. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** Canceled is thrown when the user aborts an interactive prompt (Ctrl-C); exit code 130. */
export class Canceled extends Error {
  override readonly name = "Canceled";
}

/** codeName spells a Connect code the way gRPC status names are written in snake case, e.g. Code.NotFound → "not_found". */
export function codeName(code: Code): string {
  const name = Code[code] ?? "unknown";
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

/**
 * unwrap returns the CliError that connect wrapped into a ConnectError
 * (code Unknown) when it was thrown inside an interceptor, e.g. by a token
 * refresh; any other value is returned as is.
 */
export function unwrap(e: unknown): unknown {
  return e instanceof ConnectError && e.cause instanceof CliError ? e.cause : e;
}

/** describeError renders any thrown value as `<code>: <message>` without the `error: ` prefix. */
export function describeError(error: unknown): string {
  const e = unwrap(error);
  if (e instanceof CliError) return `${e.code}: ${e.message}`;
  if (e instanceof ConnectError) return `${codeName(e.code)}: ${e.rawMessage}`;
  if (e instanceof Error) return `internal: ${e.message}`;
  return `internal: ${String(e)}`;
}
