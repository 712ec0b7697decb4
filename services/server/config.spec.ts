import assert from "node:assert/strict";
import { resolve } from "node:path";
import { describe, it } from "node:test";
import { type Config, ConfigError, MAX_TIMER_MS, SETTINGS, loadConfig, parseDuration } from "./config.js";

/** configError runs loadConfig and returns the ConfigError it must throw. */
function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    return e;
  }
  assert.fail(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe("loadConfig", () => {
  it("returns the documented defaults for an empty environment, frozen", () => {
    const dataDir = resolve("./data");
    const config = loadConfig({});
    const expected: Config = {
      host: "127.0.0.1",
      port: 8080,
      services: ["auth", "group", "message", "stream", "notify"],
      authJwksUrl: undefined,
      dataDir,
      storeUrl: `sqlite:${dataDir}/chat.db`,
      migrate: false,
      busUrl: "memory:",
      cacheUrl: "memory:",
      namespace: "chat",
      logLevel: "info",
      jwt: { issuer: "chat", audience: "chat", keyFile: resolve(dataDir, "jwt-ed25519.jwk") },
      accessTokenTtlMs: 15 * 60_000,
      refreshTokenTtlMs: 30 * 86_400_000,
      retentionMs: 30 * 86_400_000,
      maxTextBytes: 4096,
      maxRequestBytes: 65_536,
      requestBodyTimeoutMs: 10_000,
      maxStreamsPerConnection: 100,
      http2IdleTimeoutMs: 300_000,
      unauthenticatedBodyBytes: 16_777_216,
      maxOpenCallsWithoutToken: 1000,
      reflectionIdleTimeoutMs: 60_000,
      maxGroupMembers: 1000,
      maxGroupsPerUser: 5000,
      timelineReplicas: 1,
      timelinePublishLingerMs: 10,
      busGroupSubscriptions: "shared",
      sendsPerSecond: 10,
      sendBurst: 30,
      sendMaxInFlight: 1000,
      recentMessagesPerGroup: 100,
      heapGrowingPercent: 300,
      refreshReuseGraceMs: 60_000,
      presenceTtlMs: 30_000,
      heartbeatMs: 15_000,
      streamBufferBytes: 1_048_576,
      loginAttemptsPerMinute: 10,
      loginAttemptsPerMinutePerAddress: 60,
      registrationsPerMinutePerAddress: 30,
      trustProxy: false,
      webApp: true,
      shutdownGraceMs: 10_000,
      notifyWindowMs: 2000,
      notifyMaxPending: 10_000,
      maxDevicesPerUser: 10,
      push: {
        allowPrivateEndpoints: false,
        caFile: undefined,
        timeoutMs: 10_000,
        ttlSeconds: 86_400,
        maxAttempts: 5,
        retryBaseMs: 500,
        retryWindowMs: 30_000,
        webPush: undefined,
        fcm: undefined,
        apns: undefined,
      },
      tls: undefined,
    };
    assert.deepEqual(config, expected);
    assert.ok(Object.isFrozen(config.push), "the push settings are frozen too");
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.jwt), "nested settings are frozen too");
    assert.throws(() => {
      (config as { port: number }).port = 1;
    }, TypeError);
    assert.throws(() => {
      (config.jwt as { issuer: string }).issuer = "evil";
    }, TypeError);
  });

  it("treats an empty variable as unset", () => {
    const empty = Object.fromEntries(Object.keys(SETTINGS).map((k) => [k, ""]));
    assert.deepEqual(loadConfig(empty), loadConfig({}));
  });

  it("reads only the environment it is given, not process.env", () => {
    const saved = process.env.PORT;
    process.env.PORT = "4321";
    try {
      assert.equal(loadConfig({}).port, 8080);
    } finally {
      if (saved === undefined) delete process.env.PORT;
      else process.env.PORT = saved;
    }
  });

  it("parses each variable", () => {
    const cases: [Record<string, string>, (c: Config) => unknown, unknown][] = [
      [{ HOST: "0.0.0.0" }, (c) => c.host, "0.0.0.0"],
      [{ PORT: "0" }, (c) => c.port, 0],
      [{ PORT: "65535" }, (c) => c.port, 65535],
      [{ PORT: " 9090 " }, (c) => c.port, 9090],
      [{ TLS_CERT_FILE: "/etc/chat/cert.pem", TLS_KEY_FILE: "keys/key.pem" }, (c) => c.tls, { certFile: "/etc/chat/cert.pem", keyFile: resolve("keys/key.pem") }],
      [{ DATA_DIR: "/tmp/chat-x" }, (c) => [c.dataDir, c.storeUrl, c.jwt.keyFile], ["/tmp/chat-x", "sqlite:/tmp/chat-x/chat.db", "/tmp/chat-x/jwt-ed25519.jwk"]],
      [{ DATA_DIR: "rel/dir" }, (c) => c.dataDir, resolve("rel/dir")],
      [{ STORE_URL: "sqlite::memory:" }, (c) => c.storeUrl, "sqlite::memory:"],
      [{ STORE_URL: "sqlite:/var/chat.db" }, (c) => c.storeUrl, "sqlite:/var/chat.db"],
      [
        { STORE_URL: "cassandra://10.0.0.1,10.0.0.2:9043/chat?dc=dc1&replication=3", BUS_URL: "nats://127.0.0.1:4222" },
        (c) => [c.storeUrl, c.migrate],
        ["cassandra://10.0.0.1,10.0.0.2:9043/chat?dc=dc1&replication=3", true],
      ],
      [{ STORE_URL: "cassandra://db/chat", BUS_URL: "nats://nats:4222", MIGRATE: "false" }, (c) => c.migrate, false],
      [{ MIGRATE: "true" }, (c) => c.migrate, true],
      [{ BUS_URL: "memory:" }, (c) => c.busUrl, "memory:"],
      [{ CACHE_URL: "memory:" }, (c) => c.cacheUrl, "memory:"],
      [{ CACHE_URL: "redis://127.0.0.1:6379/2" }, (c) => c.cacheUrl, "redis://127.0.0.1:6379/2"],
      [{ NAMESPACE: "staging-1" }, (c) => c.namespace, "staging-1"],
      [{ SERVICES: "stream, auth", BUS_URL: "nats://127.0.0.1:4222" }, (c) => c.services, ["auth", "stream"]],
      [{ BUS_URL: "nats://127.0.0.1:4222" }, (c) => c.busUrl, "nats://127.0.0.1:4222"],
      [{ AUTH_JWKS_URL: "http://auth:8080/.well-known/jwks.json" }, (c) => c.authJwksUrl, "http://auth:8080/.well-known/jwks.json"],
      [{ LOG_LEVEL: "silent" }, (c) => c.logLevel, "silent"],
      [{ LOG_LEVEL: "trace" }, (c) => c.logLevel, "trace"],
      [{ JWT_ISSUER: "https://chat.example" }, (c) => c.jwt.issuer, "https://chat.example"],
      [{ JWT_AUDIENCE: "chat-api" }, (c) => c.jwt.audience, "chat-api"],
      [{ JWT_KEY_FILE: "keys/k.jwk" }, (c) => c.jwt.keyFile, resolve("keys/k.jwk")],
      [{ ACCESS_TOKEN_TTL: "2s" }, (c) => c.accessTokenTtlMs, 2000],
      [{ REFRESH_TOKEN_TTL: "7d" }, (c) => c.refreshTokenTtlMs, 7 * 86_400_000],
      [{ RETENTION: "12h" }, (c) => c.retentionMs, 12 * 3_600_000],
      [{ MAX_TEXT_BYTES: "100" }, (c) => c.maxTextBytes, 100],
      [{ MAX_REQUEST_BYTES: "1048576" }, (c) => c.maxRequestBytes, 1_048_576],
      [{ REQUEST_BODY_TIMEOUT: "250ms" }, (c) => c.requestBodyTimeoutMs, 250],
      [{ MAX_STREAMS_PER_CONNECTION: "8" }, (c) => c.maxStreamsPerConnection, 8],
      [{ HTTP2_IDLE_TIMEOUT: "2m" }, (c) => c.http2IdleTimeoutMs, 120_000],
      [{ UNAUTHENTICATED_BODY_BYTES: "1048576" }, (c) => c.unauthenticatedBodyBytes, 1_048_576],
      [{ MAX_OPEN_CALLS_WITHOUT_TOKEN: "3" }, (c) => c.maxOpenCallsWithoutToken, 3],
      [{ REFLECTION_IDLE_TIMEOUT: "500ms" }, (c) => c.reflectionIdleTimeoutMs, 500],
      [{ MAX_GROUP_MEMBERS: "2" }, (c) => c.maxGroupMembers, 2],
      [{ TIMELINE_REPLICAS: "3" }, (c) => c.timelineReplicas, 3],
      [{ TIMELINE_PUBLISH_LINGER: "0ms" }, (c) => c.timelinePublishLingerMs, 0],
      [{ BUS_GROUP_SUBSCRIPTIONS: "each" }, (c) => c.busGroupSubscriptions, "each"],
      [{ MAX_GROUPS_PER_USER: "10000" }, (c) => c.maxGroupsPerUser, 10_000],
      [{ SENDS_PER_SECOND: "5" }, (c) => c.sendsPerSecond, 5],
      [{ SEND_BURST: "8" }, (c) => c.sendBurst, 8],
      [{ SEND_MAX_IN_FLIGHT: "64" }, (c) => c.sendMaxInFlight, 64],
      [{ RECENT_MESSAGES_PER_GROUP: "20" }, (c) => c.recentMessagesPerGroup, 20],
      [{ HEAP_GROWING_PERCENT: "0" }, (c) => c.heapGrowingPercent, 0],
      [{ REFRESH_REUSE_GRACE: "0s" }, (c) => c.refreshReuseGraceMs, 0],
      [{ PRESENCE_TTL: "5s" }, (c) => c.presenceTtlMs, 5_000],
      [{ HEARTBEAT_INTERVAL: "250ms" }, (c) => c.heartbeatMs, 250],
      [{ STREAM_BUFFER_BYTES: "2048" }, (c) => c.streamBufferBytes, 2048],
      [{ LOGIN_ATTEMPTS_PER_MINUTE: "3" }, (c) => c.loginAttemptsPerMinute, 3],
      [{ LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS: "4" }, (c) => c.loginAttemptsPerMinutePerAddress, 4],
      [{ REGISTRATIONS_PER_MINUTE_PER_ADDRESS: "7" }, (c) => c.registrationsPerMinutePerAddress, 7],
      [{ TRUST_PROXY: "true" }, (c) => c.trustProxy, true],
      [{ TRUST_PROXY: "1" }, (c) => c.trustProxy, true],
      [{ TRUST_PROXY: "false" }, (c) => c.trustProxy, false],
      [{ TRUST_PROXY: "0" }, (c) => c.trustProxy, false],
      [{ WEB_APP: "false" }, (c) => c.webApp, false],
      [{ WEB_APP: "true" }, (c) => c.webApp, true],
      [{ SHUTDOWN_GRACE: "0s" }, (c) => c.shutdownGraceMs, 0],
      [{ SHUTDOWN_GRACE: "1m" }, (c) => c.shutdownGraceMs, 60_000],
      [{ NOTIFY_WINDOW: "150ms" }, (c) => c.notifyWindowMs, 150],
      [{ NOTIFY_WINDOW: "0ms" }, (c) => c.notifyWindowMs, 0],
      [{ NOTIFY_MAX_PENDING: "50" }, (c) => c.notifyMaxPending, 50],
      [{ MAX_DEVICES_PER_USER: "3" }, (c) => c.maxDevicesPerUser, 3],
      [{ PUSH_ALLOW_PRIVATE_ENDPOINTS: "true" }, (c) => c.push.allowPrivateEndpoints, true],
      [{ PUSH_CA_FILE: "certs/ca.pem" }, (c) => c.push.caFile, resolve("certs/ca.pem")],
      [{ PUSH_TIMEOUT: "2s" }, (c) => c.push.timeoutMs, 2000],
      [{ PUSH_TTL: "1h" }, (c) => c.push.ttlSeconds, 3600],
      [{ PUSH_MAX_ATTEMPTS: "1" }, (c) => c.push.maxAttempts, 1],
      [{ PUSH_RETRY_BASE: "20ms" }, (c) => c.push.retryBaseMs, 20],
      [{ PUSH_RETRY_WINDOW: "5s" }, (c) => c.push.retryWindowMs, 5000],
      [
        { WEB_PUSH_VAPID_SUBJECT: "mailto:ops@chat.example", WEB_PUSH_VAPID_PUBLIC_KEY: VAPID_PUBLIC, WEB_PUSH_VAPID_PRIVATE_KEY: VAPID_PRIVATE },
        (c) => c.push.webPush,
        { subject: "mailto:ops@chat.example", publicKey: VAPID_PUBLIC, privateKey: VAPID_PRIVATE, keyFile: undefined },
      ],
      [
        { WEB_PUSH_VAPID_SUBJECT: "https://chat.example/contact", WEB_PUSH_VAPID_KEY_FILE: "keys/vapid.json" },
        (c) => c.push.webPush,
        { subject: "https://chat.example/contact", publicKey: undefined, privateKey: undefined, keyFile: resolve("keys/vapid.json") },
      ],
      [
        { FCM_SERVICE_ACCOUNT_FILE: "keys/sa.json" },
        (c) => c.push.fcm,
        { projectId: undefined, serviceAccountFile: resolve("keys/sa.json"), tokenUrl: undefined, baseUrl: "https://fcm.googleapis.com" },
      ],
      [
        { FCM_SERVICE_ACCOUNT_FILE: "/k/sa.json", FCM_PROJECT_ID: "chat-prod", FCM_TOKEN_URL: "https://auth.example/token", FCM_BASE_URL: "https://fcm.example" },
        (c) => c.push.fcm,
        { projectId: "chat-prod", serviceAccountFile: "/k/sa.json", tokenUrl: "https://auth.example/token", baseUrl: "https://fcm.example" },
      ],
      [
        { APNS_KEY_FILE: "/k/AuthKey.p8", APNS_KEY_ID: "ABC123DEFG", APNS_TEAM_ID: "TEAM123456" },
        (c) => c.push.apns,
        { url: "https://api.push.apple.com", keyId: "ABC123DEFG", teamId: "TEAM123456", keyFile: "/k/AuthKey.p8" },
      ],
      [
        { APNS_KEY_FILE: "/k/a.p8", APNS_KEY_ID: "K", APNS_TEAM_ID: "T", APNS_URL: "http://127.0.0.1:9/", PUSH_ALLOW_PRIVATE_ENDPOINTS: "1" },
        (c) => c.push.apns?.url,
        "http://127.0.0.1:9/",
      ],
    ];
    const covered = new Set(cases.flatMap(([env]) => Object.keys(env)));
    assert.deepEqual([...covered].sort(), Object.keys(SETTINGS).sort(), "every documented variable is exercised");
    for (const [env, pick, want] of cases) {
      assert.deepEqual(pick(loadConfig(env)), want, JSON.stringify(env));
    }
  });

  it("lists every bad variable at once in one ConfigError", () => {
    const bad: Record<string, string> = {
      PORT: "65536",
      STORE_URL: "postgres://db/chat",
      BUS_URL: "kafka://127.0.0.1:9092",
      CACHE_URL: "memcached://127.0.0.1:11211",
      NAMESPACE: "has.dots",
      SERVICES: "stream,notifier",
      AUTH_JWKS_URL: "ftp://auth/keys",
      LOG_LEVEL: "loud",
      ACCESS_TOKEN_TTL: "15",
      REFRESH_TOKEN_TTL: "59s",
      RETENTION: "1w",
      MAX_TEXT_BYTES: "0",
      MAX_REQUEST_BYTES: "lots",
      MAX_GROUP_MEMBERS: "1",
      MAX_GROUPS_PER_USER: "10001",
      HEARTBEAT_INTERVAL: "99ms",
      STREAM_BUFFER_BYTES: "-5",
      LOGIN_ATTEMPTS_PER_MINUTE: "2.5",
      LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS: "1e3",
      TRUST_PROXY: "yes",
      SHUTDOWN_GRACE: "soon",
      MIGRATE: "maybe",
      NOTIFY_WINDOW: "61s",
      MAX_DEVICES_PER_USER: "0",
      PUSH_MAX_ATTEMPTS: "21",
      PUSH_TIMEOUT: "forever",
    };
    const err = configError(bad);
    assert.equal(err.name, "ConfigError");
    assert.ok(err instanceof Error);
    assert.equal(err.problems.length, Object.keys(bad).length, err.message);
    for (const [name, value] of Object.entries(bad)) {
      const line = err.problems.find((p) => p.startsWith(`${name}:`));
      assert.ok(line, `${name} is reported`);
      assert.ok(line.includes(`"${value}"`), `the problem quotes the value: ${line}`);
      assert.ok(err.message.includes(line), "the message lists every problem");
    }
    assert.match(err.message, /^Invalid environment variables:\n {2}- /);
  });

  it("keeps MAX_GROUPS_PER_USER within the cursors one Subscribe carries, so every group can be resumed", () => {
    assert.equal(loadConfig({ MAX_GROUPS_PER_USER: "1" }).maxGroupsPerUser, 1);
    assert.deepEqual(configError({ MAX_GROUPS_PER_USER: "10001" }).problems, ['MAX_GROUPS_PER_USER: "10001" must be a whole number from 1 to 10000']);
    assert.deepEqual(configError({ MAX_GROUPS_PER_USER: "0" }).problems, ['MAX_GROUPS_PER_USER: "0" must be a whole number from 1 to 10000']);
  });

  it("reports a single bad variable alone, naming the rule", () => {
    assert.deepEqual(configError({ PORT: "http" }).problems, ['PORT: "http" must be a whole number from 0 to 65535']);
    assert.deepEqual(configError({ TRUST_PROXY: "TRUE" }).problems, ['TRUST_PROXY: "TRUE" must be true or false']);
    assert.deepEqual(configError({ LOG_LEVEL: "INFO" }).problems, [
      'LOG_LEVEL: "INFO" must be one of fatal, error, warn, info, debug, trace, silent',
    ]);
    assert.deepEqual(configError({ BUS_GROUP_SUBSCRIPTIONS: "all" }).problems, ['BUS_GROUP_SUBSCRIPTIONS: "all" must be one of shared, each']);
    assert.match(configError({ STORE_URL: "sqlite:" }).problems[0] ?? "", /STORE_URL: "sqlite:" is not supported/);
  });

  it("accepts a cassandra:// store only with a NATS bus, and checks its URL", () => {
    assert.deepEqual(configError({ STORE_URL: "cassandra://db/chat" }).problems, [
      'BUS_URL: "memory:" must be nats://host:port with a cassandra:// STORE_URL (JetStream sequences the store\'s events)',
    ]);
    const bad = configError({ STORE_URL: "cassandra://db", BUS_URL: "nats://nats:4222" }).problems;
    assert.equal(bad.length, 1);
    assert.match(bad[0] ?? "", /^STORE_URL: "cassandra:\/\/db" is not a valid cassandra:\/\/ URL: .*keyspace/);
    assert.match(configError({ STORE_URL: "cassandra://db/chat?consistency=all", BUS_URL: "nats://n:4222" }).problems[0] ?? "", /unknown cassandra URL parameter/);
    assert.equal(loadConfig({ STORE_URL: "cassandra://db/chat", BUS_URL: "nats://n:4222" }).migrate, true);
    assert.equal(loadConfig({ STORE_URL: "sqlite::memory:" }).migrate, false);
  });

  it("fixes V8's heap growing percent at 300 for the embedded store only, unless set", () => {
    assert.equal(loadConfig({ STORE_URL: "sqlite::memory:" }).heapGrowingPercent, 300);
    assert.equal(loadConfig({ STORE_URL: "cassandra://db/chat", BUS_URL: "nats://n:4222" }).heapGrowingPercent, 0);
    assert.equal(loadConfig({ STORE_URL: "cassandra://db/chat", BUS_URL: "nats://n:4222", HEAP_GROWING_PERCENT: "50" }).heapGrowingPercent, 50);
    assert.match(configError({ HEAP_GROWING_PERCENT: "1001" }).problems[0] ?? "", /^HEAP_GROWING_PERCENT/);
  });

  it("checks integer bounds inclusively", () => {
    assert.equal(loadConfig({ MAX_REQUEST_BYTES: "1024", MAX_TEXT_BYTES: "1024" }).maxRequestBytes, 1024);
    configError({ MAX_REQUEST_BYTES: "1023", MAX_TEXT_BYTES: "100" });
    assert.equal(loadConfig({ MAX_TEXT_BYTES: String(1 << 20), MAX_REQUEST_BYTES: String(1 << 20) }).maxTextBytes, 1 << 20);
    configError({ MAX_TEXT_BYTES: String((1 << 20) + 1), MAX_REQUEST_BYTES: String(16 << 20) });
    for (const v of ["-1", "1.0", "0x10", "1e3", "8080a", "Infinity"]) configError({ PORT: v });
  });

  it("rejects a text limit larger than the request limit", () => {
    const err = configError({ MAX_TEXT_BYTES: "5000", MAX_REQUEST_BYTES: "4096" });
    assert.deepEqual(err.problems, ["MAX_TEXT_BYTES (5000) must not exceed MAX_REQUEST_BYTES (4096)"]);
    assert.equal(loadConfig({ MAX_TEXT_BYTES: "4096", MAX_REQUEST_BYTES: "4096" }).maxTextBytes, 4096);
  });
});

