import { Code, ConnectError, type Interceptor, createContextKey } from "@connectrpc/connect";
import type { AccessTokens } from "../auth/access-tokens.js";
import type { Logger } from "../core/logger.js";
import type { Clock } from "../core/ports.js";
import type { Principal } from "../core/principal.js";
import { verifyBearer } from "./bearer.js";
import { logCallEnd, requestIdOf } from "./call-log.js";
import { toConnectError } from "./errors.js";

/** kPrincipal carries the authenticated caller; set by authInterceptor. */
export const kPrincipal = createContextKey<Principal | undefined>(undefined, { description: "principal" });

/** kClientAddress carries the client's address (socket, or X-Forwarded-For when trusted). */
export const kClientAddress = createContextKey<string>("unknown", { description: "client address" });

/** PUBLIC_METHODS are the chat.v1 methods callable without a token. Non-chat services (health, reflection) are public. */
export const PUBLIC_METHODS: ReadonlySet<string> = new Set([
  "chat.v1.AuthService/Register",
  "chat.v1.AuthService/Login",
  "chat.v1.AuthService/RefreshToken",
]);

/** isPublicMethod is true for the methods callable without a token: PUBLIC_METHODS and every method of a non-chat service. */
export function isPublicMethod(serviceTypeName: string, methodName: string): boolean {
  return !serviceTypeName.startsWith("chat.") || PUBLIC_METHODS.has(`${serviceTypeName}/${methodName}`);
}

/**
 * authInterceptor verifies `authorization: Bearer <jwt>` (verifyBearer) on
 * every chat.v1 call but the public ones and stores the principal in
 * kPrincipal; a missing or bad token fails Unauthenticated before the
 * handler runs. A call whose principal the front door already verified
 * (kPrincipal set) is not verified again.
 */
export function authInterceptor(tokens: AccessTokens, clock: Clock): Interceptor {
  return (next) => async (req) => {
    if (isPublicMethod(req.service.typeName, req.method.name) || req.contextValues.get(kPrincipal)) return next(req);
    try {
      req.contextValues.set(kPrincipal, await verifyBearer(tokens, clock, req.header.get("authorization")));
    } catch (e) {
      throw toConnectError(e);
    }
    return next(req);
  };
}

/** kRequestId carries the request id (from `x-request-id`, e.g. set by Envoy, or a new one: call-log.ts). */
export const kRequestId = createContextKey<string>("", { description: "request id" });

/**
 * errorInterceptor gives every call a request id (echoed in the response
 * header), maps whatever a handler throws (also mid-stream) to a status with
 * toConnectError, and logs the call's end; both by the policy of call-log.ts.
 */
export function errorInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    const started = Date.now();
    const requestId = requestIdOf(req.header.get("x-request-id"));
    req.contextValues.set(kRequestId, requestId);
    const line = () => ({
      rpc: `${req.service.typeName}/${req.method.name}`,
      requestId,
      userId: req.contextValues.get(kPrincipal)?.userId,
      durationMs: Date.now() - started,
    });
    const log = (e: unknown): ConnectError => {
      // Whatever a handler throws once its client went away (a reset stream, a closed connection: e.g. a
      // reflection stream's request iterator failing with "Premature close") is the client's doing: Canceled, at
      // debug, never an Internal error in the logs.
      const err = req.signal.aborted && !(e instanceof ConnectError) ? new ConnectError("the client went away", Code.Canceled, undefined, undefined, e) : toConnectError(e);
      err.metadata.set("x-request-id", requestId);
      logCallEnd(logger, line(), err);
      return err;
    };
    try {
      const res = await next(req);
      res.header.set("x-request-id", requestId);
      if (!res.stream) {
        logCallEnd(logger, line(), undefined);
        return res;
      }
      return { ...res, message: mapStreamErrors(res.message, log) };
    } catch (e) {
      throw log(e);
    }
  };
}

async function* mapStreamErrors<T>(messages: AsyncIterable<T>, map: (e: unknown) => ConnectError): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (e) {
    throw map(e);
  }
}

/**
 * sendResultInterceptor reports the outcome of every unary
 * chat.v1.MessageService/SendMessage call that reached the interceptors
 * (also one refused for a missing token): undefined for OK, else the status
 * code the client gets. Put it first (outermost), so it sees the status
 * errorInterceptor made of the error.
 */
export function sendResultInterceptor(observe: (code: Code | undefined) => void): Interceptor {
  return (next) => async (req) => {
    if (req.method.name !== "SendMessage" || req.service.typeName !== "chat.v1.MessageService") return next(req);
    try {
      const res = await next(req);
      observe(undefined);
      return res;
    } catch (e) {
      observe(toConnectError(e).code);
      throw e;
    }
  };
}

/** principalOf returns the caller of an authenticated RPC. */
export function principalOf(values: { get<T>(key: { id: symbol; defaultValue: T }): T }): Principal {
  const principal = values.get(kPrincipal);
  if (!principal) throw new ConnectError("not authenticated", Code.Unauthenticated);
  return principal;
}
