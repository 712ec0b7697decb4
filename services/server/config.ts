import { resolve } from "node:path";
import { parseCassandraUrl } from "../adapters/jetstream-cassandra/cassandra-url.js";
import { MAX_CURSORS } from "../delivery/stream-limits.js";

/**
 * Config is every setting of a server process, validated and frozen. It is
 * built once from the environment by loadConfig; nothing else reads
 * process.env.
 */
export interface Config {
  readonly host: string;
  readonly port: number;
  /** The services this process serves (all four by default). */
  readonly services: readonly ServiceName[];
  /** Where processes without the auth service fetch the token-signing keys. */
  readonly authJwksUrl: string | undefined;
  readonly dataDir: string;
  readonly storeUrl: string;
  /** Create the Cassandra keyspace and apply pending migrations at start (cassandra:// stores only). */
  readonly migrate: boolean;
  readonly busUrl: string;
  readonly cacheUrl: string;
  /** Prefix of every shared name (Redis keys, NATS subjects) so deployments and test runs never collide. */
  readonly namespace: string;
  readonly logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  readonly jwt: { readonly issuer: string; readonly audience: string; readonly keyFile: string };
  readonly accessTokenTtlMs: number;
  readonly refreshTokenTtlMs: number;
  /** How long a used refresh token gets its same answer again instead of revoking the session (REFRESH_REUSE_GRACE; 0 = never). */
  readonly refreshReuseGraceMs: number;
  readonly retentionMs: number;
  readonly maxTextBytes: number;
  readonly maxRequestBytes: number;
  /** How long a request body may take to arrive, from the request's headers on; past it the call is refused and its memory released. */
  readonly requestBodyTimeoutMs: number;
  /** Most concurrent HTTP/2 streams (calls) per connection. */
  readonly maxStreamsPerConnection: number;
  /** How long an HTTP/2 connection may have no open stream before the server closes it (GOAWAY). */
  readonly http2IdleTimeoutMs: number;
  /** Bytes of request bodies of calls without a verified token (public methods, health, reflection) buffered at once per process. */
  readonly unauthenticatedBodyBytes: number;
  /** Calls without a token that stay open (health Watch, reflection streams) at once per process; past it RESOURCE_EXHAUSTED with retry-after. */
  readonly maxOpenCallsWithoutToken: number;
  /** How long a reflection stream may go without a request before it ends with DEADLINE_EXCEEDED. */
  readonly reflectionIdleTimeoutMs: number;
  readonly maxGroupMembers: number;
  /** The most groups one user may be in; at most MAX_CURSORS, so one Subscribe can resume all of them. */
  readonly maxGroupsPerUser: number;
  /** Replicas of the JetStream timeline stream (TIMELINE_REPLICAS): 3 in production (an ack is then on a quorum of three nats-servers). */
  readonly timelineReplicas: number;
  /** Linger of the timeline's publishes (TIMELINE_PUBLISH_LINGER), ms: under load a send waits up to this long so that sends reach NATS in bursts (fewer raft rounds). */
  readonly timelinePublishLingerMs: number;
  /** How a stream process listens to groups' events on NATS (BUS_GROUP_SUBSCRIPTIONS): a subscription per group, or one for all. */
  readonly busGroupSubscriptions: "each" | "shared";
  /** Sustained sends per user per second, and the burst allowed above it. */
  readonly sendsPerSecond: number;
  readonly sendBurst: number;
  /** Sends one process works on at once; past it SendMessage is RESOURCE_EXHAUSTED with a retry hint. */
  readonly sendMaxInFlight: number;
  /** Newest messages per group kept for history reads by the recent-messages cache. */
  readonly recentMessagesPerGroup: number;
  /** V8's heap growing percent (HEAP_GROWING_PERCENT): how far the old generation may grow past its live size after a full collection; 0 = V8's own choice. */
  readonly heapGrowingPercent: number;
  /** How long a process's presence entries live unrefreshed (after a crash, its users look online this long). */
  readonly presenceTtlMs: number;
  readonly heartbeatMs: number;
  readonly streamBufferBytes: number;
  readonly loginAttemptsPerMinute: number;
  readonly loginAttemptsPerMinutePerAddress: number;
  readonly registrationsPerMinutePerAddress: number;
  readonly trustProxy: boolean;
  /** Serve the web app (web/public/) at / and /assets/ (WEB_APP, default true). */
  readonly webApp: boolean;
  readonly shutdownGraceMs: number;
  /** How long the notifier collects a group's messages before it decides its pushes (NOTIFY_WINDOW): one push per (user, group) per window. */
  readonly notifyWindowMs: number;
  /** Events one notifier process holds unacknowledged (in open windows and flushes) at once (NOTIFY_MAX_PENDING). */
  readonly notifyMaxPending: number;
  /** Push devices one user may register (MAX_DEVICES_PER_USER). */
  readonly maxDevicesPerUser: number;
  /** Push providers and how pushes are sent (see {@link PushConfig}). */
  readonly push: PushConfig;
  /** TLS on the port (see {@link TlsConfig}); undefined = cleartext (the default). */
  readonly tls: TlsConfig | undefined;
}

