import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import {
  type CryptoKey,
  type JWK,
  SignJWT,
  calculateJwkThumbprint,
  errors as joseErrors,
  exportJWK,
  generateKeyPair,
  importJWK,
  jwtVerify,
} from "jose";
import { ChatError } from "../core/errors.js";
import { newId } from "../core/ids.js";

/** Principal is the authenticated caller of an RPC. */
export interface Principal {
  readonly userId: string;
  readonly username: string;
  /** The session (refresh-token family) the access token belongs to. */
  readonly sessionId: string;
  /** When the access token expires (ms since epoch). */
  readonly expiresAt: number;
}

/** AccessTokenSettings configures issuing and checking access tokens. */
export interface AccessTokenSettings {
  readonly issuer: string;
  readonly audience: string;
  readonly ttlMs: number;
}

const ALG = "EdDSA";

/**
 * AccessTokens issues and verifies access tokens: JWTs signed with EdDSA
 * (Ed25519), carrying iss, aud, sub, exp, iat, jti, plus `name` (username)
 * and `sid` (session id). Verification accepts only EdDSA with this
 * server's key and checks iss, aud and exp; anything else (alg none,
 * another algorithm, a tampered or expired token) fails Unauthenticated.
 */
export class AccessTokens {
  private constructor(
    private readonly privateKey: CryptoKey,
    private readonly publicKey: CryptoKey,
    private readonly publicJwk: JWK,
    private readonly settings: AccessTokenSettings,
  ) {}

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
    return new AccessTokens(privateKey, publicKey, publicJwk, settings);
  }

  /** jwks is the JSON Web Key Set served at /.well-known/jwks.json. */
  jwks(): { keys: JWK[] } {
    return { keys: [this.publicJwk] };
  }

  /** issue signs an access token for the user's session; returns it with its expiry. */
  async issue(user: { id: string; username: string }, sessionId: string, now: number): Promise<{ token: string; expiresAt: number }> {
    const iat = Math.floor(now / 1000);
    const exp = iat + Math.max(1, Math.round(this.settings.ttlMs / 1000));
    const token = await new SignJWT({ name: user.username, sid: sessionId })
      .setProtectedHeader({ alg: ALG, typ: "JWT", kid: this.publicJwk.kid as string })
      .setIssuer(this.settings.issuer)
      .setAudience(this.settings.audience)
      .setSubject(user.id)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(newId())
      .sign(this.privateKey);
    return { token, expiresAt: exp * 1000 };
  }

  /** verify checks a token and returns its principal; throws ChatError Unauthenticated with the reason. */
  async verify(token: string, now: number): Promise<Principal> {
    try {
      const { payload } = await jwtVerify(token, this.publicKey, {
        algorithms: [ALG],
        issuer: this.settings.issuer,
        audience: this.settings.audience,
        currentDate: new Date(now),
        requiredClaims: ["sub", "exp", "jti"],
      });
      const { sub, name, sid, exp } = payload;
      if (typeof sub !== "string" || typeof name !== "string" || typeof sid !== "string" || typeof exp !== "number") {
        throw new ChatError("Unauthenticated", "access token is missing required claims");
      }
      return { userId: sub, username: name, sessionId: sid, expiresAt: exp * 1000 };
    } catch (e) {
      if (e instanceof ChatError) throw e;
      throw new ChatError("Unauthenticated", describeJoseError(e), { cause: e });
    }
  }
}

function describeJoseError(e: unknown): string {
  if (e instanceof joseErrors.JWTExpired) return "access token expired; refresh it and retry";
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return "access token algorithm not accepted (EdDSA only)";
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return "access token signature is invalid";
  if (e instanceof joseErrors.JWTClaimValidationFailed) return `access token claim "${e.claim}" is invalid`;
  return "access token is malformed";
}
