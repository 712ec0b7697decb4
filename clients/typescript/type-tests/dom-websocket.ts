// Type test (npx tsc -p clients/typescript): the browser's own WebSocket and Storage fit the SDK's structural types.
import { ChatClient, LocalStorageTokenStore, type WebSocketConstructor } from "../src/index.js";

const ws: WebSocketConstructor = WebSocket;
export const client = new ChatClient({ baseUrl: location.origin, WebSocket: ws, tokenStore: new LocalStorageTokenStore({ storage: localStorage }) });