/**
 * TlsConfig is the port's certificate chain and private key, PEM files
 * (TLS_CERT_FILE, TLS_KEY_FILE; both or neither). Paths are absolute; the
 * files are read once when the server starts (server/app.ts), and one that
 * is unreadable or not a matching certificate and key stops the start.
 */
export interface TlsConfig {
  readonly certFile: string;
  readonly keyFile: string;
}

/**
 * PushConfig is how the notifier reaches the push services. A provider is
 * enabled only when its credentials are configured (undefined = disabled:
 * its devices get no pushes, counted as failed with reason
 * "not_configured"). Paths are absolute; the files are read when the
 * notifier starts (server/notifier-wiring.ts), and a bad file stops the start.
 */
export interface PushConfig {
  /** Test-only: let Web Push endpoints and provider URLs be http:// and loopback/private addresses (PUSH_ALLOW_PRIVATE_ENDPOINTS). */
  readonly allowPrivateEndpoints: boolean;
  /** A PEM file of extra CA certificates trusted for the providers' TLS (PUSH_CA_FILE), e.g. a test's own CA. */
  readonly caFile: string | undefined;
  /** How long one delivery attempt may take (PUSH_TIMEOUT). */
  readonly timeoutMs: number;
  /** How long a push service keeps an undelivered push for an offline device (PUSH_TTL), in seconds: Web Push TTL, APNs apns-expiration. */
  readonly ttlSeconds: number;
  /** Delivery attempts per push and device, the first included (PUSH_MAX_ATTEMPTS). */
  readonly maxAttempts: number;
  /** Base of the exponential backoff between attempts (PUSH_RETRY_BASE); each wait is random in [0, base * 2^retry] (full jitter) unless the service said Retry-After. */
  readonly retryBaseMs: number;
  /** No attempt starts later than this after the first (PUSH_RETRY_WINDOW); a Retry-After beyond it gives up. */
  readonly retryWindowMs: number;
  readonly webPush: WebPushConfig | undefined;
  readonly fcm: FcmConfig | undefined;
  readonly apns: ApnsConfig | undefined;
}

/** WebPushConfig is the VAPID identity (RFC 8292): the keys inline (base64url) or in a JSON file `{"publicKey", "privateKey"}`. */
export interface WebPushConfig {
  /** mailto: or https: contact of the sender, in the VAPID JWT's `sub`. */
  readonly subject: string;
  readonly publicKey: string | undefined;
  readonly privateKey: string | undefined;
  readonly keyFile: string | undefined;
}

/** FcmConfig is the FCM HTTP v1 sender: a service account (JSON with client_email, private_key, token_uri) exchanged for OAuth2 tokens. */
export interface FcmConfig {
  /** FCM_PROJECT_ID, or the service account's project_id when unset. */
  readonly projectId: string | undefined;
  readonly serviceAccountFile: string;
  /** FCM_TOKEN_URL, or the service account's token_uri when unset. */
  readonly tokenUrl: string | undefined;
  readonly baseUrl: string;
}

/** ApnsConfig is the APNs HTTP/2 sender with token authentication (an ES256 .p8 key). */
export interface ApnsConfig {
  readonly url: string;
  readonly keyId: string;
  readonly teamId: string;
  readonly keyFile: string;
}

/** SERVICE_NAMES are the services a process can serve. */
export const SERVICE_NAMES = ["auth", "group", "message", "stream", "notify"] as const;

