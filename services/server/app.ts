import { mkdir } from "node:fs/promises";
import type http from "node:http";
import type http2 from "node:http2";
import type net from "node:net";
import { hostname } from "node:os";
import { type Code, createContextValues } from "@connectrpc/connect";
import { AuthService as AuthServiceDesc } from "../../gen/chat/v1/auth_service_pb.js";
import { GroupService as GroupServiceDesc } from "../../gen/chat/v1/group_service_pb.js";
import { MessageService as MessageServiceDesc } from "../../gen/chat/v1/message_service_pb.js";
import { NotificationService as NotificationServiceDesc } from "../../gen/chat/v1/notification_service_pb.js";
import { StreamService as StreamServiceDesc } from "../../gen/chat/v1/stream_service_pb.js";
import { AccessTokens } from "../auth/access-tokens.js";
import { AuthService } from "../auth/auth-service.js";
import { Fanout } from "../core/fanout.js";
import { newId } from "../core/ids.js";
import type { Logger } from "../core/logger.js";
import { Membership } from "../core/membership.js";
import { type Clock, systemClock } from "../core/ports.js";
import { PresenceReporter } from "../delivery/presence-reporter.js";
import { StreamHub } from "../delivery/stream-hub.js";
import { streamOpenRequestBytes } from "../delivery/stream-limits.js";
import { GroupService } from "../group/group-service.js";
import { MessageService } from "../message/message-service.js";
import { DeviceRegistry } from "../notifier/device-registry.js";
import { authRoutes } from "../rpc/auth-rpc.js";
import { groupRoutes } from "../rpc/group-rpc.js";
import { authInterceptor, errorInterceptor, kClientAddress, kPrincipal, sendResultInterceptor } from "../rpc/interceptors.js";
import { messageRoutes } from "../rpc/message-rpc.js";
import { notificationRoutes } from "../rpc/notification-rpc.js";
import { streamRoutes } from "../rpc/stream-rpc.js";
import { createConnectAdapter } from "../wire/connect-adapter.js";
import { CONNECT_RPC } from "../wire/framed-connect.js";
import { messageFastRoutes } from "../wire/framed-message-routes.js";
import { SUBSCRIBE_RPC } from "../wire/framed-subscribe.js";
import { createFrontDoor } from "../wire/front-door.js";
import { refuseSocket } from "../wire/refuse-socket.js";
import { wsSubscribeServer } from "../wire/ws-subscribe.js";
import { BackendWatch } from "./backend-watch.js";
import { openBackends } from "./backends.js";
import type { Config, ServiceName } from "./config.js";
import { HealthRegistry, ServingStatus, healthRoutes } from "./health.js";
import { createLogger } from "./logger.js";
import { AppMetrics, isMetricsRequest, serveMetrics } from "./metrics.js";
import { type RunningNotifier, startNotifier } from "./notifier-wiring.js";
import { type OnePortServer, listenOnePort } from "./one-port-server.js";
import { reflectionRoutes } from "./reflection.js";
import { type StaticFiles, loadStaticFiles } from "./static-files.js";
import { readTlsFiles } from "./tls-files.js";

/** SERVICE_DESCS maps each service name to its chat.v1 service. */
const SERVICE_DESCS = {
  auth: AuthServiceDesc,
  group: GroupServiceDesc,
  message: MessageServiceDesc,
  stream: StreamServiceDesc,
  notify: NotificationServiceDesc,
} as const;

/** App is a running server process. */
export interface App {
  readonly port: number;
  readonly config: Config;
  readonly hub: StreamHub;
  readonly health: HealthRegistry;
  /** metrics is this app's Prometheus registry, served at GET /metrics on the app's port. */
  readonly metrics: AppMetrics;
  /**
   * stop shuts down gracefully: health goes NOT_SERVING, live streams end
   * with UNAVAILABLE (clients reconnect and resume), in-flight calls get up
   * to config.shutdownGraceMs to finish, then the stores close.
   */
  stop(): Promise<void>;
}

