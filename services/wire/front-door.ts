/**
 * The front door: every call to a routed method (chat.v1, health,
 * reflection) passes here before anything reads its body. It resolves the
 * method from the path and the protocol from the content type, checks the
 * bearer token of non-public chat.v1 methods first (refused at once, body
 * unread), reads the single request message of unary and server-streaming
 * calls within the method's size cap, the body deadline and, for calls
 * without a token, the process-wide budget, refuses undecodable messages
 * with INVALID_ARGUMENT, and hands the message to a fast path or to
 * connect-node. Bidirectional calls keep streaming their body to their
 * handler, authenticated first. Public streaming calls (health Watch,
 * reflection), which may stay open, are held at most
 * MAX_OPEN_CALLS_WITHOUT_TOKEN at once; a fast unary call's body is bounded
 * by its grpc-timeout too, when that is sooner than REQUEST_BODY_TIMEOUT.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues } from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, codeToString } from "@connectrpc/connect/protocol-connect";
import type { AccessTokens } from "../auth/access-tokens.js";
import type { Logger } from "../core/logger.js";
import type { Clock } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import { envelope } from "../delivery/grpc-codec.js";
import type { MessageService } from "../message/message-service.js";
import { verifyBearer } from "../rpc/bearer.js";
import { logCallEnd, requestIdOf } from "../rpc/call-log.js";
import { toConnectError } from "../rpc/errors.js";
import { isPublicMethod } from "../rpc/interceptors.js";
import type { ConnectAdapter } from "./connect-adapter.js";
import { CONNECT_RPC, serveFastConnect } from "./framed-connect.js";
import { type FastPathDeps, SUBSCRIBE_RPC, serveFastSubscribe } from "./framed-subscribe.js";
import { type FastUnaryDeps, type FastUnaryRoute, grpcTimeoutMs, serveFastUnary } from "./framed-unary.js";
import { type AnyRequest, type AnyResponse, FrameWriter, type WireProtocol } from "./framing.js";
import { BodyBudget, BodyDeadlines, type BodyFraming, readRequestBody, readRequestStream } from "./request-body.js";

/**
 * PUBLIC_REQUEST_BYTES caps each request message of the methods callable
 * without a token: Register, Login, RefreshToken, health and reflection.
 * The largest valid auth request is under 1 KiB in binary (core/validate.ts:
 * a username of at most 32 characters, a password of at most 256 UTF-16
 * units, i.e. 768 UTF-8 bytes; refresh tokens are 43 characters) and under
 * 4 KiB in JSON with every character escaped (`\uXXXX`, 6 bytes per unit);
 * health and reflection requests carry one service, file or symbol name.
 * 8 KiB leaves room for whitespace.
 */
export const PUBLIC_REQUEST_BYTES = 8192;

/** RequestProtocol is what a request's content type says: the framing, the codec, and the content type to answer with. */
interface RequestProtocol {
  /** wire is the framed protocol, or "connect-unary" (a bare message). */
  readonly wire: WireProtocol | "connect-unary";
  readonly binary: boolean;
  readonly responseType: string;
}

const proto = (wire: RequestProtocol["wire"], responseType: string): RequestProtocol => ({ wire, binary: true, responseType });
const json = (wire: RequestProtocol["wire"], responseType: string): RequestProtocol => ({ wire, binary: false, responseType });

/** PROTOCOLS maps each content type served (without parameters, lower case) to its protocol. */
const PROTOCOLS: ReadonlyMap<string, RequestProtocol> = new Map([
  ["application/grpc", proto("grpc", "application/grpc")],
  ["application/grpc+proto", proto("grpc", "application/grpc+proto")],
  ["application/grpc+json", json("grpc", "application/grpc+json")],
  ["application/grpc-web", proto("grpc-web", "application/grpc-web+proto")],
  ["application/grpc-web+proto", proto("grpc-web", "application/grpc-web+proto")],
  ["application/grpc-web+json", json("grpc-web", "application/grpc-web+json")],
  ["application/grpc-web-text", proto("grpc-web-text", "application/grpc-web-text+proto")],
  ["application/grpc-web-text+proto", proto("grpc-web-text", "application/grpc-web-text+proto")],
  ["application/connect+proto", proto("connect", "application/connect+proto")],
  ["application/connect+json", json("connect", "application/connect+json")],
  ["application/proto", proto("connect-unary", "application/json")],
  ["application/json", json("connect-unary", "application/json")],
]);