/** ServiceName is one of SERVICE_NAMES. */
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** SETTINGS documents every environment variable (the README table is generated from the same words). */
export const SETTINGS = {
  HOST: "address to listen on (default 127.0.0.1)",
  SERVICES:
    "comma-separated services this process serves: auth, group, message, stream, notify (NotificationService and the push worker) (default all; also --services=)",
  AUTH_JWKS_URL: "JWKS of the auth service, for processes that do not serve auth (e.g. http://auth:8080/.well-known/jwks.json)",
  PORT: "port for gRPC, gRPC-Web, Connect and /.well-known/jwks.json (default 8080; 0 picks a free one)",
  TLS_CERT_FILE:
    "PEM certificate chain (the server's certificate first) to serve the port over TLS, with ALPN h2 and http/1.1; set with TLS_KEY_FILE (default none: cleartext)",
  TLS_KEY_FILE: "PEM private key of TLS_CERT_FILE's certificate; set with TLS_CERT_FILE",
  DATA_DIR: "directory for the embedded database and the JWT signing key (default ./data)",
  STORE_URL:
    "sqlite:<path> (default sqlite:<DATA_DIR>/chat.db), sqlite::memory:, or cassandra://host[:port][,host...]/keyspace[?dc=datacenter1&replication=3] (Cassandra/ScyllaDB; needs BUS_URL=nats://)",
  MIGRATE: "true to create the Cassandra keyspace and apply pending migrations at start (default true with a cassandra:// STORE_URL; npm run migrate does it alone)",
  BUS_URL: "memory: (default; in-process) or nats://host:port[,host:port] (NATS JetStream)",
  CACHE_URL: "memory: (default; in-process) or redis://host:port[/db] (membership cache and rate limits)",
  NAMESPACE: "prefix of Redis keys and NATS subjects (default chat)",
  LOG_LEVEL: "fatal, error, warn, info (default), debug, trace or silent",
  JWT_ISSUER: "iss of access tokens (default chat)",
  JWT_AUDIENCE: "aud of access tokens (default chat)",
  JWT_KEY_FILE: "Ed25519 private key as a JWK file; created on first start (default <DATA_DIR>/jwt-ed25519.jwk)",
  ACCESS_TOKEN_TTL: "lifetime of access tokens (default 15m)",
  REFRESH_TOKEN_TTL: "lifetime of refresh tokens (default 30d)",
  REFRESH_REUSE_GRACE:
    "how long after a refresh token was used presenting it again gets the same answer (its successor, if still unused, with a new access token) instead of revoking the session, so a client whose refresh answer was lost can retry; 0s = every second use revokes the session (default 60s)",
  RETENTION: "how long events are kept (default 30d)",
  MAX_TEXT_BYTES: "largest message text in UTF-8 bytes (default 4096)",
  MAX_REQUEST_BYTES: "largest request message in bytes (default 65536); a stream's opening message (a SubscribeRequest, Connect's first) may take at least 1351024 bytes, so 10000 cursors fit",
  REQUEST_BODY_TIMEOUT:
    "how long a request body may take to arrive after its headers; past it the call gets DEADLINE_EXCEEDED and its buffered bytes are released (default 10s)",
  MAX_STREAMS_PER_CONNECTION: "most concurrent calls (HTTP/2 streams) per connection; a client needs its streams plus its concurrent unary calls (default 100)",
  HTTP2_IDLE_TIMEOUT:
    "how long an HTTP/2 connection may have no call open before the server closes it with GOAWAY (NO_ERROR; clients reconnect on their next call); a connection with an open stream is never idle (default 5m)",
  UNAUTHENTICATED_BODY_BYTES:
    "request-body bytes of calls without a verified token (Register, Login, RefreshToken, health, reflection) one process buffers at once; past it such calls get RESOURCE_EXHAUSTED (default 16777216)",
  MAX_OPEN_CALLS_WITHOUT_TOKEN:
    "calls without a token that stay open (health Watch, reflection streams) one process holds at once; past it such calls get RESOURCE_EXHAUSTED with retry-after (default 1000)",
  REFLECTION_IDLE_TIMEOUT: "how long a reflection stream may go without a request; then it ends with DEADLINE_EXCEEDED (default 60s)",
  MAX_GROUP_MEMBERS: "largest group (default 1000)",
  TIMELINE_REPLICAS:
    "replicas of the JetStream timeline stream with BUS_URL=nats://: 1 (default; a lone nats-server) or 3 (production: a 3-node NATS cluster; a send's ack then means stored on a quorum of the three, docs/production.md)",
  TIMELINE_PUBLISH_LINGER:
    "with BUS_URL=nats://, the least time between two batches of the timeline's publishes: a send made sooner after the last batch waits for the next, so under load sends reach NATS in bursts that its replication handles in fewer rounds; a send after a quiet spell goes at once (0ms = no linger; default 10ms; docs/production.md, Publish linger)",
  BUS_GROUP_SUBSCRIPTIONS:
    "with BUS_URL=nats://, how a stream process listens to groups' events and users' notices: shared (default) = one NATS subscription to every group's events and one to every user's notices, those of groups and users it holds no stream of dropped unread, ~1 KB per group it follows; each = one subscription per group and user it follows, ~2 KB each, and NATS sends it only those groups' events: better when each stream process follows few of many busy groups (docs/production.md, NATS)",
  MAX_GROUPS_PER_USER: `most groups one user may be in; joining one more (CreateGroup, AddMember) gets FAILED_PRECONDITION; at most ${MAX_CURSORS}, the cursors one Subscribe carries (default 5000)`,
  SENDS_PER_SECOND: "sustained messages per user per second, across groups and processes (default 10)",
  SEND_BURST: "messages a user may send at once above the sustained rate (default 30)",
  HEAP_GROWING_PERCENT:
    "how far, in percent of what survived, V8 lets the old generation grow after a full collection before the next one: 300 (the default with a sqlite: STORE_URL) keeps the embedded server from running full collections back to back under steady load; 0 = V8's own choice, 10-300 % by how fast the process allocates (the default otherwise, where memory per connection counts; docs/performance.md, Heap growth of the embedded server)",
  SEND_MAX_IN_FLIGHT: "sends one process works on at once; past it SendMessage answers RESOURCE_EXHAUSTED with retry-after (default 1000)",
  RECENT_MESSAGES_PER_GROUP: "newest messages per group the recent-messages cache keeps for history reads (default 100)",
  PRESENCE_TTL: "how long a process's presence entries live unless refreshed (every third of it); after a crash its users look online this long (default 30s)",
  HEARTBEAT_INTERVAL: "longest silence on a stream: one that sent nothing for this long gets a heartbeat, so clients may treat twice this without any item as a dead connection (default 15s)",
  STREAM_BUFFER_BYTES: "per-stream send buffer before RESOURCE_EXHAUSTED (default 1048576)",
  LOGIN_ATTEMPTS_PER_MINUTE: "login attempts per username per minute (default 10)",
  LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS: "login attempts per client address per minute (default 60)",
  REGISTRATIONS_PER_MINUTE_PER_ADDRESS: "registrations per client address per minute (default 30)",
  TRUST_PROXY: "true to take the client address from the last X-Forwarded-For hop, appended by the trusted proxy (default false)",
  WEB_APP: "false to not serve the web app (web/public/) at / and /assets/ (default true)",
  SHUTDOWN_GRACE: "how long in-flight calls may take after SIGTERM (default 10s)",
  NOTIFY_WINDOW:
    "how long the notifier collects a group's messages before it pushes: one push per (user, group) per window, saying how many messages it stands for (default 2s)",
  NOTIFY_MAX_PENDING: "group events one notifier process holds unacknowledged (in open windows and pushes in progress) at once (default 10000)",
  MAX_DEVICES_PER_USER: "push devices one user may register; RegisterDevice past it gets FAILED_PRECONDITION (default 10)",
  PUSH_ALLOW_PRIVATE_ENDPOINTS:
    "test only: true lets Web Push endpoints and provider URLs be http:// and loopback, private or link-local addresses (default false: https to public addresses only)",
  PUSH_CA_FILE: "PEM file of extra CA certificates trusted for the push services' TLS (e.g. a test's own CA; default none)",
  PUSH_TIMEOUT: "how long one delivery attempt to a push service may take (default 10s)",
  PUSH_TTL: "how long a push service keeps a push for an offline device: Web Push TTL, APNs apns-expiration (default 1d)",
  PUSH_MAX_ATTEMPTS: "delivery attempts per push and device on 429, 5xx or network errors, the first included (default 5)",
  PUSH_RETRY_BASE: "base of the exponential backoff with full jitter between attempts; a Retry-After from the service is honoured instead (default 500ms)",
  PUSH_RETRY_WINDOW: "no attempt starts later than this after the first; a longer Retry-After gives up (default 30s)",
  WEB_PUSH_VAPID_SUBJECT: "Web Push: mailto: or https: contact in the VAPID JWT; Web Push is enabled when it and the keys are set",
  WEB_PUSH_VAPID_PUBLIC_KEY: "Web Push: VAPID public key (base64url, uncompressed P-256 point)",
  WEB_PUSH_VAPID_PRIVATE_KEY: "Web Push: VAPID private key (base64url, 32 bytes)",
  WEB_PUSH_VAPID_KEY_FILE: 'Web Push: JSON file {"publicKey","privateKey"} instead of the two keys (as `web-push generate-vapid-keys --json` writes)',
  FCM_SERVICE_ACCOUNT_FILE: "FCM: service-account JSON (client_email, private_key, token_uri, project_id); FCM is enabled when it is set",
  FCM_PROJECT_ID: "FCM: project id (default the service account's project_id)",
  FCM_TOKEN_URL: "FCM: OAuth2 token endpoint (default the service account's token_uri)",
  FCM_BASE_URL: "FCM: HTTP v1 API base URL (default https://fcm.googleapis.com)",
  APNS_KEY_FILE: "APNs: the .p8 token-signing key (PEM, ES256); APNs is enabled when it is set",
  APNS_KEY_ID: "APNs: the key's id (kid), required with APNS_KEY_FILE",
  APNS_TEAM_ID: "APNs: the developer team id (iss), required with APNS_KEY_FILE",
  APNS_URL: "APNs: base URL (default https://api.push.apple.com; https://api.sandbox.push.apple.com for development builds)",
} as const;

