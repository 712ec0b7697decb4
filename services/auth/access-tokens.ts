import { hkdfSync } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import {
  type CryptoKey,
  type JWK,
  type JWTVerifyGetKey,
  SignJWT,
  calculateJwkThumbprint,
  createRemoteJWKSet,
  errors as joseErrors,
  exportJWK,
  generateKeyPair,
  importJWK,
  jwtVerify,
} from "jose";
import { ChatError } from "../core/errors.js";
import { newId } from "../core/ids.js";
import type { Principal } from "../core/principal.js";

/** AccessTokenSettings configures issuing and checking access tokens. */
export interface AccessTokenSettings {
  readonly issuer: string;
  readonly audience: string;
  readonly ttlMs: number;
}

const ALG = "EdDSA";

/** VERIFIED_CACHE_SIZE bounds the remembered tokens (about 0.5 KB each); the cache starts over when full. */
const VERIFIED_CACHE_SIZE = 20_000;

/**
 * AccessTokens issues and verifies access tokens: JWTs signed with EdDSA
 * (Ed25519), carrying iss, aud, sub, exp, iat, jti, plus `name` (username)
 * and `sid` (session id). Verification accepts only EdDSA with this
 * server's key and checks iss, aud and exp; anything else (alg none,
 * another algorithm, a tampered or expired token) fails Unauthenticated.
 */
export class AccessTokens {
  /** Tokens that verified, by their text, with their principal (see verify). */
  private readonly verified = new Map<string, Principal>();

  private constructor(
    /** The signing key and its public JWK; absent in processes that only verify. */
    private readonly signer: { readonly privateKey: CryptoKey; readonly publicJwk: JWK; readonly seed: Buffer } | undefined,
    private readonly verifyKey: CryptoKey | JWTVerifyGetKey,
    private readonly settings: AccessTokenSettings,
  ) {}

  /**
   * remote verifies tokens against the auth service's JWKS at `jwksUrl`
   * (cached; fetched again for an unknown `kid`, at most every 30 s). Such a
   * process cannot issue tokens. If the JWKS cannot be fetched, verify fails
   * Unavailable (retry), not Unauthenticated (log in again).
   */
  static remote(jwksUrl: string, settings: AccessTokenSettings): AccessTokens {
    const jwks = createRemoteJWKSet(new URL(jwksUrl), { cacheMaxAge: 600_000, cooldownDuration: 30_000, timeoutDuration: 5_000 });
    return new AccessTokens(undefined, jwks, settings);
  }

