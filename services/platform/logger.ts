import { pino } from "pino";
import type { Config } from "./config.js";

/** Logger is the structured logger passed to every component that logs (core never does). */
export type Logger = pino.Logger;

/**
 * createLogger writes JSON lines to stdout. Levels: error = the server
 * failed a request or lost a backend; warn = a client or peer misbehaved or
 * a limit was hit; info = lifecycle (start, stop, listen); debug = each
 * handled error. Any field that could hold a secret is redacted.
 */
export function createLogger(level: Config["logLevel"]): Logger {
  return pino({
    level,
    base: { service: "chat" },
    redact: {
      paths: ["password", "token", "accessToken", "refreshToken", "authorization", "*.password", "*.token", "*.authorization"],
      censor: "[redacted]",
    },
  });
}
