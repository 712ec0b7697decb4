/**
 * ChatPageApi is what test/browser/pages/chat-page.ts exposes on the page's
 * `globalThis.chatPage`, for specs to drive with playwright's
 * `page.evaluate`. Every value crossing to the spec is plain JSON (seqs as
 * numbers; they stay far below 2^53 in a test).
 */

/** PageProtocol is a protocol of connect-web: gRPC-Web (binary) or Connect (JSON). */
export type PageProtocol = "grpc-web" | "connect";

/** PageStreamKind is how a page stream subscribes: connect-web over a protocol, or the native WebSocket. */
export type PageStreamKind = PageProtocol | "websocket";

/** PageEvent is one group event a page stream received; `text` and `messageId` are set for messages only. */
export interface PageEvent {
  readonly groupId: string;
  readonly seq: number;
  readonly kind: string;
  readonly text: string;
  readonly messageId: string;
}

/**
 * PageStream is a page stream's state so far: `ready` once StreamReady came
 * (with the groups' positions), the events in arrival order, and how it ended
 * (`error`: a ConnectError's code and message, or a WebSocket close).
 */
export interface PageStream {
  readonly kind: PageStreamKind;
  readonly ready: boolean;
  readonly readyGroups: readonly { readonly groupId: string; readonly seq: number }[];
  readonly events: readonly PageEvent[];
  readonly ended: boolean;
  readonly error: string;
  /** The WebSocket's close code (0 while open or for other kinds), and whether `open` fired. */
  readonly closeCode: number;
  readonly opened: boolean;
}

/** PageFetchResult is a raw fetch's outcome: the HTTP status, or the error the browser raised (e.g. a CORS refusal). */
export interface PageFetchResult {
  readonly status: number;
  readonly error: string;
}

/** ChatPageApi: calls over connect-web (the token from `signIn` goes with every later call) and streams by name. */
export interface ChatPageApi {
  /** signIn registers or logs in a user against the server at `baseUrl` and keeps the access token. */
  signIn(baseUrl: string, protocol: PageProtocol, mode: "register" | "login", username: string, password: string): Promise<{ userId: string }>;
  /** setToken replaces the access token sent from now on (e.g. with a forged one). */
  setToken(token: string): void;
  /** listGroups lists the caller's groups (first page). */
  listGroups(protocol: PageProtocol): Promise<{ groupId: string; name: string }[]>;
  /** sendMessage sends a text and returns the stored message's seq and id. */
  sendMessage(protocol: PageProtocol, groupId: string, text: string, clientMessageId: string): Promise<{ seq: number; messageId: string }>;
  /** openStream starts a Subscribe (no cursors) named `name`; its state is read with `stream`. */
  openStream(name: string, kind: PageStreamKind): void;
  /** stream is a stream's state so far (throws for an unknown name). */
  stream(name: string): PageStream;
  /** closeStreams cancels every open stream. */
  closeStreams(): void;
  /** rawFetch POSTs `body` to `baseUrl + path` with `headers` (plus the token) and reports the status or the browser's error. */
  rawFetch(path: string, headers: Record<string, string>, body: string): Promise<PageFetchResult>;
}

/** PageGlobal is the page's global object as a spec sees it. */
export interface PageGlobal {
  chatPage: ChatPageApi;
}
