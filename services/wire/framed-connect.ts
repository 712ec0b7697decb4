import { Code, ConnectError } from "@connectrpc/connect";
import { ChatError } from "../core/errors.js";
import type { Principal } from "../core/principal.js";
import { envelope } from "../delivery/grpc-codec.js";
import { streamOpenRequestBytes } from "../delivery/stream-limits.js";
import type { MessageService } from "../message/message-service.js";
import { logCallEnd } from "../rpc/call-log.js";
import { ConnectStream, FIRST_REQUEST_MUST_SUBSCRIBE, decodeConnectRequest } from "../rpc/connect-requests.js";
import { toConnectError } from "../rpc/errors.js";
import type { FastPathDeps } from "./framed-subscribe.js";
import { type AnyRequest, type AnyResponse, FrameReader, FrameWriter, type WireProtocol } from "./framing.js";
import { type BodyDeadlines, HeldFlow } from "./request-body.js";

/** CONNECT_PATH is the path of StreamService/Connect. */
export const CONNECT_PATH = "/chat.v1.StreamService/Connect";
/** CONNECT_RPC is StreamService/Connect as "package.Service/Method". */
export const CONNECT_RPC = CONNECT_PATH.slice(1);

/**
 * serveFastConnect is StreamService/Connect written straight to the wire,
 * with the semantics of the connect-node handler: the first client item must
 * be `subscribe`; then the stream carries the hub's items, each written as
 * the shared OutboundItem.connectFrame (encoded once per event per process),
 * and answers sends and acks in order (ConnectStream in
 * rpc/connect-requests.ts, shared with the WebSocket: ws-connect.ts).
 * Replies count against the stream's buffer cap. The client closing its
 * side keeps the stream open; the client going away closes it.
 */
export function serveFastConnect(
  protocol: WireProtocol,
  req: AnyRequest,
  res: AnyResponse,
  deps: FastPathDeps & { readonly messages: MessageService },
  /** caller is the principal the front door verified (front-door.ts): the token is checked once per call, there. */
  caller: Principal,
  /** deadlines time a partial request message (REQUEST_BODY_TIMEOUT): the front door's. */
  deadlines: BodyDeadlines,
): void {
  const writer = new FrameWriter(protocol, res, (item) => item.connectFrame);
  // The first message may carry MAX_CURSORS cursors; the sends and acks after it keep MAX_REQUEST_BYTES.
  const reader = new FrameReader(deps.maxRequestBytes, streamOpenRequestBytes(deps.maxRequestBytes));
  const connect = new ConnectStream({
    hub: deps.hub,
    principal: caller,
    messages: deps.messages,
    onSendResult: deps.onStreamSend,
    sink: writer,
    gone: () => res.destroyed,
    accepted: () => writer.start(),
    reply: (response) => writer.writeFrame(envelope(0, response)),
  });
  let busy = false;
  let failed = false;
  let inputEnded = false;
  const noSubscribe = () => fail(new ChatError("InvalidArgument", FIRST_REQUEST_MUST_SUBSCRIBE));

  const fail = (e: unknown) => {
    if (failed) return;
    failed = true;
    flow.stop();
    const err = toConnectError(e);
    logCallEnd(deps.logger, { rpc: CONNECT_RPC, userId: caller.userId }, err);
    // The status first: closing the hub's stream ends the writer, and an ended writer writes no status (it would end OK).
    writer.finish(err);
    connect.close();
  };
  // Requests are cut one at a time, as they are served; a partial one first in line must complete within the deadline.
  const flow = new HeldFlow(req, reader, deadlines, () =>
    fail(new ConnectError(`a Connect request message did not arrive within ${deadlines.timeoutMs} ms (REQUEST_BODY_TIMEOUT)`, Code.DeadlineExceeded)),
  );
  const review = () => flow.review();

  const pump = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    try {
      while (!failed && !writer.isEnded) {
        const frame = reader.next();
        if (!frame) break;
        const request = decodeConnectRequest(frame.payload);
        review();
        // The client went away before the stream opened: nothing more to serve.
        if (!(await connect.serve(request))) writer.abort();
      }
    } finally {
      busy = false;
      if (inputEnded && !failed) {
        if (reader.leftover > 0 && !reader.ready()) fail(new ChatError("InvalidArgument", "the request stream ended inside a message"));
        else if (reader.leftover === 0 && !connect.subscribed) noSubscribe();
      }
    }
  };

  req.on("error", () => {});
  res.on("error", () => {});
  res.once("close", () => {
    flow.stop();
    connect.close();
  });
  req.on("data", (chunk: Buffer) => {
    if (failed) return;
    try {
      reader.add(chunk);
      if (!review()) return;
    } catch (e) {
      fail(e);
      return;
    }
    pump().catch(fail);
  });
  req.on("end", () => {
    inputEnded = true;
    try {
      // Requests still held are served first; a partial one at the end is an error.
      if (!reader.ready() && reader.leftover > 0) fail(new ChatError("InvalidArgument", "the request stream ended inside a message"));
      else if (!busy && !connect.subscribed && reader.leftover === 0) noSubscribe();
    } catch (e) {
      fail(e);
    }
  });
}
