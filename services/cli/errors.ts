/**
 * Errors of the command-line client. Every failure ends as one line on
 * stderr, `error: <code>: <message>`, where code is a gRPC status name in
 * snake case (the server's, or the client's own for local problems).
 */
import { ConnectError, codeName } from "@chat/client/node";

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

/** describeError renders any thrown value as `<code>: <message>` without the `error: ` prefix. */
export function describeError(error: unknown): string {
  const e = error instanceof ConnectError && error.cause instanceof CliError ? error.cause : error;
  if (e instanceof CliError) return `${e.code}: ${e.message}`;
  if (e instanceof ConnectError) return `${codeName(e.code)}: ${e.rawMessage}`;
  if (e instanceof Error) return `internal: ${e.message}`;
  return `internal: ${String(e)}`;
}
