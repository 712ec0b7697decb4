/**
 * StreamService/Subscribe over WebSocket: the cheapest delivery transport
 * (no HTTP/2 session per connection: about a quarter of the memory and less
 * CPU per delivery than the gRPC fast path, see docs/performance.md), and
 * the one browsers can hold open natively. Connect (sends and acks on the
 * same socket) is its sibling in ws-connect.ts; both share the handshake,
 * sink and close codes of ws-endpoint.ts.
 *
 * The contract (docs/websocket.md):
 * - `GET /chat.v1.StreamService/Subscribe` with `Upgrade: websocket`,
 *   offering the subprotocol `chat.v1.proto`, which the server selects;
 * - the access token in `authorization: Bearer <token>` or, for browsers
 *   (which cannot set headers), as a second offered subprotocol
 *   `bearer.<token>`; the server never echoes it. It is verified before the
 *   upgrade: without a valid token the handshake is refused with HTTP 401
 *   and a text body. A token that expires (or whose session is revoked)
 *   after the upgrade ends the stream with close code 4016;
 * - the client sends one binary message, a SubscribeRequest; the server
 *   sends binary messages, each one SubscribeResponse, in the same order and
 *   with the same guarantees as the gRPC stream;
 * - the server ends the stream with a close frame whose code is 4000 + the
 *   gRPC status code (4008 RESOURCE_EXHAUSTED, 4014 UNAVAILABLE, 4016
 *   UNAUTHENTICATED, ...) and whose reason is the status message.
 */
import type net from "node:net";
import type { WebSocket } from "ws";
import { ChatError } from "../core/errors.js";
import type { Principal } from "../core/principal.js";
import { openStream } from "../delivery/open-stream.js";
import type { StreamHandle } from "../delivery/stream-hub.js";
import type { MessageService } from "../message/message-service.js";
import { CONNECT_PATH, CONNECT_RPC } from "./framed-connect.js";
import { type FastPathDeps, SUBSCRIBE_PATH, SUBSCRIBE_RPC } from "./framed-subscribe.js";
import { serveWsConnect } from "./ws-connect.js";
import { type WsEndpoint, WsStreamCall, type WsUpgradeServer, wsUpgradeServer } from "./ws-endpoint.js";

export { WS_BEARER_PREFIX, WS_CLOSE_BASE, WS_SUBPROTOCOL, closeReason } from "./ws-endpoint.js";

/**
 * wsSubscribeServer makes the WebSocket server of StreamService over the
 * hub of `deps`: Subscribe at SUBSCRIBE_PATH and, when `deps.messages` is
 * given, Connect at CONNECT_PATH (ws-connect.ts); every other path gets 404.
 */
export function wsSubscribeServer(deps: FastPathDeps & { readonly messages?: MessageService }): WsUpgradeServer {
  const endpoints = new Map<string, WsEndpoint>([[SUBSCRIBE_PATH, { rpc: SUBSCRIBE_RPC, serve: (ws, socket, caller) => serveWsSubscribe(ws, socket, caller, deps) }]]);
  const { messages } = deps;
  if (messages) endpoints.set(CONNECT_PATH, { rpc: CONNECT_RPC, serve: (ws, socket, caller) => serveWsConnect(ws, socket, caller, { ...deps, messages }) });
  return wsUpgradeServer(deps, endpoints);
}

/** serveWsSubscribe runs one upgraded connection whose token verified: one SubscribeRequest, then the hub's stream. */
function serveWsSubscribe(ws: WebSocket, socket: net.Socket, caller: Principal, deps: FastPathDeps): void {
  let handle: StreamHandle | undefined;
  let requested = false;
  const call: WsStreamCall = new WsStreamCall(ws, socket, caller, deps, {
    rpc: SUBSCRIBE_RPC,
    frameOf: (item) => item.wsFrame,
    firstMessage: "SubscribeRequest",
    onClose: () => handle?.close(),
    onMessage: (data, isBinary) => {
      if (requested) return call.fail(new ChatError("InvalidArgument", "Subscribe takes one SubscribeRequest; send nothing after it"));
      requested = true;
      if (!isBinary) return call.fail(new ChatError("InvalidArgument", "send the SubscribeRequest as a binary message (protobuf)"));
      const { sink } = call;
      openStream({ hub: deps.hub, principal: caller, request: data, sink, gone: () => sink.isEnded }).then((opened) => {
        handle = opened;
      }, (e: unknown) => call.fail(e));
    },
  });
}
