/**
 * Principal is the authenticated caller of an RPC: what every use-case and the hub take to know who asks.
 * auth/access-tokens.ts makes it from a verified access token; core never verifies one.
 */
export interface Principal {
  readonly userId: string;
  readonly username: string;
  /** The session (refresh-token family) the access token belongs to. */
  readonly sessionId: string;
  /** When the access token expires (ms since epoch). */
  readonly expiresAt: number;
}