  /**
   * load reads the Ed25519 private key (a JWK file) at `keyFile`, or creates
   * one there (mode 0600) on first start, so tokens survive restarts.
   */
  static async load(keyFile: string, settings: AccessTokenSettings): Promise<AccessTokens> {
    let jwk: JWK;
    try {
      jwk = JSON.parse(await readFile(keyFile, "utf8")) as JWK;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
        throw new Error(`cannot read the JWT signing key ${keyFile}`, { cause: e });
      }
      const { privateKey } = await generateKeyPair(ALG, { crv: "Ed25519", extractable: true });
      jwk = await exportJWK(privateKey);
      await mkdir(dirname(keyFile), { recursive: true });
      await writeFile(keyFile, `${JSON.stringify(jwk)}\n`, { mode: 0o600, flag: "wx" });
    }
    if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || !jwk.d) {
      throw new Error(`${keyFile} is not an Ed25519 private key in JWK form`);
    }
    const { d: _d, ...pub } = jwk;
    const kid = await calculateJwkThumbprint(pub);
    const publicJwk: JWK = { ...pub, kid, alg: ALG, use: "sig" };
    const privateKey = (await importJWK({ ...jwk, alg: ALG }, ALG)) as CryptoKey;
    const publicKey = (await importJWK({ ...pub, alg: ALG }, ALG)) as CryptoKey;
    return new AccessTokens({ privateKey, publicJwk, seed: Buffer.from(jwk.d, "base64url") }, publicKey, settings);
  }

  /** canIssue tells whether this process holds the signing key. */
  get canIssue(): boolean {
    return this.signer !== undefined;
  }

  /**
   * derivedKey returns a 32-byte secret for `purpose`, derived (HKDF-SHA256) from the signing key, so every process
   * that holds the key derives the same one and nobody without it can. Throws where this process has no signing key.
   */
  derivedKey(purpose: string): Buffer {
    if (!this.signer) throw new Error("this process does not hold the signing key; tokens are issued by the auth service");
    return Buffer.from(hkdfSync("sha256", this.signer.seed, Buffer.alloc(0), purpose, 32));
  }

  /** jwks is the JSON Web Key Set served at /.well-known/jwks.json (empty where this process has no signing key). */
  jwks(): { keys: JWK[] } {
    return { keys: this.signer ? [this.signer.publicJwk] : [] };
  }

  /** issue signs an access token for the user's session; returns it with its expiry. */
  async issue(user: { id: string; username: string }, sessionId: string, now: number): Promise<{ token: string; expiresAt: number }> {
    if (!this.signer) throw new Error("this process does not hold the signing key; tokens are issued by the auth service");
    const { privateKey, publicJwk } = this.signer;
    const iat = Math.floor(now / 1000);
    const exp = iat + Math.max(1, Math.round(this.settings.ttlMs / 1000));
    const token = await new SignJWT({ name: user.username, sid: sessionId })
      .setProtectedHeader({ alg: ALG, typ: "JWT", kid: publicJwk.kid as string })
      .setIssuer(this.settings.issuer)
      .setAudience(this.settings.audience)
      .setSubject(user.id)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(newId())
      .sign(privateKey);
    return { token, expiresAt: exp * 1000 };
  }

  /**
   * verify checks a token and returns its principal; throws ChatError
   * Unauthenticated with the reason. A token that verified once is
   * remembered (by its exact text) until it expires, so a client's repeated
   * calls cost one signature check per token, not one per call; the answer
   * is the same as a fresh check's, since nothing but `exp` can change it
   * (the tokens carry no `nbf`, and revocation ends sessions through their
   * refresh tokens and live streams, not through access-token checks).
   */
  async verify(token: string, now: number): Promise<Principal> {
    const known = this.verified.get(token);
    if (known && now < known.expiresAt) return known;
    const principal = await this.verifyOnce(token, now);
    if (this.verified.size >= VERIFIED_CACHE_SIZE) this.verified.clear();
    this.verified.set(token, principal);
    return principal;
  }

  private async verifyOnce(token: string, now: number): Promise<Principal> {
    try {
      const options = {
        algorithms: [ALG],
        issuer: this.settings.issuer,
        audience: this.settings.audience,
        currentDate: new Date(now),
        requiredClaims: ["sub", "exp", "jti"],
      };
      const { payload } =
        typeof this.verifyKey === "function" ? await jwtVerify(token, this.verifyKey, options) : await jwtVerify(token, this.verifyKey, options);
      const { sub, name, sid, exp } = payload;
      if (typeof sub !== "string" || typeof name !== "string" || typeof sid !== "string" || typeof exp !== "number") {
        throw new ChatError("Unauthenticated", "access token is missing required claims");
      }
      return { userId: sub, username: name, sessionId: sid, expiresAt: exp * 1000 };
    } catch (e) {
      if (e instanceof ChatError) throw e;
      if (e instanceof joseErrors.JWKSTimeout || (e instanceof TypeError && String(e.message).includes("fetch"))) {
        throw new ChatError("Unavailable", "cannot reach the auth service's keys to check the token; retry", { cause: e });
      }
      throw new ChatError("Unauthenticated", describeJoseError(e), { cause: e });
    }
  }
}

function describeJoseError(e: unknown): string {
  if (e instanceof joseErrors.JWTExpired) return "access token expired; refresh it and retry";
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return "access token algorithm not accepted (EdDSA only)";
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return "access token signature is invalid";
  if (e instanceof joseErrors.JWTClaimValidationFailed) return `access token claim "${e.claim}" is invalid`;
  if (e instanceof joseErrors.JWKSNoMatchingKey) return "access token is signed by an unknown key";
  return "access token is malformed";
}