/** A VAPID key pair (web-push's generateVAPIDKeys), for the settings that check the keys' shape. */
const VAPID_PUBLIC = "BPsbsYN1IyBDc5exvsP9AYKwLANWglGQpMBokEmdJeciy36LWNK-d1wOAj2EpTX9UHGGqEegn9fII6IpHDeT9iU";
const VAPID_PRIVATE = "BjfzYuzOsVCn0A_mc1Ijprakjh5nhYVsQqZ6WexUnNs";

describe("push settings", () => {
  it("enables no provider by default, and each one only with its credentials", () => {
    const c = loadConfig({});
    assert.deepEqual([c.push.webPush, c.push.fcm, c.push.apns], [undefined, undefined, undefined]);
  });

  it("requires the VAPID subject and both keys, or a key file, and never quotes the private key", () => {
    assert.deepEqual(configError({ WEB_PUSH_VAPID_PUBLIC_KEY: VAPID_PUBLIC, WEB_PUSH_VAPID_PRIVATE_KEY: VAPID_PRIVATE }).problems, [
      "WEB_PUSH_VAPID_SUBJECT: required with the other WEB_PUSH_VAPID_ settings (a mailto: or https: contact)",
    ]);
    assert.deepEqual(configError({ WEB_PUSH_VAPID_SUBJECT: "mailto:a@b.c", WEB_PUSH_VAPID_PUBLIC_KEY: VAPID_PUBLIC }).problems, [
      "WEB_PUSH_VAPID_PRIVATE_KEY: required with WEB_PUSH_VAPID_SUBJECT (or set WEB_PUSH_VAPID_KEY_FILE)",
    ]);
    const secret = `${VAPID_PRIVATE}AAAA`;
    const err = configError({ WEB_PUSH_VAPID_SUBJECT: "mailto:a@b.c", WEB_PUSH_VAPID_PUBLIC_KEY: VAPID_PUBLIC, WEB_PUSH_VAPID_PRIVATE_KEY: secret });
    assert.deepEqual(err.problems, ["WEB_PUSH_VAPID_PRIVATE_KEY: must be a P-256 private key in base64url (32 bytes); the value is not shown"]);
    assert.ok(!err.message.includes(secret));
    // A 65-byte key that is not an uncompressed point (0x04 first) is refused.
    const compressed = Buffer.from(VAPID_PUBLIC, "base64url");
    compressed[0] = 0x03;
    assert.match(
      configError({ WEB_PUSH_VAPID_SUBJECT: "mailto:a@b.c", WEB_PUSH_VAPID_PUBLIC_KEY: compressed.toString("base64url"), WEB_PUSH_VAPID_PRIVATE_KEY: VAPID_PRIVATE }).problems[0] ?? "",
      /^WEB_PUSH_VAPID_PUBLIC_KEY: .* must be an uncompressed P-256 public key/,
    );
    assert.deepEqual(
      configError({ WEB_PUSH_VAPID_SUBJECT: "mailto:a@b.c", WEB_PUSH_VAPID_KEY_FILE: "/k.json", WEB_PUSH_VAPID_PUBLIC_KEY: VAPID_PUBLIC }).problems,
      ["WEB_PUSH_VAPID_KEY_FILE: set either it or WEB_PUSH_VAPID_PUBLIC_KEY and WEB_PUSH_VAPID_PRIVATE_KEY, not both"],
    );
  });

  it("refuses a provider's settings without its credentials, and APNs without its key and team ids", () => {
    assert.deepEqual(configError({ FCM_PROJECT_ID: "chat" }).problems, ["FCM_PROJECT_ID: set, but FCM_SERVICE_ACCOUNT_FILE is not (FCM needs a service account)"]);
    assert.deepEqual(configError({ APNS_TEAM_ID: "T1" }).problems, ["APNS_TEAM_ID: set, but APNS_KEY_FILE is not (APNs needs a token-signing key)"]);
    assert.deepEqual(configError({ APNS_KEY_FILE: "/k.p8" }).problems, ["APNS_KEY_ID: required with APNS_KEY_FILE", "APNS_TEAM_ID: required with APNS_KEY_FILE"]);
  });

  it("allows http:// provider URLs only with PUSH_ALLOW_PRIVATE_ENDPOINTS (loopback test receivers)", () => {
    const env = { FCM_SERVICE_ACCOUNT_FILE: "/sa.json", FCM_TOKEN_URL: "http://127.0.0.1:1234/token", FCM_BASE_URL: "http://127.0.0.1:1234" };
    assert.deepEqual(configError(env).problems, [
      'FCM_TOKEN_URL: "http://127.0.0.1:1234/token" must be an https:// URL (http:// only with PUSH_ALLOW_PRIVATE_ENDPOINTS=true)',
      'FCM_BASE_URL: "http://127.0.0.1:1234" must be an https:// URL (http:// only with PUSH_ALLOW_PRIVATE_ENDPOINTS=true)',
    ]);
    assert.equal(loadConfig({ ...env, PUSH_ALLOW_PRIVATE_ENDPOINTS: "true" }).push.fcm?.tokenUrl, "http://127.0.0.1:1234/token");
  });

  it("needs a shared presence (Redis) for a notifier process without streams", () => {
    const split = { SERVICES: "notify", BUS_URL: "nats://127.0.0.1:4222", AUTH_JWKS_URL: "http://auth:8080/.well-known/jwks.json" };
    assert.match(configError(split).problems.join("\n"), /^CACHE_URL: a process serving notify without stream needs the shared presence/m);
    assert.deepEqual(loadConfig({ ...split, CACHE_URL: "redis://127.0.0.1:6379" }).services, ["notify"]);
  });
});

