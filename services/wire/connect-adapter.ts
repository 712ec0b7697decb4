/**
 * connect-node's routes behind the front door: the adapter connectNodeAdapter
 * would build, made from the pieces connect-node exports, so that a request
 * body the front door has already read can be handed over, and connect-node's
 * answers leave in this server's own wire conventions (grpc-message encoded as
 * the gRPC spec asks, gRPC-Web in base64 text mode when asked for).
 */
import http2 from "node:http2";
import { Code, ConnectError, type ConnectRouterOptions, type ContextValues, createConnectRouter, type ConnectRouter } from "@connectrpc/connect";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import type { Logger } from "../core/logger.js";
import { envelope } from "../delivery/grpc-codec.js";
import { type AnyRequest, type AnyResponse, percentEncode } from "./framing.js";

/** ConnectAdapter serves connect-node's routes, one handler per request path. */
export interface ConnectAdapter {
  /** handlers maps each request path ("/package.Service/Method") to its connect-node handler. */
  readonly handlers: ReadonlyMap<string, UniversalHandler>;
  /**
   * serve runs `handler` for a request. With `body`, that is the request
   * body (already read, and for "grpc-web-text" already base64-decoded; or
   * the messages of a streamed body as they arrive); without, connect-node
   * reads the request itself. "grpc-web-text" asks
   * for the response in text mode: each written chunk base64-encoded on its
   * own, so a live stream's bytes are never held back.
   */
  serve(
    handler: UniversalHandler,
    req: AnyRequest,
    res: AnyResponse,
    contextValues: ContextValues,
    body?: Uint8Array | AsyncIterable<Uint8Array>,
    mode?: "grpc-web-text",
  ): void;
}

/**
 * createConnectAdapter registers the routes on a connect router with
 * `options` (interceptors, limits, compression) and returns the adapter. A
 * handler that fails outside the RPC (the client went away while its answer
 * was written) is logged at debug when aborted, else at error.
 */
export function createConnectAdapter(
  options: ConnectRouterOptions & { routes: (router: ConnectRouter) => void; logger: Logger },
): ConnectAdapter {
  const router = createConnectRouter(options);
  options.routes(router);
  const handlers = new Map<string, UniversalHandler>();
  for (const handler of router.handlers) handlers.set(handler.requestPath, handler);
  const { logger } = options;
  return {
    handlers,
    serve(handler, req, res, contextValues, body, mode) {
      const rpc = `${handler.service.typeName}/${handler.method.name}`;
      // Nothing thrown here may escape: connect-node throws synchronously for a request it cannot make a URL of
      // (no Host on HTTP/1.0, a bad Host or :authority), and the caller is an HTTP server's request listener.
      try {
        const uReq = universalRequestFromNodeRequest(req, res, undefined, contextValues);
        if (mode === "grpc-web-text") uReq.header.set("content-type", "application/grpc-web+proto");
        const request = body === undefined ? uReq : { ...uReq, body: body instanceof Uint8Array ? oneChunk(body) : body };
        handler(request)
          .then((uRes) => universalResponseToNodeResponse(ownConventions(uRes, mode), res))
          .catch((reason: unknown) => {
            const err = ConnectError.from(reason);
            const line = { rpc, err };
            if (err.code === Code.Aborted || res.destroyed) logger.debug(line, "connect-node handler ended with the client gone");
            else logger.error(line, "connect-node handler failed");
            // An answer that could not be written in full must not leave the stream (or connection) open.
            if (!res.writableEnded) destroyResponse(res);
          })
          .catch(() => {});
      } catch (reason) {
        const err = ConnectError.from(reason);
        logger.debug({ rpc, err, host: req.headers.host ?? null, authority: req.headers[":authority"] ?? null }, "request refused before connect-node: no usable URL");
        try {
          answerUnusable(req, res, err);
        } catch {
          destroyResponse(res);
        }
      }
    },
  };
}

/** destroyResponse ends a response abruptly: the HTTP/2 stream is reset, the HTTP/1 connection closed. */
function destroyResponse(res: AnyResponse): void {
  if ("stream" in res) {
    if (!res.stream.destroyed) res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  } else if (!res.destroyed) res.destroy();
}

/**
 * answerUnusable answers a request connect-node could not take (no usable
 * URL): INVALID_ARGUMENT, as a trailers-only gRPC or gRPC-Web answer for
 * those content types, else HTTP 400 with a Connect error body. The body is
 * not read; on HTTP/1 the connection closes after the answer.
 */
