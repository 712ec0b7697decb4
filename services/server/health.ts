// gRPC health checking (grpc.health.v1.Health) for connect-node.
//
// Semantics follow https://github.com/grpc/grpc/blob/master/doc/health-checking.md:
// Check answers NOT_FOUND for a service name the registry does not know,
// Watch answers SERVICE_UNKNOWN for it and keeps the call open, and "" is the
// server's overall status.

import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";

/**
 * ServingStatus is grpc.health.v1 `HealthCheckResponse.ServingStatus`
 * (UNKNOWN = 0, SERVING = 1, NOT_SERVING = 2, SERVICE_UNKNOWN = 3),
 * re-exported so callers need not import gen/. SERVICE_UNKNOWN is only ever
 * sent by Watch; storing it with {@link HealthRegistry.setStatus} is rejected.
 */
export const ServingStatus = HealthCheckResponse_ServingStatus;
/** ServingStatus is the type of the {@link ServingStatus} enum values. */
export type ServingStatus = HealthCheckResponse_ServingStatus;

/**
 * MAX_SERVICE_NAME_BYTES caps the service name of Check and Watch (UTF-8
 * bytes): names are fully qualified service names (or "backend.<name>"),
 * far shorter; a longer one is INVALID_ARGUMENT, so an unknown name a
 * client makes up cannot hold kilobytes per watcher.
 */
export const MAX_SERVICE_NAME_BYTES = 256;

/** checkServiceName throws ConnectError InvalidArgument for a service name over MAX_SERVICE_NAME_BYTES. */
function checkServiceName(service: string): void {
  // A UTF-16 unit is at most 3 UTF-8 bytes: count only when it could be over.
  if (service.length * 3 <= MAX_SERVICE_NAME_BYTES) return;
  const bytes = Buffer.byteLength(service, "utf8");
  if (bytes > MAX_SERVICE_NAME_BYTES) {
    throw new ConnectError(`service name is ${bytes} bytes; at most ${MAX_SERVICE_NAME_BYTES} (a fully qualified service name)`, Code.InvalidArgument);
  }
}

/** OVERALL is the service name ("") under which the server's overall health is kept. */
export const OVERALL = "";

interface Watcher {
  /** Latest status not yet handed to the consumer (older ones are overwritten). */
  pending: ServingStatus | undefined;
  /** Resolves the consumer's pending wait, if it is waiting. */
  wake: (() => void) | undefined;
  /** Ends the watch (abort, close, or the consumer returned). */
  done: boolean;
}

/**
 * HealthRegistry holds one serving status per service name ("" = the overall
 * server status) and notifies watchers on every change.
 *
 * Guarantees:
 * - A new registry knows only "" (status SERVING unless `initial` says
 *   otherwise); other names are unknown until {@link setStatus} is called.
 * - Watchers see the current status at once and then each change, coalesced:
 *   a slow watcher keeps only the latest unseen status (bounded memory, as in
 *   grpc-go), never a status equal to the one it saw last.
 * - After {@link shutdown} every known service is NOT_SERVING and
 *   {@link setStatus} is ignored until {@link resume}.
 * - After {@link close} every open watch ends (the RPC completes with OK,
 *   after which gRPC clients retry) and new watches end after their first
 *   message; use it to let the HTTP/2 server drain.
 */
export class HealthRegistry {
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #watchers = new Map<string, Set<Watcher>>();
  #shutDown = false;
  #closed = false;

  /**
   * Creates a registry. `initial` maps service names to statuses; when it has
   * no "" entry the overall status starts as SERVING.
   */
  constructor(initial: Readonly<Record<string, ServingStatus>> = {}) {
    this.#statuses.set(OVERALL, ServingStatus.SERVING);
    for (const [service, status] of Object.entries(initial)) {
      this.setStatus(service, status);
    }
  }