/** Route is one routed method as the front door sees it. */
interface Route {
  readonly handler: UniversalHandler;
  /** rpc is "package.Service/Method". */
  readonly rpc: string;
  readonly public: boolean;
  /** streamingRequest: the client sends a stream (bidirectional or client streaming); its body is not read here. */
  readonly streamingRequest: boolean;
  readonly unary: boolean;
  readonly maxBytes: number;
  /** openingMaxBytes caps the first message of a streaming request (its later ones: maxBytes). */
  readonly openingMaxBytes: number;
  readonly fastUnary: FastUnaryRoute | undefined;
}

/** FrontDoorOptions are what the front door needs from the app. */
export interface FrontDoorOptions {
  readonly adapter: ConnectAdapter;
  readonly tokens: AccessTokens;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly maxRequestBytes: number;
  readonly requestBodyTimeoutMs: number;
  readonly unauthenticatedBodyBytes: number;
  /**
   * maxOpenCallsWithoutToken caps the calls without a token that stay open
   * (health Watch, reflection streams: the public streaming methods) held at
   * once by this process; past it they are RESOURCE_EXHAUSTED with
   * retry-after. Default unlimited.
   */
  readonly maxOpenCallsWithoutToken?: number;
  /**
   * requestBytes overrides the request cap of named methods, e.g.
   * `{ "chat.v1.StreamService/Subscribe": SUBSCRIBE_REQUEST_BYTES }`: the
   * hook for limits other layers own. Others get MAX_REQUEST_BYTES, the
   * methods callable without a token PUBLIC_REQUEST_BYTES.
   */
  readonly requestBytes?: Readonly<Record<string, number>>;
  /**
   * openingRequestBytes overrides the cap of the first message only of named
   * streaming-request methods (e.g. StreamService/Connect, whose first
   * message carries the cursors); their later messages keep the method's cap.
   */
  readonly openingRequestBytes?: Readonly<Record<string, number>>;
  /** contextValues makes a connect-node call's context values; `principal` is the verified caller, if any. */
  readonly contextValues: (req: AnyRequest, principal: Principal | undefined) => ContextValues;
  /** unaryRoutes are the unary fast path's routes, by "package.Service/Method". */
  readonly unaryRoutes: readonly FastUnaryRoute[];
  readonly fastUnary: FastUnaryDeps;
  /** streams are the stream fast paths' needs; undefined when this process serves no streams. */
  readonly streams: (FastPathDeps & { readonly messages: MessageService }) | undefined;
  /** onRefused hears each call the front door answers itself, with its status code (metrics). */
  readonly onRefused?: (rpc: string, code: Code) => void;
  /** fallback serves requests to paths that are no method (e.g. the JWKS, 404). */
  readonly fallback: (req: AnyRequest, res: AnyResponse) => void;
}

/** FrontDoor is the request handler, with its process-wide budget and open-call count (for tests and metrics). */
export interface FrontDoor {
  (req: AnyRequest, res: AnyResponse): void;
  readonly budget: BodyBudget;
  /** openCallsWithoutToken is how many public streaming calls (Watch, reflection) are open now. */
  readonly openCallsWithoutToken: () => number;
}

/** OPEN_CALLS_RETRY_AFTER_S is the retry-after of a call refused by MAX_OPEN_CALLS_WITHOUT_TOKEN (such calls free slots slowly). */
const OPEN_CALLS_RETRY_AFTER_S = "5";

