/** LiveLink: one attempt at a live connection (a WebSocket, or a server-streaming call), as the live loop uses it. */
import { Code, ConnectError } from "@connectrpc/connect";
import type { SendMessageRequest, SendMessageResponse } from "../../../gen/chat/v1/message_service_pb.js";
import type { GroupCursor, SubscribeResponse } from "../../../gen/chat/v1/stream_service_pb.js";

/** LinkRun is what one connection attempt gets. */
export interface LinkRun {
  readonly accessToken: string;
  readonly cursors: readonly GroupCursor[];
  /** signal aborts the attempt (close, or the heartbeat watchdog). */
  readonly signal: AbortSignal;
  /** onItem receives each stream item in the order the server sent them. */
  onItem(item: SubscribeResponse): void;
}

/** LiveLink opens connections; `run` resolves (never rejects) with why the connection ended. */
export interface LiveLink {
  /** name says which transport this is (for state events and logs). */
  readonly name: string;
  run(r: LinkRun): Promise<ConnectError>;
  /**
   * send sends over the open connection when the link can (a Connect WebSocket); undefined when it cannot right now
   * (no connection open, or a transport without sending), in which case the caller uses unary SendMessage. The promise
   * rejects with UNAVAILABLE when the connection ends before the answer, with DEADLINE_EXCEEDED when no answer came
   * within `timeoutMs` (the server may have stored the message: retry with the same client_message_id), and with
   * the server's status otherwise.
   */
  send(req: SendMessageRequest, timeoutMs: number): Promise<SendMessageResponse> | undefined;
  /**
   * ack tells the server the app processed a group up to seq (Group.acked_seq), over the open connection when the
   * link can; false when it cannot right now (the caller keeps the ack for later).
   */
  ack(groupId: string, seq: bigint): boolean;
}

const hidden = new WeakSet<ConnectError>();

/**
 * hiddenStatusError is why an attempt failed whose connection never opened, when the platform hid the server's
 * answer (a browser reports a refused WebSocket handshake, a 401 too, as a bare close 1006). Its code is UNAVAILABLE;
 * the live loop then checks the token with one unary call, so a refused token still leads to a refresh. (A marker,
 * not a subclass: ConnectError's `instanceof` accepts any ConnectError.)
 */
export function hiddenStatusError(message: string): ConnectError {
  const e = new ConnectError(message, Code.Unavailable);
  hidden.add(e);
  return e;
}

/** isHiddenStatus: `e` was made by hiddenStatusError. */
export function isHiddenStatus(e: ConnectError): boolean {
  return hidden.has(e);
}