  /**
   * setStatus records `status` for `service` ("" = overall) and notifies its
   * watchers if it changed. Ignored (returns false) after {@link shutdown};
   * otherwise returns true. Throws RangeError for SERVICE_UNKNOWN, which is
   * not a status a service can have.
   */
  setStatus(service: string, status: ServingStatus): boolean {
    if (status === ServingStatus.SERVICE_UNKNOWN) {
      throw new RangeError("SERVICE_UNKNOWN is reserved for Watch and cannot be stored");
    }
    if (this.#shutDown) return false;
    this.#set(service, status);
    return true;
  }

  /**
   * clearStatus forgets `service`: Check then answers NOT_FOUND and watchers
   * get SERVICE_UNKNOWN. Ignored after {@link shutdown}. Returns whether the
   * service was known.
   */
  clearStatus(service: string): boolean {
    if (this.#shutDown || !this.#statuses.delete(service)) return false;
    this.#notify(service, ServingStatus.SERVICE_UNKNOWN);
    return true;
  }

  /** getStatus returns the stored status of `service`, or undefined if it is unknown. */
  getStatus(service: string): ServingStatus | undefined {
    return this.#statuses.get(service);
  }

  /** list returns a snapshot of every known service and its status (including ""). */
  list(): Map<string, ServingStatus> {
    return new Map(this.#statuses);
  }

  /**
   * shutdown sets every known service (including "") to NOT_SERVING, notifies
   * watchers, and freezes statuses until {@link resume}. Idempotent. Watch
   * streams stay open; call {@link close} once draining is over.
   */
  shutdown(): void {
    if (this.#shutDown) return;
    for (const service of this.#statuses.keys()) {
      this.#set(service, ServingStatus.NOT_SERVING);
    }
    this.#shutDown = true;
  }

  /**
   * resume undoes {@link shutdown}: every known service becomes SERVING and
   * {@link setStatus} works again. No-op when not shut down.
   */
  resume(): void {
    if (!this.#shutDown) return;
    this.#shutDown = false;
    for (const service of this.#statuses.keys()) {
      this.#set(service, ServingStatus.SERVING);
    }
  }

  /** isShutDown is true between {@link shutdown} and {@link resume}. */
  get isShutDown(): boolean {
    return this.#shutDown;
  }

  /**
   * close ends every open watch and makes later watches end after their first
   * message. Irreversible; statuses stay readable.
   */
  close(): void {
    this.#closed = true;
    for (const set of this.#watchers.values()) {
      for (const w of set) {
        w.done = true;
        w.wake?.();
      }
    }
    this.#watchers.clear();
  }

  /** watcherCount is the number of open watches (for tests and metrics). */
  get watcherCount(): number {
    let n = 0;
    for (const set of this.#watchers.values()) n += set.size;
    return n;
  }

  /**
   * watch yields the status of `service` at once (SERVICE_UNKNOWN if unknown)
   * and then every change, until `signal` aborts, {@link close} is called, or
   * the consumer stops iterating. Never yields the same status twice in a
   * row. On abort it deregisters at once, even if the consumer never resumes.
   */
  async *watch(service: string, signal?: AbortSignal): AsyncGenerator<ServingStatus, void, undefined> {
    if (signal?.aborted) return;
    const w: Watcher = { pending: this.#effective(service), wake: undefined, done: false };
    let set = this.#watchers.get(service);
    if (!this.#closed) {
      if (set === undefined) {
        set = new Set();
        this.#watchers.set(service, set);
      }
      set.add(w);
    }
    const onAbort = () => {
      w.done = true;
      this.#removeWatcher(service, w);
      w.wake?.();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    let last: ServingStatus | undefined;
    try {
      for (;;) {
        if (w.pending !== undefined) {
          const status = w.pending;
          w.pending = undefined;
          if (status !== last) {
            last = status;
            yield status;
          }
          continue;
        }
        if (w.done || this.#closed || signal?.aborted) return;
        await new Promise<void>((resolve) => {
          w.wake = resolve;
        });
        w.wake = undefined;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.#removeWatcher(service, w);
    }
  }

  #effective(service: string): ServingStatus {
    return this.#statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
  }

  #set(service: string, status: ServingStatus): void {
    const before = this.#statuses.get(service);
    this.#statuses.set(service, status);
    if (before !== status) this.#notify(service, status);
  }

  #notify(service: string, status: ServingStatus): void {
    const set = this.#watchers.get(service);
    if (set === undefined) return;
    for (const w of set) {
      w.pending = status;
      w.wake?.();
    }
  }

  #removeWatcher(service: string, w: Watcher): void {
    const set = this.#watchers.get(service);
    if (set === undefined) return;
    set.delete(w);
    if (set.size === 0) this.#watchers.delete(service);
  }
}

/**
 * healthRoutes registers grpc.health.v1.Health on `router`, backed by
 * `registry`:
 * - Check: the stored status; NOT_FOUND (ConnectError) for an unknown name.
 *   Check and Watch answer INVALID_ARGUMENT for a name over
 *   MAX_SERVICE_NAME_BYTES.
 * - List: every known service with its status (a non-atomic snapshot is allowed
 *   by the spec; this one is atomic).
 * - Watch: server stream with the current status at once (SERVICE_UNKNOWN for
 *   an unknown name, the call stays open) and each change; ends when the
 *   client cancels (handler context `signal`) or {@link HealthRegistry.close}.
 * Requires no authentication; put it behind the auth interceptor's allow list.
 * (Open Watch calls count against the front door's MAX_OPEN_CALLS_WITHOUT_TOKEN.)
 */
export function healthRoutes(router: ConnectRouter, registry: HealthRegistry): ConnectRouter {
  return router.service(Health, {
    check(req) {
      checkServiceName(req.service);
      const status = registry.getStatus(req.service);
      if (status === undefined) {
        throw new ConnectError(`unknown service ${JSON.stringify(req.service)}`, Code.NotFound);
      }
      return { status };
    },
    list() {
      const statuses: Record<string, { status: ServingStatus }> = {};
      for (const [service, status] of registry.list()) {
        statuses[service] = { status };
      }
      return { statuses };
    },
    async *watch(req, ctx) {
      checkServiceName(req.service);
      for await (const status of registry.watch(req.service, ctx.signal)) {
        yield { status };
      }
    },
  });
}