/** createFrontDoor builds the request handler of every routed method. */
export function createFrontDoor(opts: FrontDoorOptions): FrontDoor {
  const { adapter, tokens, clock, logger } = opts;
  const fastUnary = new Map(opts.unaryRoutes.map((r) => [r.rpc, r]));
  const routes = new Map<string, Route>();
  for (const [path, handler] of adapter.handlers) {
    const rpc = `${handler.service.typeName}/${handler.method.name}`;
    const isPublic = isPublicMethod(handler.service.typeName, handler.method.name);
    const kind = handler.method.methodKind;
    const maxBytes = opts.requestBytes?.[rpc] ?? (isPublic ? Math.min(PUBLIC_REQUEST_BYTES, opts.maxRequestBytes) : opts.maxRequestBytes);
    routes.set(path, {
      handler,
      rpc,
      public: isPublic,
      streamingRequest: kind === "client_streaming" || kind === "bidi_streaming",
      unary: kind === "unary",
      maxBytes,
      openingMaxBytes: opts.openingRequestBytes?.[rpc] ?? maxBytes,
      fastUnary: fastUnary.get(rpc),
    });
  }
  const budget = new BodyBudget(opts.unauthenticatedBodyBytes);
  const deadlines = new BodyDeadlines(opts.requestBodyTimeoutMs);
  const maxOpen = opts.maxOpenCallsWithoutToken ?? Number.POSITIVE_INFINITY;
  let open = 0;

  const refuse = (
    route: Route,
    protocol: RequestProtocol,
    req: AnyRequest,
    res: AnyResponse,
    error: ConnectError,
    bodyComplete: boolean,
    principal: Principal | undefined,
    arrived: number,
  ) => {
    opts.onRefused?.(route.rpc, error.code);
    const requestId = requestIdOf(req.headers["x-request-id"]);
    // The line of every call (call-log.ts; userId when the token was verified).
    logCallEnd(logger, { rpc: route.rpc, requestId, userId: principal?.userId, durationMs: Math.round(performance.now() - arrived) }, error);
    if (res.destroyed || res.headersSent) return;
    res.setHeader("x-request-id", requestId);
    // HTTP/1.1: what is left of a body not yet received is not read; the connection closes after the answer. A body
    // received whole (Node discards it after the answer) keeps the connection for the client's next call.
    // (HTTP/2: server/one-port-server.ts discards it and resets the stream after a grace.)
    if (!bodyComplete && !("stream" in res) && !bodyReceived(req)) res.setHeader("connection", "close");
    if (protocol.wire !== "connect-unary") return new FrameWriter(protocol.wire, res, undefined, protocol.responseType).finish(error);
    const headers: Record<string, string> = { "content-type": "application/json" };
    error.metadata.forEach((value, key) => {
      headers[key] = value;
    });
    res.writeHead(codeToHttpStatus(error.code), headers);
    res.end(JSON.stringify({ code: codeToString(error.code), message: error.rawMessage }));
  };

  const dispatch = (route: Route, protocol: RequestProtocol, req: AnyRequest, res: AnyResponse, principal: Principal | undefined, arrived: number, message: Buffer, flags: number) => {
    const { wire, binary } = protocol;
    const h2 = req.httpVersionMajor === 2;
    if (principal && route.fastUnary && takesFastUnary(route, protocol, req)) {
      return serveFastUnary(route.fastUnary, wire as "grpc" | "grpc-web" | "grpc-web-text", req, res, opts.fastUnary, principal, message, arrived);
    }
    if (binary && principal && opts.streams && route.rpc === SUBSCRIBE_RPC && wire !== "connect-unary" && (wire !== "grpc" || h2)) {
      return serveFastSubscribe(wire, req, res, opts.streams, principal, message);
    }
    // connect-node would answer undecodable bytes INTERNAL, outside the interceptors: decode here first.
    if (binary && !compressed(req, protocol)) {
      try {
        checkDecodes(route, message);
      } catch (e) {
        return refuse(route, protocol, req, res, toConnectError(e), true, principal, arrived);
      }
    }
    const body = wire === "connect-unary" ? message : envelope(flags, message);
    adapter.serve(route.handler, req, res, opts.contextValues(req, principal), body, wire === "grpc-web-text" ? "grpc-web-text" : undefined);
  };

  const admit = (route: Route, protocol: RequestProtocol, req: AnyRequest, res: AnyResponse, principal: Principal | undefined, arrived: number) => {
    if (route.streamingRequest) {
      // The body streams to the handler, message by message: the fast path's own reader (authenticated callers
      // only), else readRequestStream, with each message bounded as a unary body is.
      const { wire, binary } = protocol;
      if (opts.streams && principal && route.rpc === CONNECT_RPC && binary && req.httpVersionMajor === 2 && (wire === "grpc" || wire === "connect")) {
        return serveFastConnect(wire, req, res, opts.streams, principal, deadlines);
      }
      if (wire === "connect-unary" || wire === "grpc-web-text") return adapter.serve(route.handler, req, res, opts.contextValues(req, principal));
      const limits = {
        maxBytes: route.maxBytes,
        openingMaxBytes: route.openingMaxBytes,
        method: route.handler.method.name,
        deadlines,
        ...(principal ? {} : { budget }),
        ...(binary ? { check: (message: Buffer) => checkDecodes(route, message) } : {}),
      };
      return adapter.serve(route.handler, req, res, opts.contextValues(req, principal), readRequestStream(req, res, limits));
    }
    // A fast unary call's body must also arrive within its grpc-timeout (when sooner than REQUEST_BODY_TIMEOUT):
    // the call is answered DEADLINE_EXCEEDED at its deadline, not when a trickling body ends.
    let answered = false;
    let deadline: NodeJS.Timeout | undefined;
    let cancelBody: (() => void) | undefined;
    const leftMs = principal && takesFastUnary(route, protocol, req) ? deadlineLeftMs(req, arrived) : undefined;
    if (leftMs !== undefined && leftMs < opts.requestBodyTimeoutMs) {
      deadline = setTimeout(() => {
        answered = true;
        cancelBody?.(); // what the body held is released now, not at REQUEST_BODY_TIMEOUT
        const error = new ConnectError("the call's deadline (grpc-timeout) passed before its request body arrived", Code.DeadlineExceeded);
        refuse(route, protocol, req, res, error, false, principal, arrived);
      }, Math.max(0, Math.ceil(leftMs)));
    }
    cancelBody = readRequestBody(
      req,
      res,
      {
        framing: FRAMING[protocol.wire],
        maxBytes: route.maxBytes,
        method: route.handler.method.name,
        deadlines,
        ...(principal ? {} : { budget }),
      },
      (message, flags) => {
        clearTimeout(deadline);
        if (!answered) dispatch(route, protocol, req, res, principal, arrived, message, flags);
      },
      (refusal) => {
        clearTimeout(deadline);
        if (!answered) refuse(route, protocol, req, res, refusal.error, refusal.bodyComplete, principal, arrived);
      },
    );
  };

  const frontDoor = (req: AnyRequest, res: AnyResponse) => {
    const url = req.url ?? "";
    const q = url.indexOf("?");
    const route = routes.get(q < 0 ? url : url.slice(0, q));
    if (!route) return opts.fallback(req, res);
    const protocol = req.method === "POST" ? protocolOf(req, route) : undefined;
    // Anything else (a GET, an unknown content type) connect-node answers without reading a body (405, 415).
    if (!protocol) return adapter.serve(route.handler, req, res, opts.contextValues(req, undefined));
    const arrived = performance.now();
    req.on("error", () => {});
    res.on("error", () => {});
    if (route.public) {
      // Public streaming calls (health Watch, reflection) may stay open for long: at most maxOpen at once.
      if (!route.unary) {
        if (open >= maxOpen) {
          const metadata = new Headers({ "retry-after": OPEN_CALLS_RETRY_AFTER_S });
          const error = new ConnectError(
            `the server holds too many open calls without a token (MAX_OPEN_CALLS_WITHOUT_TOKEN=${maxOpen}); retry in a moment`,
            Code.ResourceExhausted,
            metadata,
          );
          return refuse(route, protocol, req, res, error, false, undefined, arrived);
        }
        open++;
        res.once("close", () => open--);
      }
      return admit(route, protocol, req, res, undefined, arrived);
    }
    verifyBearer(tokens, clock, req.headers.authorization).then(
      (principal) => admit(route, protocol, req, res, principal, arrived),
      (e: unknown) => refuse(route, protocol, req, res, toConnectError(e), false, undefined, arrived),
    );
  };
  return Object.assign(frontDoor, { budget, openCallsWithoutToken: () => open });
}

