/**
 * StreamService/Connect over WebSocket: one socket for everything live, the
 * hub's items and the client's sends and acks (docs/websocket.md). Same
 * handshake, sink and close codes as Subscribe over WebSocket
 * (ws-endpoint.ts); the same semantics as Connect over gRPC
 * (framed-connect.ts), through the same ConnectStream
 * (rpc/connect-requests.ts):
 * - each client message is one binary ConnectRequest; the first must carry
 *   `subscribe` (it may be as large as a stream's opening request,
 *   streamOpenRequestBytes), each later one `send_message` or `ack`, at most
 *   MAX_REQUEST_BYTES (a larger one ends the stream with RESOURCE_EXHAUSTED,
 *   as the gRPC path's reader does);
 * - requests are served one at a time, in order; each send is answered by a
 *   `send_result`, a failed ack by an `ack_error`, both with the request's
 *   `request_id`; a failed request does not end the stream;
 * - each server message is one ConnectResponse: `item` (the SubscribeResponse
 *   of the hub, the frame built once per event per process) or a reply.
 *   Replies count against the stream's buffer cap;
 * - the client's messages waiting to be served are held up to
 *   MAX_HELD_STREAM_BYTES (plus what one socket read brings): past that the
 *   socket is paused until they are served, so a client that pipelines
 *   faster than its sends commit is slowed down, not buffered without bound.
 */
import type net from "node:net";
import type { WebSocket } from "ws";
import { ChatError } from "../core/errors.js";
import type { Principal } from "../core/principal.js";
import { ENVELOPE_HEADER_BYTES } from "../delivery/grpc-codec.js";
import { type OutboundItem, wsBinaryFrame } from "../delivery/outbound.js";
import type { MessageService } from "../message/message-service.js";
import { ConnectStream, decodeConnectRequest } from "../rpc/connect-requests.js";
import { CONNECT_RPC } from "./framed-connect.js";
import type { FastPathDeps } from "./framed-subscribe.js";
import { MAX_HELD_STREAM_BYTES } from "./request-body.js";
import { WsStreamCall } from "./ws-endpoint.js";

/**
 * serveWsConnect runs one upgraded Connect connection whose token verified:
 * its first message opens the stream, the later ones are sends and acks.
 */
export function serveWsConnect(ws: WebSocket, socket: net.Socket, caller: Principal, deps: FastPathDeps & { readonly messages: MessageService }): void {
  const pending: Buffer[] = [];
  let pendingBytes = 0;
  let received = 0;
  let busy = false;
  let paused = false;

  const call: WsStreamCall = new WsStreamCall(ws, socket, caller, deps, {
    rpc: CONNECT_RPC,
    frameOf: wsConnectFrame,
    firstMessage: "ConnectRequest carrying `subscribe`",
    onClose: () => {
      pending.length = 0;
      pendingBytes = 0;
      // Read again, so the client's close frame is taken and the closing handshake completes.
      if (paused) ws.resume();
      paused = false;
      connect.close();
    },
    onMessage: (data, isBinary) => {
      if (!isBinary) return call.fail(new ChatError("InvalidArgument", "send each ConnectRequest as a binary message (protobuf), not text"));
      // The first message may carry MAX_CURSORS cursors (the server's maxPayload bounds it); the sends and acks after it keep MAX_REQUEST_BYTES.
      if (received++ > 0 && data.length > deps.maxRequestBytes) {
        return call.fail(new ChatError("ResourceExhausted", `request message is larger than ${deps.maxRequestBytes} bytes`));
      }
      pending.push(data);
      pendingBytes += data.length;
      if (!paused && pendingBytes > MAX_HELD_STREAM_BYTES) {
        paused = true;
        ws.pause();
      }
      pump().catch((e: unknown) => call.fail(e));
    },
  });
  const { sink } = call;
  const connect = new ConnectStream({
    hub: deps.hub,
    principal: caller,
    messages: deps.messages,
    onSendResult: deps.onStreamSend,
    sink,
    gone: () => sink.isEnded,
    reply: (response) => sink.writeFrame(wsBinaryFrame(response)),
  });

  /** pump serves the held requests one at a time, in order; a throw (bad bytes, no `subscribe` first) fails the call. */
  const pump = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    try {
      for (let data = pending.shift(); data && !sink.isEnded; data = pending.shift()) {
        pendingBytes -= data.length;
        if (paused && pendingBytes <= MAX_HELD_STREAM_BYTES) {
          paused = false;
          ws.resume();
        }
        if (!(await connect.serve(decodeConnectRequest(data)))) return; // the client went away before the stream opened
      }
    } finally {
      busy = false;
    }
  };
}

/**
 * wsConnectFrames holds each item's ConnectResponse `{ item }` as one binary
 * WebSocket frame, built on first use from the shared connectFrame (its
 * message without the gRPC envelope) and then shared by every recipient,
 * like OutboundItem.wsFrame; it goes with the item.
 */
const wsConnectFrames = new WeakMap<OutboundItem, Buffer>();

/** wsConnectFrame is the shared WebSocket frame of an item on a Connect stream. */
function wsConnectFrame(item: OutboundItem): Buffer {
  let frame = wsConnectFrames.get(item);
  if (!frame) {
    frame = wsBinaryFrame(item.connectFrame.subarray(ENVELOPE_HEADER_BYTES));
    wsConnectFrames.set(item, frame);
  }
  return frame;
}
