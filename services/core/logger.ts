/**
 * Logger is the structured logger every layer above core is handed (the part of pino's shape they use):
 * `logger.warn({ err, rpc }, "message")` or `logger.info("message")`. Levels: error = the server failed a request
 * or lost a backend; warn = a client or peer misbehaved or a limit was hit; info = lifecycle; debug = each handled
 * error. Core itself never logs; server/logger.ts makes the process's one (pino, secrets redacted).
 */
export interface Logger {
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
}

/** LogFn writes one line: fields and a message, or a message alone. */
export interface LogFn {
  (fields: object, message?: string): void;
  (message: string): void;
}