/** ConfigError lists every invalid setting at once. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(readonly problems: readonly string[]) {
    super(`Invalid environment variables:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

type Env = Readonly<Record<string, string | undefined>>;

/** loadConfig validates the environment and returns a frozen Config, or throws ConfigError naming every bad variable. */
export function loadConfig(env: Env): Config {
  const problems: string[] = [];
  const read = new Reader(env, problems);
  const dataDir = resolve(read.string("DATA_DIR", "./data"));
  const storeUrl = read.string("STORE_URL", `sqlite:${dataDir}/chat.db`);
  const cassandraStore = storeUrl.startsWith("cassandra://");
  if (cassandraStore) {
    try {
      parseCassandraUrl(storeUrl);
    } catch (e) {
      problems.push(`STORE_URL: "${redactUrl(storeUrl)}" is not a valid cassandra:// URL: ${e instanceof Error ? e.message : String(e)}`);
    }
  } else if (!/^sqlite:.+/.test(storeUrl)) {
    problems.push(`STORE_URL: "${redactUrl(storeUrl)}" is not supported (use sqlite:<path> or cassandra://host/keyspace)`);
  }
  const migrate = read.boolean("MIGRATE", cassandraStore);
  const busUrl = read.string("BUS_URL", "memory:");
  const natsBus = /^nats:\/\/[^/]+/.test(busUrl);
  if (busUrl !== "memory:" && !natsBus) problems.push(`BUS_URL: "${redactUrl(busUrl)}" is not supported (use memory: or nats://host:port)`);
  else if (cassandraStore && !natsBus) {
    problems.push(`BUS_URL: "${redactUrl(busUrl)}" must be nats://host:port with a cassandra:// STORE_URL (JetStream sequences the store's events)`);
  }
  const cacheUrl = read.string("CACHE_URL", "memory:");
  if (cacheUrl !== "memory:" && !/^redis:\/\/[^/]+/.test(cacheUrl)) {
    problems.push(`CACHE_URL: "${redactUrl(cacheUrl)}" is not supported (use memory: or redis://host:port)`);
  }
  const namespace = read.string("NAMESPACE", "chat");
  if (!/^[a-z0-9][a-z0-9_-]{0,31}$/.test(namespace)) problems.push(`NAMESPACE: "${namespace}" must be 1 to 32 of a-z 0-9 _ - (starting with a letter or digit)`);
  const logLevel = read.choice("LOG_LEVEL", "info", ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const);
  const services = parseServices(read.string("SERVICES", SERVICE_NAMES.join(",")), problems);
  const authJwksUrl = read.string("AUTH_JWKS_URL", "") || undefined;
  if (!services.includes("auth") && authJwksUrl === undefined) {
    problems.push("AUTH_JWKS_URL: required when this process does not serve auth (it verifies tokens with the auth service's keys)");
  }
  if (authJwksUrl !== undefined && !/^https?:\/\/[^/]+\/\S*$/.test(authJwksUrl)) {
    problems.push(`AUTH_JWKS_URL: "${authJwksUrl}" must be an http(s) URL`);
  }
  if (services.length < SERVICE_NAMES.length && busUrl === "memory:") {
    problems.push("BUS_URL: separate processes need a shared bus (nats://host:port); memory: only works with all services in one process");
  }
  const config: Config = {
    host: read.string("HOST", "127.0.0.1"),
    services,
    authJwksUrl,
    port: read.integer("PORT", 8080, 0, 65535),
    dataDir,
    storeUrl,
    migrate,
    busUrl,
    cacheUrl,
    namespace,
    logLevel,
    jwt: Object.freeze({
      issuer: read.string("JWT_ISSUER", "chat"),
      audience: read.string("JWT_AUDIENCE", "chat"),
      keyFile: resolve(read.string("JWT_KEY_FILE", `${dataDir}/jwt-ed25519.jwk`)),
    }),
    accessTokenTtlMs: read.duration("ACCESS_TOKEN_TTL", "15m", 1_000),
    refreshTokenTtlMs: read.duration("REFRESH_TOKEN_TTL", "30d", 60_000),
    refreshReuseGraceMs: read.duration("REFRESH_REUSE_GRACE", "60s", 0, 600_000),
    retentionMs: read.duration("RETENTION", "30d", 1_000),
    maxTextBytes: read.integer("MAX_TEXT_BYTES", 4096, 1, 1 << 20),
    maxRequestBytes: read.integer("MAX_REQUEST_BYTES", 65_536, 1024, 16 << 20),
    requestBodyTimeoutMs: read.duration("REQUEST_BODY_TIMEOUT", "10s", 100, MAX_TIMER_MS),
    maxStreamsPerConnection: read.integer("MAX_STREAMS_PER_CONNECTION", 100, 1, 10_000),
    http2IdleTimeoutMs: read.duration("HTTP2_IDLE_TIMEOUT", "5m", 100, MAX_TIMER_MS),
    unauthenticatedBodyBytes: read.integer("UNAUTHENTICATED_BODY_BYTES", 16 << 20, 64 << 10, 1 << 30),
    maxOpenCallsWithoutToken: read.integer("MAX_OPEN_CALLS_WITHOUT_TOKEN", 1000, 1, 1_000_000),
    reflectionIdleTimeoutMs: read.duration("REFLECTION_IDLE_TIMEOUT", "60s", 100, MAX_TIMER_MS),
    maxGroupMembers: read.integer("MAX_GROUP_MEMBERS", 1000, 2, 1_000_000),
    maxGroupsPerUser: read.integer("MAX_GROUPS_PER_USER", 5000, 1, MAX_CURSORS),
    timelineReplicas: read.integer("TIMELINE_REPLICAS", 1, 1, 5),
    timelinePublishLingerMs: read.duration("TIMELINE_PUBLISH_LINGER", "10ms", 0, 1000),
    busGroupSubscriptions: read.choice("BUS_GROUP_SUBSCRIPTIONS", "shared", ["shared", "each"] as const),
    sendsPerSecond: read.integer("SENDS_PER_SECOND", 10, 1, 1_000_000),
    sendBurst: read.integer("SEND_BURST", 30, 1, 1_000_000),
    sendMaxInFlight: read.integer("SEND_MAX_IN_FLIGHT", 1000, 1, 1_000_000),
    recentMessagesPerGroup: read.integer("RECENT_MESSAGES_PER_GROUP", 100, 1, 10_000),
    heapGrowingPercent: read.integer("HEAP_GROWING_PERCENT", cassandraStore ? 0 : 300, 0, 1000),
    presenceTtlMs: read.duration("PRESENCE_TTL", "30s", 1_000, MAX_TIMER_MS),
    heartbeatMs: read.duration("HEARTBEAT_INTERVAL", "15s", 100, MAX_TIMER_MS),
    streamBufferBytes: read.integer("STREAM_BUFFER_BYTES", 1 << 20, 1024, 1 << 30),
    loginAttemptsPerMinute: read.integer("LOGIN_ATTEMPTS_PER_MINUTE", 10, 1, 1_000_000),
    loginAttemptsPerMinutePerAddress: read.integer("LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS", 60, 1, 1_000_000),
    registrationsPerMinutePerAddress: read.integer("REGISTRATIONS_PER_MINUTE_PER_ADDRESS", 30, 1, 1_000_000),
    trustProxy: read.boolean("TRUST_PROXY", false),
    webApp: read.boolean("WEB_APP", true),
    shutdownGraceMs: read.duration("SHUTDOWN_GRACE", "10s", 0),
    notifyWindowMs: read.duration("NOTIFY_WINDOW", "2s", 0, 60_000),
    notifyMaxPending: read.integer("NOTIFY_MAX_PENDING", 10_000, 1, 1_000_000),
    maxDevicesPerUser: read.integer("MAX_DEVICES_PER_USER", 10, 1, 1000),
    push: readPushConfig(read, problems),
    tls: readTlsConfig(read, problems),
  };
  if (services.includes("notify") && !services.includes("stream") && cacheUrl === "memory:") {
    problems.push(
      'CACHE_URL: a process serving notify without stream needs the shared presence of redis://host:port; with memory: it would see every member offline and push to online ones',
    );
  }
  if (config.maxTextBytes > config.maxRequestBytes) {
    problems.push(`MAX_TEXT_BYTES (${config.maxTextBytes}) must not exceed MAX_REQUEST_BYTES (${config.maxRequestBytes})`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/**
 * MAX_TIMER_MS is the longest delay a Node timer takes (2^31 - 1 ms, about
 * 24.8 days); a longer one fires after 1 ms instead.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** MAX_DURATION_MS caps every duration setting (10 years), so that `now + duration` stays a valid date. */
export const MAX_DURATION_MS = 3650 * 86_400_000;

function parseServices(text: string, problems: string[]): ServiceName[] {
  const names = [...new Set(text.split(",").map((n) => n.trim()).filter((n) => n !== ""))];
  const bad = names.filter((n) => !(SERVICE_NAMES as readonly string[]).includes(n));
  if (bad.length > 0 || names.length === 0) {
    problems.push(`SERVICES: "${text}" must list some of ${SERVICE_NAMES.join(", ")}`);
    return [...SERVICE_NAMES];
  }
  return SERVICE_NAMES.filter((n) => names.includes(n));
}

/** readTlsConfig reads TLS_CERT_FILE and TLS_KEY_FILE: both set (TLS on the port) or neither (cleartext). */
function readTlsConfig(read: Reader, problems: string[]): TlsConfig | undefined {
  const certFile = read.string("TLS_CERT_FILE", "");
  const keyFile = read.string("TLS_KEY_FILE", "");
  if (certFile === "" && keyFile === "") return undefined;
  if (certFile === "") problems.push("TLS_CERT_FILE: required with TLS_KEY_FILE (TLS needs the certificate and its key; set neither for cleartext)");
  if (keyFile === "") problems.push("TLS_KEY_FILE: required with TLS_CERT_FILE (TLS needs the certificate and its key; set neither for cleartext)");
  if (certFile === "" || keyFile === "") return undefined;
  return Object.freeze({ certFile: resolve(certFile), keyFile: resolve(keyFile) });
}

/** readPushConfig reads the push settings (see {@link PushConfig}); a provider with none of its settings is disabled. */
function readPushConfig(read: Reader, problems: string[]): PushConfig {
  const allowPrivateEndpoints = read.boolean("PUSH_ALLOW_PRIVATE_ENDPOINTS", false);
  const optional = (name: keyof typeof SETTINGS) => read.string(name, "") || undefined;
  const url = (name: keyof typeof SETTINGS, fallback: string | undefined) => {
    const v = optional(name) ?? fallback;
    if (v === undefined) return undefined;
    // http:// only where private endpoints are allowed (tests' loopback receivers); production pushes go over TLS.
    const ok = allowPrivateEndpoints ? /^https?:\/\/[^/\s]+(\/\S*)?$/ : /^https:\/\/[^/\s]+(\/\S*)?$/;
    if (!ok.test(v)) {
      problems.push(`${name}: "${v}" must be an https:// URL${allowPrivateEndpoints ? " (or http://)" : " (http:// only with PUSH_ALLOW_PRIVATE_ENDPOINTS=true)"}`);
    }
    return v;
  };
  const file = (name: keyof typeof SETTINGS) => {
    const v = optional(name);
    return v === undefined ? undefined : resolve(v);
  };

  let webPush: WebPushConfig | undefined;
  const subject = optional("WEB_PUSH_VAPID_SUBJECT");
  const publicKey = optional("WEB_PUSH_VAPID_PUBLIC_KEY");
  const privateKey = optional("WEB_PUSH_VAPID_PRIVATE_KEY");
  const keyFile = file("WEB_PUSH_VAPID_KEY_FILE");
  if (subject !== undefined || publicKey !== undefined || privateKey !== undefined || keyFile !== undefined) {
    if (subject === undefined) problems.push("WEB_PUSH_VAPID_SUBJECT: required with the other WEB_PUSH_VAPID_ settings (a mailto: or https: contact)");
    else if (!/^(mailto:\S+@\S+|https:\/\/\S+)$/.test(subject)) problems.push(`WEB_PUSH_VAPID_SUBJECT: "${subject}" must be a mailto: address or an https: URL`);
    if (keyFile !== undefined && (publicKey !== undefined || privateKey !== undefined)) {
      problems.push("WEB_PUSH_VAPID_KEY_FILE: set either it or WEB_PUSH_VAPID_PUBLIC_KEY and WEB_PUSH_VAPID_PRIVATE_KEY, not both");
    } else if (keyFile === undefined) {
      if (publicKey === undefined) problems.push("WEB_PUSH_VAPID_PUBLIC_KEY: required with WEB_PUSH_VAPID_SUBJECT (or set WEB_PUSH_VAPID_KEY_FILE)");
      else if (!isVapidKey(publicKey, 65)) problems.push(`WEB_PUSH_VAPID_PUBLIC_KEY: "${publicKey}" must be an uncompressed P-256 public key in base64url (65 bytes)`);
      // The private key is a secret: its problem never quotes it.
      if (privateKey === undefined) problems.push("WEB_PUSH_VAPID_PRIVATE_KEY: required with WEB_PUSH_VAPID_SUBJECT (or set WEB_PUSH_VAPID_KEY_FILE)");
      else if (!isVapidKey(privateKey, 32)) problems.push("WEB_PUSH_VAPID_PRIVATE_KEY: must be a P-256 private key in base64url (32 bytes); the value is not shown");
    }
    if (subject !== undefined) webPush = Object.freeze({ subject, publicKey, privateKey, keyFile });
  }

  let fcm: FcmConfig | undefined;
  const serviceAccountFile = file("FCM_SERVICE_ACCOUNT_FILE");
  const projectId = optional("FCM_PROJECT_ID");
  const tokenUrl = url("FCM_TOKEN_URL", undefined);
  const fcmBaseUrl = url("FCM_BASE_URL", "https://fcm.googleapis.com") as string;
  if (projectId !== undefined && !/^[a-z][a-z0-9-]{1,62}$/.test(projectId)) problems.push(`FCM_PROJECT_ID: "${projectId}" must be a project id (a-z, 0-9, -)`);
  if (serviceAccountFile !== undefined) {
    fcm = Object.freeze({ projectId, serviceAccountFile, tokenUrl, baseUrl: fcmBaseUrl });
  } else {
    for (const name of ["FCM_PROJECT_ID", "FCM_TOKEN_URL", "FCM_BASE_URL"] as const) {
      if (optional(name) !== undefined) problems.push(`${name}: set, but FCM_SERVICE_ACCOUNT_FILE is not (FCM needs a service account)`);
    }
  }

  let apns: ApnsConfig | undefined;
  const apnsKeyFile = file("APNS_KEY_FILE");
  const keyId = optional("APNS_KEY_ID");
  const teamId = optional("APNS_TEAM_ID");
  const apnsUrl = url("APNS_URL", "https://api.push.apple.com") as string;
  for (const [name, v] of [["APNS_KEY_ID", keyId], ["APNS_TEAM_ID", teamId]] as const) {
    if (v !== undefined && !/^[A-Za-z0-9]{1,64}$/.test(v)) problems.push(`${name}: "${v}" must be 1 to 64 letters or digits (Apple's ids are 10)`);
  }
  if (apnsKeyFile !== undefined) {
    if (keyId === undefined) problems.push("APNS_KEY_ID: required with APNS_KEY_FILE");
    if (teamId === undefined) problems.push("APNS_TEAM_ID: required with APNS_KEY_FILE");
    if (keyId !== undefined && teamId !== undefined) apns = Object.freeze({ url: apnsUrl, keyId, teamId, keyFile: apnsKeyFile });
  } else {
    for (const name of ["APNS_KEY_ID", "APNS_TEAM_ID", "APNS_URL"] as const) {
      if (optional(name) !== undefined) problems.push(`${name}: set, but APNS_KEY_FILE is not (APNs needs a token-signing key)`);
    }
  }

  const push: PushConfig = {
    allowPrivateEndpoints,
    caFile: file("PUSH_CA_FILE"),
    timeoutMs: read.duration("PUSH_TIMEOUT", "10s", 100, 120_000),
    ttlSeconds: Math.floor(read.duration("PUSH_TTL", "1d", 0, 28 * 86_400_000) / 1000),
    maxAttempts: read.integer("PUSH_MAX_ATTEMPTS", 5, 1, 20),
    retryBaseMs: read.duration("PUSH_RETRY_BASE", "500ms", 1, 60_000),
    retryWindowMs: read.duration("PUSH_RETRY_WINDOW", "30s", 0, 600_000),
    webPush,
    fcm,
    apns,
  };
  return Object.freeze(push);
}

/** isVapidKey tells whether `text` is base64url (unpadded) of `bytes` bytes; a 65-byte public key must be an uncompressed point (0x04 first). */
function isVapidKey(text: string, bytes: number): boolean {
  if (!/^[A-Za-z0-9_-]+$/.test(text)) return false;
  const raw = Buffer.from(text, "base64url");
  return raw.length === bytes && (bytes !== 65 || raw[0] === 0x04);
}

/** redactUrl hides the user-info part (user:password@) of a URL quoted in an error. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/]*@/i, "$1[redacted]@");
}

/** argsToEnv turns command-line settings (`--services=stream`) into the environment variables they stand for. */
export function argsToEnv(argv: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const arg of argv) {
    const m = /^--services=(.*)$/.exec(arg);
    if (m?.[1] !== undefined) env.SERVICES = m[1];
  }
  return env;
}

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** parseDuration reads "250ms", "15s", "15m", "12h" or "30d" into milliseconds; undefined if malformed. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m?.[1] || !m[2]) return undefined;
  return Number(m[1]) * (UNITS[m[2]] ?? Number.NaN);
}

