/**
 * The web APIs the SDK uses, typed by minimal structural interfaces of its own so that it type-checks with or
 * without the DOM lib and runs wherever they exist (browsers, Node 20 with `ws`, workers). Nothing here imports
 * a Node module.
 */

/** WebSocketLike is the part of a WebSocket (the browser's or the `ws` package's) that the SDK uses. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  /** protocol is the subprotocol the server selected. */
  readonly protocol: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  // biome-ignore lint/suspicious/noExplicitAny: the browser's and ws's event types differ; the SDK reads only what it checks
  onopen: ((ev: any) => unknown) | null;
  // biome-ignore lint/suspicious/noExplicitAny: as above
  onmessage: ((ev: any) => unknown) | null;
  // biome-ignore lint/suspicious/noExplicitAny: as above
  onclose: ((ev: any) => unknown) | null;
  // biome-ignore lint/suspicious/noExplicitAny: as above
  onerror: ((ev: any) => unknown) | null;
}

/** WebSocketConstructor is `WebSocket` in a browser, or `import { WebSocket } from "ws"` in Node. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** WS_OPEN is WebSocket.OPEN. */
export const WS_OPEN = 1;

/** StorageLike is the part of the Web Storage API (localStorage) the stores use. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** LockManagerLike is the part of the Web Locks API (`navigator.locks`) the stores use: an exclusive lock by name, held while `fn` runs. */
export interface LockManagerLike {
  request<T>(name: string, fn: () => Promise<T>): Promise<T>;
}

interface WebGlobals {
  navigator?: { locks?: LockManagerLike };
  WebSocket?: WebSocketConstructor;
  localStorage?: StorageLike;
  crypto?: { getRandomValues<T extends Uint8Array>(a: T): T; randomUUID?: () => string };
  atob?: (s: string) => string;
}

const web = globalThis as unknown as WebGlobals;

/** globalWebSocket is the global WebSocket class, when the platform has one (browsers, Node 22+). */
export function globalWebSocket(): WebSocketConstructor | undefined {
  return typeof web.WebSocket === "function" ? web.WebSocket : undefined;
}

/**
 * globalLocalStorage is `localStorage` when it exists and can be used; undefined otherwise (Node, a worker, or a
 * browser that throws on access, as some do with storage disabled).
 */
export function globalLocalStorage(): StorageLike | undefined {
  try {
    const s = web.localStorage;
    return s && typeof s.getItem === "function" ? s : undefined;
  } catch {
    return undefined;
  }
}

/** globalLocks is `navigator.locks` (Web Locks: browsers, workers) when it exists; undefined otherwise (Node 20). */
export function globalLocks(): LockManagerLike | undefined {
  try {
    const l = web.navigator?.locks;
    return l && typeof l.request === "function" ? l : undefined;
  } catch {
    return undefined;
  }
}

/**
 * randomId is a random UUID (v4): crypto.randomUUID where it exists (browsers offer it only in secure contexts),
 * else one built from crypto.getRandomValues. Throws when the platform has neither (no safe source of randomness).
 */
export function randomId(): string {
  const c = web.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  if (!c || typeof c.getRandomValues !== "function") throw new Error("no crypto.getRandomValues on this platform");
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** base64UrlDecode decodes base64url text to a string of UTF-8 text (for JWT payloads). */
export function base64UrlDecode(s: string): string {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(s.length / 4) * 4, "=");
  if (typeof web.atob !== "function") throw new Error("no atob on this platform");
  const bin = web.atob(b64);
  const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/** sleep resolves after `ms`, or at once when `signal` aborts (it never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
