/**
 * Test fixtures: a real server process-in-test on an ephemeral port with
 * its own data directory, and typed clients over each protocol.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { type Client, type Interceptor, type Transport, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { AuthService } from "../../gen/chat/v1/auth_service_pb.js";
import { GroupService } from "../../gen/chat/v1/group_service_pb.js";
import { MessageService } from "../../gen/chat/v1/message_service_pb.js";
import { StreamService } from "../../gen/chat/v1/stream_service_pb.js";
import type { Clock } from "../../services/core/ports.js";
import { type App, startApp } from "../../services/server/app.js";
import { loadConfig } from "../../services/server/config.js";

/** TestServer is a running app plus what a test needs to reach it and restart it. */
export interface TestServer {
  app: App;
  readonly port: number;
  readonly baseUrl: string;
  readonly dataDir: string;
  /** restart stops the app and starts a new one on the same data directory (new port unless fixed). */
  restart(): Promise<void>;
  /** stop stops the app and deletes the data directory. */
  stop(): Promise<void>;
}

/** FakeClock is a settable clock that starts at the real time. */
export class MovableClock implements Clock {
  offsetMs = 0;
  now(): number {
    return Date.now() + this.offsetMs;
  }
}

/** startTestServer starts the all-in-one app on 127.0.0.1:0 with a fresh data directory. */
export async function startTestServer(
  env: Record<string, string> = {},
  opts: { clock?: Clock; logger?: import("../../services/core/logger.js").Logger } = {},
): Promise<TestServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "chat-test-"));
  const logger = opts.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
  // Tests register many users from 127.0.0.1 and send bursts from one user; both limits have their own tests.
  const config = () =>
    loadConfig({
      DATA_DIR: dataDir,
      PORT: "0",
      SHUTDOWN_GRACE: "2s",
      REGISTRATIONS_PER_MINUTE_PER_ADDRESS: "1000000",
      SEND_BURST: "1000000",
      ...env,
    });
  const start = () => startApp(config(), { logger, ...(opts.clock ? { clock: opts.clock } : {}) });
  let app = await start();
  const server: TestServer = {
    get app() {
      return app;
    },
    set app(a: App) {
      app = a;
    },
    get port() {
      return app.port;
    },
    get baseUrl() {
      return `http://127.0.0.1:${app.port}`;
    },
    dataDir,
    async restart() {
      await app.stop();
      app = await start();
    },
    async stop() {
      await app.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

/** Protocol is one of the three protocols served on the port ("connect" uses JSON, "connect-binary" protobuf). */
export type Protocol = "grpc" | "grpc-web" | "connect" | "connect-binary";

/** PROTOCOLS lists them all. */
export const PROTOCOLS: readonly Protocol[] = ["grpc", "grpc-web", "connect"];

/** bearer adds `authorization: Bearer <token>` to every call when a token is given. */
export function bearer(token: () => string | undefined): Interceptor {
  return (next) => (req) => {
    const t = token();
    if (t) req.header.set("authorization", `Bearer ${t}`);
    return next(req);
  };
}

/**
 * ClientTls is what a client over https:// trusts (a test's CA) and, for the HTTP/1.1 transports, the ALPN protocols
 * it offers (a browser's WebSocket offers `http/1.1`; Node's https offers none unless told).
 */
export interface ClientTls {
  readonly ca: string;
  readonly http1Alpn?: string[];
}

/** transportFor builds a connect-node client transport for a protocol (over TLS, with `tls`, to an https:// baseUrl). */
export function transportFor(baseUrl: string, protocol: Protocol, interceptors: Interceptor[] = [], tls?: ClientTls): Transport {
  const h2 = tls ? { nodeOptions: { ca: tls.ca } } : {};
  const h1 = tls ? { nodeOptions: { ca: tls.ca, ...(tls.http1Alpn ? { ALPNProtocols: tls.http1Alpn } : {}) } } : {};
  switch (protocol) {
    case "grpc":
      return createGrpcTransport({ baseUrl, interceptors, ...h2 });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors, ...h1 });
    case "connect":
      return createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: false, interceptors, ...h2 });
    case "connect-binary":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, interceptors, ...h1 });
  }
}

/** Clients are typed clients of every chat.v1 service, sharing one transport and one token. */
export interface Clients {
  auth: Client<typeof AuthService>;
  groups: Client<typeof GroupService>;
  messages: Client<typeof MessageService>;
  streams: Client<typeof StreamService>;
  /** The token sent with each call; set by `login`. */
  token: string | undefined;
  refreshToken: string | undefined;
  userId: string;
  username: string;
}

/** clientsFor creates unauthenticated clients over `protocol` (over TLS with `tls`). */
export function clientsFor(baseUrl: string, protocol: Protocol = "grpc", tls?: ClientTls): Clients {
  const state: Clients = {} as Clients;
  const transport = transportFor(baseUrl, protocol, [bearer(() => state.token)], tls);
  const make = <S extends DescService>(s: S) => createClient(s, transport);
  Object.assign(state, {
    auth: make(AuthService),
    groups: make(GroupService),
    messages: make(MessageService),
    streams: make(StreamService),
    token: undefined,
    refreshToken: undefined,
    userId: "",
    username: "",
  });
  return state;
}

let userCounter = 0;

/** uniqueName returns a fresh valid username with the given prefix. */
export function uniqueName(prefix = "user"): string {
  userCounter += 1;
  return `${prefix}${process.pid % 10000}x${userCounter}`.slice(0, 32);
}

/** registerUser registers a fresh user and returns logged-in clients for it (over TLS with `tls`). */
export async function registerUser(baseUrl: string, protocol: Protocol = "grpc", prefix = "user", tls?: ClientTls): Promise<Clients> {
  const c = clientsFor(baseUrl, protocol, tls);
  const username = uniqueName(prefix);
  const res = await c.auth.register({ username, password: "correct horse battery" });
  c.token = res.tokens?.accessToken;
  c.refreshToken = res.tokens?.refreshToken;
  c.userId = res.user?.userId ?? "";
  c.username = username;
  return c;
}