describe("TLS settings", () => {
  it("is cleartext unless both files are set, and needs both", () => {
    const cases: [Record<string, string>, string[]][] = [
      [{}, []],
      [{ TLS_CERT_FILE: "", TLS_KEY_FILE: "" }, []],
      [{ TLS_CERT_FILE: "c.pem", TLS_KEY_FILE: "k.pem" }, []],
      [{ TLS_CERT_FILE: "c.pem" }, ["TLS_KEY_FILE: required with TLS_CERT_FILE (TLS needs the certificate and its key; set neither for cleartext)"]],
      [{ TLS_CERT_FILE: "c.pem", TLS_KEY_FILE: "" }, ["TLS_KEY_FILE: required with TLS_CERT_FILE (TLS needs the certificate and its key; set neither for cleartext)"]],
      [{ TLS_KEY_FILE: "k.pem" }, ["TLS_CERT_FILE: required with TLS_KEY_FILE (TLS needs the certificate and its key; set neither for cleartext)"]],
    ];
    for (const [env, problems] of cases) {
      if (problems.length === 0) {
        const c = loadConfig(env);
        assert.equal(c.tls === undefined, env.TLS_CERT_FILE === undefined || env.TLS_CERT_FILE === "", JSON.stringify(env));
        if (c.tls) assert.ok(Object.isFrozen(c.tls), "the TLS settings are frozen");
      } else {
        assert.deepEqual(configError(env).problems, problems, JSON.stringify(env));
      }
    }
  });

  it("resolves relative paths; the files themselves are read at start (tls-files.spec.ts)", () => {
    assert.deepEqual(loadConfig({ TLS_CERT_FILE: "does/not/exist.pem", TLS_KEY_FILE: "/nor/this.pem" }).tls, {
      certFile: resolve("does/not/exist.pem"),
      keyFile: "/nor/this.pem",
    });
  });

  it("reports a half TLS setting with the other bad variables", () => {
    const err = configError({ TLS_KEY_FILE: "k.pem", PORT: "x" });
    assert.deepEqual(err.problems, [
      'PORT: "x" must be a whole number from 0 to 65535',
      "TLS_CERT_FILE: required with TLS_KEY_FILE (TLS needs the certificate and its key; set neither for cleartext)",
    ]);
  });
});

