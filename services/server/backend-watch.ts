import type { Logger } from "../core/logger.js";

/** BackendProbe is one remote backend's health check (see backends.ts BackendCheck). */
export interface BackendProbe {
  readonly name: string;
  healthy(): boolean;
}

/** SLOW_START_REPORTS is how many reports a backend may stay down from the start before that is worth a warning. */
export const SLOW_START_REPORTS = 5;

/**
 * BackendWatch turns a backend's health, read once per report, into log
 * lines that mean something to an operator:
 * - the first connection after start is info ("backend reachable"): a
 *   client still connecting at the first report is no incident;
 * - a backend that is still down at report SLOW_START_REPORTS (one report a
 *   second: 5 s) gets one warning ("backend unreachable since start");
 * - a backend that was up and is lost is a warning ("backend unreachable"),
 *   and one that comes back after a loss is a warning too ("backend
 *   reachable again"), so both ends of an outage show at the same level.
 * Each state change is logged once; nothing is logged while it holds.
 */
export class BackendWatch {
  private readonly state = new Map<string, { up: boolean; everUp: boolean; reports: number }>();

  constructor(private readonly logger: Logger) {}

  /** report reads `probe` once, logs a change as above, and returns whether the backend is up. */
  report(probe: BackendProbe): boolean {
    const up = probe.healthy();
    const fields = { backend: probe.name, up };
    const s = this.state.get(probe.name);
    if (!s) {
      this.state.set(probe.name, { up, everUp: up, reports: 1 });
      return up;
    }
    s.reports++;
    if (up !== s.up) {
      if (up && !s.everUp) this.logger.info(fields, "backend reachable");
      else if (up) this.logger.warn(fields, "backend reachable again");
      else this.logger.warn(fields, "backend unreachable");
    } else if (!up && !s.everUp && s.reports === SLOW_START_REPORTS) {
      this.logger.warn(fields, "backend unreachable since start");
    }
    s.up = up;
    s.everUp ||= up;
    return up;
  }
}