/** AppOptions lets tests replace the clock and the logger. */
export interface AppOptions {
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** startApp wires the embedded adapters and all services into one process and listens on config.port. */
export async function startApp(config: Config, options: AppOptions = {}): Promise<App> {
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? createLogger(config.logLevel);
  // Read before anything opens: a missing or bad certificate stops the start with nothing to undo.
  const tls = config.tls ? await readTlsFiles(config.tls) : undefined;
  // The web app (web/public/, docs/web-app.md) at "/" and "/assets/"; a checkout without the built files serves none.
  const webApp: StaticFiles | undefined = config.webApp
    ? await loadStaticFiles().catch((err: unknown) => void logger.warn({ err }, "web app not built (npm run build:web); / is not served"))
    : undefined;
  await mkdir(config.dataDir, { recursive: true });
  // The metrics are made once the backends are open; until then a commit has nowhere to be counted.
  let onStoreCommit: ((seconds: number) => void) | undefined;
  const backends = await openBackends(config, clock, logger, { onStoreCommit: (seconds) => onStoreCommit?.(seconds) });
  const { store, bus, cache, recent, presence, limiter } = backends;
  const serves = (name: ServiceName) => config.services.includes(name);
  const served = config.services.map((name) => SERVICE_DESCS[name]);
  const tokenSettings = { issuer: config.jwt.issuer, audience: config.jwt.audience, ttlMs: config.accessTokenTtlMs };
  // Only the auth service holds the signing key; the others verify with its JWKS.
  const tokens =
    serves("auth") || config.authJwksUrl === undefined
      ? await AccessTokens.load(config.jwt.keyFile, tokenSettings)
      : AccessTokens.remote(config.authJwksUrl, tokenSettings);
  const fanout = new Fanout(
    bus,
    (err, step) =>
      step === "publish"
        ? logger.warn({ err }, "publish failed; subscribers repair from the store")
        : logger.debug({ err }, "recording a recent message failed; history reads use the store"),
    recent,
  );
  const membership = new Membership(store, cache, (err) => logger.debug({ err }, "membership cache failed; using the store"));
  const auth = new AuthService({
    store,
    tokens,
    limiter,
    fanout,
    clock,
    settings: {
      refreshTtlMs: config.refreshTokenTtlMs,
      refreshReuseGraceMs: config.refreshReuseGraceMs,
      loginPerUsername: { burst: config.loginAttemptsPerMinute, perSecond: config.loginAttemptsPerMinute / 60 },
      loginPerAddress: { burst: config.loginAttemptsPerMinutePerAddress, perSecond: config.loginAttemptsPerMinutePerAddress / 60 },
      registerPerAddress: { burst: config.registrationsPerMinutePerAddress, perSecond: config.registrationsPerMinutePerAddress / 60 },
    },
  });
  const groups = new GroupService({
    store,
    membership,
    fanout,
    presence,
    onPresenceError: (err) => logger.debug({ err }, "presence unavailable; member list says nobody is online"),
    clock,
    settings: { maxMembers: config.maxGroupMembers, maxGroupsPerUser: config.maxGroupsPerUser },
  });
  const devices = new DeviceRegistry({
    store,
    membership,
    clock,
    settings: { maxDevices: config.maxDevicesPerUser, endpointPolicy: { allowPrivate: config.push.allowPrivateEndpoints } },
  });
  // Only stream processes hold streams; each reports its users under its own holder name.
  const presenceReporter = serves("stream")
    ? new PresenceReporter(presence, {
        holder: `${hostname()}-${process.pid}-${newId()}`,
        ttlMs: config.presenceTtlMs,
        onError: (err) => logger.debug({ err }, "presence update failed; the next refresh retries"),
      })
    : undefined;
  const metrics = new AppMetrics();
  onStoreCommit = (seconds) => metrics.storeCommit(seconds);
  const messages = new MessageService({
    store,
    membership,
    fanout,
    recent,
    limiter,
    onCacheError: (err) => logger.debug({ err }, "recent-messages cache failed; using the store"),
    onHistoryPage: (source) => metrics.historyPage(source),
    onAppend: (seconds) => metrics.sendAppend(seconds),
    clock,
    settings: {
      maxTextBytes: config.maxTextBytes,
      sendsPerUser: { burst: config.sendBurst, perSecond: config.sendsPerSecond },
      maxSendsInFlight: config.sendMaxInFlight,
    },
  });
  metrics.countSendsWith({ inFlight: () => messages.sendsInFlight, shed: () => messages.sendsShed });
  const onStreamSend = (code: Code | undefined) => metrics.sendResult("stream", code);
  const hub = new StreamHub({
    store,
    bus,
    clock,
    metrics: metrics.hub,
    ...(presenceReporter ? { presence: presenceReporter } : {}),
    settings: { heartbeatMs: config.heartbeatMs, bufferMaxBytes: config.streamBufferBytes, catchUpBatch: 500 },
  });
  metrics.countStreamsWith(() => hub.size);
  const health = new HealthRegistry();
  // Health: "backend.<name>" per remote backend; the process and its services
  // are NOT_SERVING while a critical backend (store, bus) is unreachable.
  const backendWatch = new BackendWatch(logger);
  const reportHealth = () => {
    let serving = true;
    for (const check of backends.checks) {
      const up = backendWatch.report(check);
      health.setStatus(`backend.${check.name}`, up ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
      if (!up && check.critical) serving = false;
    }
    const status = serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
    for (const name of ["", ...served.map((s) => s.typeName)]) health.setStatus(name, status);
  };
  reportHealth();
  const healthTimer = setInterval(reportHealth, 1000);
  healthTimer.unref();

  // connect-node serves every route but the fast paths', behind the front door (wire/front-door.ts), which reads the bodies.
  const rpc = createConnectAdapter({
    logger,
    // The largest request is a stream's opening message (MAX_CURSORS cursors); the front door caps every read body per method.
    readMaxBytes: streamOpenRequestBytes(config.maxRequestBytes),
    // No compression, as on the fast paths: gzip of a history page cost more CPU than the rest of the call, and
    // the payloads are small. Compressed requests are refused with a clear status; clients fall back to identity.
    acceptCompression: [],
    interceptors: [
      sendResultInterceptor((code) => metrics.sendResult("rpc", code)), // SendMessage over Connect unary or JSON
      errorInterceptor(logger),
      authInterceptor(tokens, clock),
    ],
    routes: (router) => {
      if (serves("auth")) authRoutes(router, auth);
      if (serves("group")) groupRoutes(router, groups);
      if (serves("message")) messageRoutes(router, messages);
      if (serves("stream")) streamRoutes(router, hub, messages, onStreamSend);
      if (serves("notify")) notificationRoutes(router, devices);
      healthRoutes(router, health);
      reflectionRoutes(router, { services: served, idleTimeoutMs: config.reflectionIdleTimeoutMs });
    },
  });
  const notAMethod = (req: AnyRequest, res: AnyResponse) => {
    if (req.method === "GET" && req.url === "/.well-known/jwks.json" && serves("auth")) {
      const body = JSON.stringify(tokens.jwks());
      res.writeHead(200, { "content-type": "application/json", "cache-control": "public, max-age=300" });
      res.end(body);
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found\n");
  };

  const retention = setInterval(() => {
    store.purgeExpired().then(
      (n) => n > 0 && logger.info({ purged: n }, "expired events purged"),
      (err: unknown) => logger.error({ err }, "retention purge failed"),
    );
  }, Math.min(config.retentionMs, 3_600_000));
  retention.unref();
  await store.purgeExpired();

  let server: OnePortServer;
  let notifier: RunningNotifier | undefined;
  try {
    // The push worker (docs/notifications.md) runs where "notify" is served, on the backends' event feed.
    if (serves("notify")) notifier = await startNotifier({ config, store, feed: backends.feed, presence, clock, logger, metrics });
    const fastPath = { hub, tokens, clock, logger, messages, maxRequestBytes: config.maxRequestBytes, onStreamSend };
    const sendResult = (code: Code | undefined) => metrics.sendResult("rpc", code);
    // Every method's call passes the front door: token first, then its body within bounds, then a fast path
    // (hot unary RPCs over gRPC / gRPC-Web, the streams with the binary codec) or connect-node.
    const frontDoor = createFrontDoor({
      adapter: rpc,
      tokens,
      clock,
      logger,
      maxRequestBytes: config.maxRequestBytes,
      // MAX_CURSORS cursors fit in a stream's opening message: Subscribe's only message, Connect's first (its sends
      // and acks after it keep MAX_REQUEST_BYTES, on the fast path and through connect-node alike).
      requestBytes: { [SUBSCRIBE_RPC]: streamOpenRequestBytes(config.maxRequestBytes) },
      openingRequestBytes: { [CONNECT_RPC]: streamOpenRequestBytes(config.maxRequestBytes) },
      requestBodyTimeoutMs: config.requestBodyTimeoutMs,
      unauthenticatedBodyBytes: config.unauthenticatedBodyBytes,
      maxOpenCallsWithoutToken: config.maxOpenCallsWithoutToken,
      contextValues: (req, principal) =>
        createContextValues().set(kClientAddress, clientAddress(req, config.trustProxy)).set(kPrincipal, principal),
      unaryRoutes: serves("message") ? messageFastRoutes(messages, sendResult) : [],
      fastUnary: { logger },
      streams: serves("stream") ? fastPath : undefined,
      onRefused: (rpc, code) => rpc === "chat.v1.MessageService/SendMessage" && sendResult(code),
      fallback: notAMethod,
    });
    const api = withCors(frontDoor);
    const serving = () => health.getStatus("") === ServingStatus.SERVING;
    // GET /metrics and GET /readyz on every process, outside CORS: a scraper or a proxy's health check is no browser;
    // the web app's GET / and /assets/ too (same-origin pages).
    const handler = (req: AnyRequest, res: AnyResponse) => {
      if (isMetricsRequest(req.url)) return serveMetrics(metrics, req, res, (err) => logger.error({ err }, "metrics collection failed"));
      if (req.url === READY_PATH) return serveReady(serving(), req, res);
      if (webApp?.handles(req)) return webApp.serve(req, res);
      api(req, res);
    };
    // Subscribe and Connect over WebSocket (wire/ws-*.ts) on processes that serve streams, while serving (not while
    // shutting down or cut off from a critical backend: the client goes to another instance); other upgrades get 404.
    const ws = serves("stream") ? wsSubscribeServer(fastPath) : undefined;
    const onWebSocket = (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      if (!ws) refuseSocket(socket, 404, "this process serves no streams");
      else if (!serving()) refuseSocket(socket, 503, "not serving (shutting down or a backend is unreachable); connect to another instance");
      else ws.handleUpgrade(req, socket, head);
    };
    server = await listenOnePort({
      host: config.host,
      port: config.port,
      handler,
      onWebSocket,
      logger,
      maxStreamsPerConnection: config.maxStreamsPerConnection,
      sessionIdleTimeoutMs: config.http2IdleTimeoutMs,
      requestBodyTimeoutMs: config.requestBodyTimeoutMs,
      tls,
    });
  } catch (e) {
    clearInterval(retention);
    clearInterval(healthTimer);
    hub.shutdown();
    await presenceReporter?.stop();
    await notifier?.stop(0);
    metrics.close();
    await backends.close();
    throw e;
  }
  logger.info({ host: config.host, port: server.port, tls: tls !== undefined, services: config.services, dataDir: config.dataDir }, "chat server listening");

  let stopping: Promise<void> | undefined;
  return {
    port: server.port,
    config,
    hub,
    health,
    metrics,
    stop: () => {
      stopping ??= (async () => {
        logger.info("shutting down");
        clearInterval(healthTimer);
        health.shutdown();
        hub.shutdown();
        await presenceReporter?.stop();
        health.close();
        clearInterval(retention);
        // The notifier flushes its open windows while in-flight calls finish; both before the backends close.
        const notifierStopped = notifier?.stop(config.shutdownGraceMs);
        await server.close(config.shutdownGraceMs);
        await notifierStopped;
        metrics.close();
        await backends.close();
        logger.info("stopped");
      })();
      return stopping;
    },
  };
}

type AnyRequest = http.IncomingMessage | http2.Http2ServerRequest;
type AnyResponse = http.ServerResponse | http2.Http2ServerResponse;

/** READY_PATH answers 200 while the process is SERVING (gRPC health ""), else 503: a readiness check for HTTP/1.1-only checkers. */
export const READY_PATH = "/readyz";

function serveReady(ready: boolean, req: AnyRequest, res: AnyResponse): void {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" });
    res.end("use GET\n");
    return;
  }
  res.writeHead(ready ? 200 : 503, { "content-type": "text/plain", "cache-control": "no-store" });
  res.end(ready ? "ready\n" : "not serving\n");
}

/**
 * clientAddress is the socket's peer address or, behind a trusted proxy,
 * the last X-Forwarded-For hop: the one the proxy appended. Earlier hops are
 * whatever the client sent and prove nothing.
 */
function clientAddress(req: AnyRequest, trustProxy: boolean): string {
  if (trustProxy) {
    const header = req.headers["x-forwarded-for"];
    const joined = Array.isArray(header) ? header.join(",") : header;
    const last = joined?.split(",").at(-1)?.trim();
    if (last) return last;
  }
  return req.socket?.remoteAddress ?? "unknown";
}

/**
 * CORS_HEADERS are the CORS answer headers for browsers. A page may send
 * `x-request-id` (honoured when well-formed, see rpc/call-log.ts) and read
 * it back, with the status and the retry hint. envoy/envoy.yaml's cors
 * policy lists the same headers (test/e2e/cors.spec.ts compares them).
 */
export const CORS_HEADERS = {
  "access-control-allow-origin": "*",
  "access-control-allow-methods": "GET, POST, OPTIONS",
  "access-control-allow-headers":
    "authorization, content-type, connect-protocol-version, connect-timeout-ms, grpc-timeout, x-grpc-web, x-user-agent, x-request-id",
  "access-control-expose-headers": "grpc-status, grpc-message, grpc-status-details-bin, retry-after, x-request-id",
  "access-control-max-age": "7200",
} as const;

/**
 * withCors lets browsers on any origin call the API (gRPC-Web and Connect).
 * Credentials are bearer tokens, never cookies, so a wildcard origin grants
 * nothing a page could not do with its own token.
 */
function withCors(handler: (req: AnyRequest, res: AnyResponse) => void): (req: AnyRequest, res: AnyResponse) => void {
  return (req, res) => {
    if (req.headers.origin === undefined) return handler(req, res);
    for (const [k, v] of Object.entries(CORS_HEADERS)) res.setHeader(k, v);
    if (req.method === "OPTIONS") {
      res.writeHead(204);
      res.end();
      return;
    }
    handler(req, res);
  };
}
