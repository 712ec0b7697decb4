import { hash, verify } from "@node-rs/argon2";

/**
 * ARGON2_OPTIONS are OWASP's argon2id parameters (m = 19 MiB, t = 2, p = 1),
 * the floor of DESIGN invariant 7.
 */
export const ARGON2_OPTIONS = {
  algorithm: 2, // Algorithm.Argon2id: a const enum, which verbatimModuleSyntax cannot import
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
} as const;

/** hashPassword returns an argon2id PHC string with a fresh random salt. */
export function hashPassword(password: string): Promise<string> {
  return hash(password, ARGON2_OPTIONS);
}

/** verifyPassword checks a password against a PHC string; false on any mismatch or malformed hash. */
export async function verifyPassword(phc: string, password: string): Promise<boolean> {
  try {
    return await verify(phc, password);
  } catch {
    return false;
  }
}

let dummyHash: Promise<string> | undefined;

/**
 * burnPasswordCheck spends the same time as a real verification, so that a
 * login for an unknown username takes as long as one with a wrong password.
 */
export async function burnPasswordCheck(password: string): Promise<void> {
  dummyHash ??= hashPassword("not-a-real-password");
  await verifyPassword(await dummyHash, password);
}
