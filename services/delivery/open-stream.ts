/**
 * Opening a stream, the one way every transport does it: Subscribe on the framed path (wire/framed-subscribe.ts),
 * over WebSocket (wire/ws-subscribe.ts) and through connect-node (rpc/stream-rpc.ts), and Connect's `subscribe`
 * (wire/framed-connect.ts, rpc/stream-rpc.ts). Before it, each transport has authenticated the caller with the one
 * bearer check (rpc/bearer.ts: at the front door, the WebSocket upgrade, or the auth interceptor) and read the
 * opening message within streamOpenRequestBytes (stream-limits.ts); here the message is decoded, its cursors
 * checked (at most MAX_CURSORS, each a valid group id and seq) and the hub asked to open the stream.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { type GroupCursor, type SubscribeRequest, SubscribeRequestSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { ChatError } from "../core/errors.js";
import type { Principal } from "../core/principal.js";
import { checkId, checkSeq } from "../core/validate.js";
import type { StreamSink } from "./outbound.js";
import type { ClientCursor, StreamHandle, StreamHub } from "./stream-hub.js";
import { MAX_CURSORS } from "./stream-limits.js";

/** StreamOpening is what a transport hands over to open a stream. */
export interface StreamOpening {
  readonly hub: StreamHub;
  /** principal is the caller, already authenticated by the transport. */
  readonly principal: Principal;
  /** request is the opening SubscribeRequest: decoded (connect-node, Connect's first message) or its binary bytes. */
  readonly request: SubscribeRequest | Uint8Array;
  readonly sink: StreamSink;
  /** gone tells whether the client went away: asked before the hub is, and again once the hub has answered. */
  readonly gone: () => boolean;
  /** accepted runs once the request is valid, before the hub is asked (e.g. to send the response headers). */
  readonly accepted?: () => void;
}

/**
 * openStream checks the opening request and opens the stream in the hub. It throws ChatError InvalidArgument for a
 * request that does not decode or carries bad cursors (nothing is opened); it resolves undefined if the client went
 * away first, else the stream's handle, already closed if the client went away while the stream was set up.
 */
export async function openStream(opening: StreamOpening): Promise<StreamHandle | undefined> {
  const { request, gone } = opening;
  const cursors = parseCursors((request instanceof Uint8Array ? decodeSubscribeRequest(request) : request).cursors);
  if (gone()) return undefined;
  opening.accepted?.();
  const handle = await opening.hub.open(opening.principal, cursors, opening.sink);
  if (gone()) handle.close();
  return handle;
}

/** decodeSubscribeRequest parses a binary SubscribeRequest, or throws InvalidArgument. */
function decodeSubscribeRequest(bytes: Uint8Array): SubscribeRequest {
  try {
    return fromBinary(SubscribeRequestSchema, bytes);
  } catch (e) {
    throw new ChatError("InvalidArgument", "request is not a valid chat.v1.SubscribeRequest", { cause: e });
  }
}

/** parseCursors validates and indexes the client's cursors (the last one per group wins). */
function parseCursors(cursors: readonly GroupCursor[]): Map<string, ClientCursor> {
  if (cursors.length > MAX_CURSORS) {
    throw new ChatError("InvalidArgument", `at most ${MAX_CURSORS} cursors per request (got ${cursors.length}); send one per group you are in`);
  }
  const out = new Map<string, ClientCursor>();
  for (const c of cursors) {
    out.set(checkId("cursors.group_id", c.groupId), { seq: checkSeq("cursors.seq", c.seq), epoch: c.epoch });
  }
  return out;
}