/**
 * bodyReceived tells whether an HTTP/1.1 request's whole body has arrived:
 * parsed to its end, or all of its content-length buffered (the parser may
 * not have reached the message's end when the handler runs, e.g. on a
 * reused connection).
 */
function bodyReceived(req: AnyRequest): boolean {
  if (req.complete) return true;
  const length = Number(req.headers["content-length"] ?? Number.NaN);
  return Number.isSafeInteger(length) && req.readableLength >= length;
}

/** takesFastUnary tells whether an authenticated call to `route` is served by the unary fast path: a fast route, binary gRPC (HTTP/2) or gRPC-Web. */
function takesFastUnary(route: Route, protocol: RequestProtocol, req: AnyRequest): boolean {
  const { wire, binary } = protocol;
  return binary && route.fastUnary !== undefined && (wire === "grpc-web" || wire === "grpc-web-text" || (wire === "grpc" && req.httpVersionMajor === 2));
}

/** deadlineLeftMs is what is left of the call's grpc-timeout, counted from `arrived`; undefined without one (or a malformed one: framed-unary.ts refuses it). */
function deadlineLeftMs(req: AnyRequest, arrived: number): number | undefined {
  let timeoutMs: number | undefined;
  try {
    timeoutMs = grpcTimeoutMs(req.headers["grpc-timeout"]);
  } catch {
    return undefined;
  }
  return timeoutMs === undefined ? undefined : timeoutMs - (performance.now() - arrived);
}

