/**
 * The live connection without a WebSocket: the server-streaming `StreamService/Subscribe` over the Connect or
 * gRPC-Web protocol (connect-web, over fetch). Sends go unary.
 */
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import type { SendMessageResponse } from "../../../gen/chat/v1/message_service_pb.js";
import type { StreamService } from "../../../gen/chat/v1/stream_service_pb.js";
import type { LinkRun, LiveLink } from "./link.js";

/** StreamLink is described at the top of the file. */
export class StreamLink implements LiveLink {
  readonly name: string;

  constructor(
    private readonly streams: Client<typeof StreamService>,
    protocol: string,
  ) {
    this.name = `${protocol} stream`;
  }

  async run(r: LinkRun): Promise<ConnectError> {
    try {
      const items = this.streams.subscribe(
        { cursors: [...r.cursors] },
        { signal: r.signal, timeoutMs: 0, headers: { authorization: `Bearer ${r.accessToken}` } },
      );
      for await (const item of items) r.onItem(item);
      return new ConnectError("the server ended the stream", Code.Unavailable);
    } catch (e) {
      return ConnectError.from(e);
    }
  }

  send(): Promise<SendMessageResponse> | undefined {
    return undefined;
  }

  ack(): boolean {
    return false; // Subscribe has no acks
  }
}