class Reader {
  constructor(
    private readonly env: Env,
    private readonly problems: string[],
  ) {}

  string(name: keyof typeof SETTINGS, fallback: string): string {
    const v = this.env[name];
    if (v === undefined || v === "") return fallback;
    return v;
  }

  integer(name: keyof typeof SETTINGS, fallback: number, min: number, max: number): number {
    const v = this.env[name];
    if (v === undefined || v === "") return fallback;
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || n < min || n > max) {
      this.problems.push(`${name}: "${v}" must be a whole number from ${min} to ${max}`);
      return fallback;
    }
    return n;
  }

  duration(name: keyof typeof SETTINGS, fallback: string, minMs: number, maxMs = MAX_DURATION_MS): number {
    const v = this.env[name];
    const ms = parseDuration(v === undefined || v === "" ? fallback : v);
    if (ms === undefined || ms < minMs || ms > maxMs) {
      this.problems.push(`${name}: "${v}" must be a duration like 250ms, 15s, 15m, 12h or 30d, from ${minMs} to ${maxMs} ms`);
      return parseDuration(fallback) ?? 0;
    }
    return ms;
  }

  boolean(name: keyof typeof SETTINGS, fallback: boolean): boolean {
    const v = this.env[name];
    if (v === undefined || v === "") return fallback;
    if (v === "true" || v === "1") return true;
    if (v === "false" || v === "0") return false;
    this.problems.push(`${name}: "${v}" must be true or false`);
    return fallback;
  }

  choice<T extends string>(name: keyof typeof SETTINGS, fallback: T, allowed: readonly T[]): T {
    const v = this.env[name];
    if (v === undefined || v === "") return fallback;
    if ((allowed as readonly string[]).includes(v)) return v as T;
    this.problems.push(`${name}: "${v}" must be one of ${allowed.join(", ")}`);
    return fallback;
  }
}