function answerUnusable(req: AnyRequest, res: AnyResponse, err: ConnectError): void {
  if (res.headersSent || res.writableEnded) {
    if (!res.writableEnded) destroyResponse(res);
    return;
  }
  const message = `the request has no usable authority (Host or :authority): ${err.rawMessage}`;
  const type = (req.headers["content-type"] ?? "").toLowerCase();
  const h1 = !("stream" in res);
  if (h1 && !req.complete) res.setHeader("connection", "close");
  if (type.startsWith("application/grpc")) {
    const responseType = type.startsWith("application/grpc-web-text") ? "application/grpc-web-text+proto" : type.startsWith("application/grpc-web") ? "application/grpc-web+proto" : "application/grpc+proto";
    res.writeHead(200, { "content-type": responseType, "grpc-status": String(Code.InvalidArgument), "grpc-message": percentEncode(message) });
    res.end();
    return;
  }
  res.writeHead(400, { "content-type": "application/json" });
  res.end(JSON.stringify({ code: "invalid_argument", message }));
}

async function* oneChunk(body: Uint8Array): AsyncIterable<Uint8Array> {
  yield body;
}

/**
 * ownConventions rewrites connect-node's response for this server's wire:
 * gRPC trailers and the gRPC-Web trailer frame get grpc-message encoded by
 * percentEncode (connect-node uses encodeURIComponent, whose "%3A" for ':'
 * grpc-js shows as is), and in "grpc-web-text" mode the content type says
 * so and every body chunk goes out base64-encoded on its own.
 */
function ownConventions(uRes: UniversalServerResponse, mode: "grpc-web-text" | undefined): UniversalServerResponse {
  const type = uRes.header?.get("content-type") ?? "";
  reencodeGrpcMessage(uRes.header);
  if (type.startsWith("application/grpc-web")) {
    if (mode === "grpc-web-text") uRes.header?.set("content-type", type.replace("application/grpc-web", "application/grpc-web-text"));
    const body = uRes.body;
    return body === undefined ? uRes : { ...uRes, body: grpcWebBody(body, mode === "grpc-web-text") };
  }
  if (type.startsWith("application/grpc")) {
    // connect-node fills the trailers while the body is written: rewrite them when they are read, after it.
    return {
      status: uRes.status,
      ...(uRes.header ? { header: uRes.header } : {}),
      ...(uRes.body ? { body: uRes.body } : {}),
      get trailer() {
        reencodeGrpcMessage(uRes.trailer);
        return uRes.trailer;
      },
    } as UniversalServerResponse;
  }
  return uRes;
}

/** grpcWebBody passes connect-node's gRPC-Web body through (one envelope per chunk), re-encoding the trailer frame's grpc-message. */
async function* grpcWebBody(body: AsyncIterable<Uint8Array>, text: boolean): AsyncIterable<Uint8Array> {
  for await (const chunk of body) {
    let out = chunk;
    if (chunk.length >= 5 && chunk[0] === 0x80) {
      const data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      if (data.readUInt32BE(1) === data.length - 5) out = reencodeTrailerFrame(data);
    }
    yield text ? Buffer.from(Buffer.from(out.buffer, out.byteOffset, out.byteLength).toString("base64"), "latin1") : out;
  }
}

function reencodeTrailerFrame(frame: Buffer): Buffer {
  const lines = frame.subarray(5).toString("latin1").split("\r\n");
  let changed = false;
  for (let i = 0; i < lines.length; i++) {
    const m = /^grpc-message:\s*(.*)$/i.exec(lines[i]!);
    if (m) {
      lines[i] = `grpc-message: ${percentEncode(decodeConnectMessage(m[1]!))}`;
      changed = true;
    }
  }
  if (!changed) return frame;
  return envelope(0x80, Buffer.from(lines.join("\r\n"), "latin1"));
}

function reencodeGrpcMessage(headers: Headers | undefined): void {
  const message = headers?.get("grpc-message");
  if (message !== null && message !== undefined) headers!.set("grpc-message", percentEncode(decodeConnectMessage(message)));
}

/** decodeConnectMessage undoes connect-node's encodeURIComponent (a value it did not make is kept as is). */
function decodeConnectMessage(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