/** checkDecodes throws ConnectError InvalidArgument, naming the type and the reason, for a message that is not the method's input in binary. */
function checkDecodes(route: Route, message: Buffer): void {
  try {
    fromBinary(route.handler.method.input, message);
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new ConnectError(`request is not a valid ${route.handler.method.input.typeName} (protobuf binary): ${reason}`, Code.InvalidArgument, undefined, undefined, e);
  }
}

const FRAMING: Readonly<Record<RequestProtocol["wire"], BodyFraming>> = {
  grpc: "framed",
  "grpc-web": "framed",
  "grpc-web-text": "text",
  connect: "framed",
  "connect-unary": "unframed",
};

/** protocolOf reads the content type; undefined for one not served, or one of the wrong kind for the method (Connect unary vs streaming). */
function protocolOf(req: AnyRequest, route: Route): RequestProtocol | undefined {
  const type = req.headers["content-type"];
  if (type === undefined) return undefined;
  const semi = type.indexOf(";");
  const protocol = PROTOCOLS.get((semi < 0 ? type : type.slice(0, semi)).trim().toLowerCase());
  if (!protocol) return undefined;
  if ((protocol.wire === "connect-unary") !== route.unary && (protocol.wire === "connect" || protocol.wire === "connect-unary")) return undefined;
  return protocol;
}

/** compressed is true for a Connect unary body with a content-encoding (connect-node refuses it with its own status). */
function compressed(req: AnyRequest, protocol: RequestProtocol): boolean {
  if (protocol.wire !== "connect-unary") return false;
  const encoding = req.headers["content-encoding"];
  return encoding !== undefined && encoding !== "identity";
}
