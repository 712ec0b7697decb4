/**
 * @chat/client: the TypeScript client of chat.v1 for browsers and Node (docs/sdk.md). This entry uses web APIs
 * only (fetch, WebSocket, crypto, setTimeout, localStorage behind a guard); file stores are in `@chat/client/node`.
 */
export { ChatClient, type ChatClientOptions, type Clients, type SendResult, type SignedInUser } from "./client.js";
export { HistoryPager, type HistoryOptions } from "./history.js";
export {
  type ChatEvent,
  type ChatMessage,
  type ClientEvents,
  type ConnectionState,
  type CursorResetEvent,
  type GroupJoinedEvent,
  type ReadMarkerEvent,
  type SignedOutEvent,
  type StateEvent,
  type UserInfo,
  MemberRole,
} from "./events.js";
export {
  type Cursor,
  type CursorStore,
  type StoredSession,
  type TokenStore,
  LocalStorageCursorStore,
  LocalStorageTokenStore,
  MemoryCursorStore,
  MemoryTokenStore,
} from "./stores.js";
export type { BackoffOptions } from "./backoff.js";
export type { WsEndpoint } from "./ws-link.js";
export type { LockManagerLike, StorageLike, WebSocketConstructor, WebSocketLike } from "./web.js";
export { Code, ConnectError, codeName, retryAfterMs } from "./errors.js";