describe("durations", () => {
  it("parseDuration reads ms, s, m, h and d", () => {
    const cases: [string, number | undefined][] = [
      ["250ms", 250],
      ["0ms", 0],
      ["15s", 15_000],
      ["15m", 900_000],
      ["12h", 43_200_000],
      ["30d", 2_592_000_000],
      [" 2s ", 2000],
      ["15", undefined],
      ["1.5s", undefined],
      ["-1s", undefined],
      ["+1s", undefined],
      ["15M", undefined],
      ["1w", undefined],
      ["1 s", undefined],
      ["s", undefined],
      ["", undefined],
      ["1s1m", undefined],
    ];
    for (const [text, want] of cases) assert.equal(parseDuration(text), want, JSON.stringify(text));
  });

  it("enforces each duration's minimum", () => {
    assert.equal(loadConfig({ ACCESS_TOKEN_TTL: "1s" }).accessTokenTtlMs, 1000);
    assert.match(configError({ ACCESS_TOKEN_TTL: "999ms" }).problems[0] ?? "", /^ACCESS_TOKEN_TTL: "999ms" must be a duration/);
    assert.equal(loadConfig({ REFRESH_TOKEN_TTL: "1m" }).refreshTokenTtlMs, 60_000);
    configError({ REFRESH_TOKEN_TTL: "59999ms" });
    assert.equal(loadConfig({ HEARTBEAT_INTERVAL: "100ms" }).heartbeatMs, 100);
    configError({ HEARTBEAT_INTERVAL: "99ms" });
    configError({ RETENTION: "999ms" });
  });

  it("rejects durations a timer or a date cannot hold", () => {
    // Node runs a timer longer than 2^31-1 ms after 1 ms: a 30-day heartbeat would fire continuously.
    assert.equal(loadConfig({ HEARTBEAT_INTERVAL: `${MAX_TIMER_MS}ms` }).heartbeatMs, MAX_TIMER_MS);
    assert.match(configError({ HEARTBEAT_INTERVAL: "30d" }).problems[0] ?? "", /^HEARTBEAT_INTERVAL: "30d"/);
    // now + a refresh TTL must stay a storable timestamp.
    assert.match(configError({ REFRESH_TOKEN_TTL: "1000000000000d" }).problems[0] ?? "", /^REFRESH_TOKEN_TTL/);
    assert.equal(loadConfig({ RETENTION: "365d" }).retentionMs, 365 * 86_400_000);
  });
});

describe("redactUrl", () => {
  it("hides credentials in URLs quoted in config errors", async () => {
    const { redactUrl, loadConfig: load } = await import("./config.js");
    assert.equal(redactUrl("redis://:s3cret@cache:6379"), "redis://[redacted]@cache:6379");
    assert.equal(redactUrl("nats://user:pw@nats:4222"), "nats://[redacted]@nats:4222");
    assert.equal(redactUrl("sqlite:./data/chat.db"), "sqlite:./data/chat.db");
    assert.throws(() => load({ CACHE_URL: "rediss://:s3cret@cache:6379" }), (e: Error) => !e.message.includes("s3cret"));
  });
});
