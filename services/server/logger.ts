import { pino } from "pino";
import type { Logger } from "../core/logger.js";
import type { Config } from "./config.js";

/**
 * createLogger writes JSON lines to stdout. Levels: error = the server
 * failed a request or lost a backend; warn = a client or peer misbehaved or
 * a limit was hit; info = lifecycle (start, stop, listen); debug = each
 * handled error. Any field that could hold a secret is redacted. What it
 * returns is the Logger every layer is handed (core/logger.ts).
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
