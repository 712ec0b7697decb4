import type { AccessTokens } from "../auth/access-tokens.js";
import { ChatError } from "../core/errors.js";
import type { Clock } from "../core/ports.js";
import type { Principal } from "../core/principal.js";

/**
 * verifyBearer authenticates an `authorization` header value of the form
 * `Bearer <access token>`; it throws ChatError Unauthenticated when the
 * header is missing or malformed or the token fails verification.
 */
export async function verifyBearer(tokens: AccessTokens, clock: Clock, header: string | null | undefined): Promise<Principal> {
  const match = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
  if (!match?.[1]) {
    throw new ChatError("Unauthenticated", "missing authorization: send the header `authorization: Bearer <access token>`");
  }
  return tokens.verify(match[1], clock.now());
}
