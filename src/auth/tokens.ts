import { createHmac, createPublicKey, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { decodeProtectedHeader, errors as jose, jwtVerify, SignJWT, type JWTPayload } from "jose";
import { Errors, FlowdError } from "../errors.ts";
import { SCOPES, type Principal } from "./principal.ts";

/** How the server checks tokens (from FLOWD_SECURITY_KEY, FLOWD_JWT_*). */
export interface TokenSettings {
  securityKey: string | null;
  jwtSecret: string | null;
  /** A PEM (RS256 or ES256 public key), or the path of a file that holds one. */
  jwtPublicKey: string | null;
  jwtAudience: string | null;
  /** The `iss` users' JWTs must carry; null checks none. */
  jwtIssuer: string | null;
}

/** The `typ` of flowd's own read tokens, so that they are never taken for a user's JWT. */
const READ_TOKEN_TYPE = "flowd-read+jwt";
const READ_TOKEN_AUDIENCE = "flowd:read-token";
/** Bytes an HS256 secret has at least (RFC 7518 §3.2: a key as long as the hash). */
export const MIN_JWT_SECRET_BYTES = 32;

/** The key that checks users' JWTs, and the one algorithm it accepts. */
type JwtKey = { algorithm: "HS256"; key: Uint8Array } | { algorithm: "RS256" | "ES256"; key: KeyObject };

const COMPARE_KEY = randomBytes(32);

/**
 * Compares a secret with a given value in constant time, whatever their lengths: both are
 * hashed first (HMAC under a key of this process), and the digests compared with
 * `crypto.timingSafeEqual`.
 */
export function secretsEqual(given: string, expected: string): boolean {
  const digest = (value: string): Buffer => createHmac("sha256", COMPARE_KEY).update(value).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** The key FLOWD_JWT_PUBLIC_KEY names, and its algorithm (from the key's type: RSA → RS256, P-256 → ES256). */
function publicKey(setting: string): JwtKey {
  const pem = setting.trimStart().startsWith("-----BEGIN") ? setting : readPem(setting);
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (error) {
    throw Errors.invalidConfig(`FLOWD_JWT_PUBLIC_KEY is not a public key in PEM form (-----BEGIN PUBLIC KEY-----): ${(error as Error).message}.`);
  }
  if (key.asymmetricKeyType === "rsa") return { algorithm: "RS256", key };
  if (key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1") return { algorithm: "ES256", key };
  throw Errors.invalidConfig(
    `FLOWD_JWT_PUBLIC_KEY must be an RSA key (RS256) or an EC key on P-256 (ES256); got ${key.asymmetricKeyType}${key.asymmetricKeyDetails?.namedCurve ? ` on ${key.asymmetricKeyDetails.namedCurve}` : ""}.`,
  );
}

function readPem(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw Errors.invalidConfig(`FLOWD_JWT_PUBLIC_KEY is neither a PEM (-----BEGIN PUBLIC KEY-----…) nor a file that can be read: ${(error as Error).message}.`);
  }
}

/** The scopes a JWT's claims give: `scopes` as an array or a space-separated string (or OAuth's `scope`). */
function scopesOf(payload: JWTPayload): Set<string> {
  const claim = payload.scopes ?? payload.scope;
  if (Array.isArray(claim)) return new Set(claim.filter((scope): scope is string => typeof scope === "string"));
  if (typeof claim === "string") return new Set(claim.split(/\s+/).filter((scope) => scope !== ""));
  return new Set();
}

/** Why jose refused a token, said without anything of the key. */
function refusal(error: unknown): FlowdError {
  if (error instanceof FlowdError) return error;
  if (error instanceof jose.JWTExpired) return Errors.tokenRefused("it has expired (its exp is past); get a new one");
  if (error instanceof jose.JWTClaimValidationFailed) {
    if (error.claim === "aud") return Errors.tokenRefused("its audience (aud) is not this server's FLOWD_JWT_AUDIENCE");
    if (error.claim === "nbf") return Errors.tokenRefused("it is not valid yet (its nbf is in the future)");
    if (error.claim === "typ") return Errors.tokenRefused("its typ header is not a read token's");
    if (error.claim === "iss") return Errors.tokenRefused("its issuer (iss) is not this server's FLOWD_JWT_ISSUER");
    if (error.claim === "exp" && error.reason === "missing") return Errors.tokenRefused("it has no exp: tokens must expire");
    return Errors.tokenRefused(`its ${error.claim} claim is not acceptable: ${error.reason}`);
  }
  if (error instanceof jose.JOSEAlgNotAllowed) return Errors.tokenRefused("it is signed with an algorithm this server does not accept for its key");
  if (error instanceof jose.JWSSignatureVerificationFailed) return Errors.tokenRefused("its signature does not match the server's key");
  if (error instanceof jose.JOSEError) return Errors.tokenRefused("it is not a well-formed JWT (header.payload.signature, base64url)");
  throw error;
}

/**
 * Checks what clients present: the security key (everything), a user's JWT (its `sub`
 * and scopes), or a read token this server issued (one run's events). Each kind of JWT
 * has one algorithm, pinned: `alg: none`, or an HS256 token signed with an RS256 key's
 * PEM as its secret, are refused.
 */
export class TokenVerifier {
  private readonly jwtKey: JwtKey | null;
  private readonly readKey: Uint8Array;

  constructor(private readonly settings: TokenSettings) {
    if (settings.jwtSecret !== null && settings.jwtPublicKey !== null) {
      throw Errors.invalidConfig("Set FLOWD_JWT_SECRET (HS256) or FLOWD_JWT_PUBLIC_KEY (RS256/ES256), not both.");
    }
    if (settings.jwtSecret !== null && Buffer.byteLength(settings.jwtSecret) < MIN_JWT_SECRET_BYTES) {
      throw Errors.invalidConfig(`FLOWD_JWT_SECRET must be at least ${MIN_JWT_SECRET_BYTES} bytes long (an HS256 key as long as its hash); generate one with: openssl rand -base64 48`);
    }
    this.jwtKey =
      settings.jwtSecret !== null
        ? { algorithm: "HS256", key: new TextEncoder().encode(settings.jwtSecret) }
        : settings.jwtPublicKey !== null
          ? publicKey(settings.jwtPublicKey)
          : null;
    // Read tokens are signed with a key derived from the server's secret, so every node of a
    // cluster (and the server after a restart) accepts them; without a secret, this process's own.
    const secret = settings.jwtSecret ?? settings.securityKey;
    this.readKey = secret === null ? randomBytes(32) : new Uint8Array(hkdfSync("sha256", secret, "flowd", "read tokens", 32));
  }

  /** Whether clients must present a token at all. */
  get required(): boolean {
    return this.settings.securityKey !== null || this.jwtKey !== null;
  }

  /** The algorithm users' JWTs must be signed with, if JWTs are accepted. */
  get jwtAlgorithm(): string | null {
    return this.jwtKey?.algorithm ?? null;
  }

  /**
   * Who presents `token`; AUTH_FAILED (saying why, never with the key) if nobody. Without
   * `keyAllowed`, the security key is not tried (an address throttled for guessing may
   * still use a signed token, which cannot be guessed).
   */
  async verify(token: string, keyAllowed = true): Promise<Principal> {
    if (keyAllowed && this.settings.securityKey !== null && secretsEqual(token, this.settings.securityKey)) return { kind: "admin", userId: null, expiresAt: null };
    if (token.split(".").length !== 3) {
      throw this.jwtKey === null ? Errors.authFailed() : Errors.tokenRefused("it is neither the server's security key nor a JWT (header.payload.signature)");
    }
    let type: string | undefined;
    try {
      type = decodeProtectedHeader(token).typ;
    } catch {
      throw Errors.tokenRefused("it is not a well-formed JWT (header.payload.signature, base64url)");
    }
    if (type === READ_TOKEN_TYPE) return this.verifyReadToken(token);
    if (this.jwtKey === null) throw Errors.authFailed();
    try {
      const { payload } = await jwtVerify(token, this.jwtKey.key, {
        algorithms: [this.jwtKey.algorithm],
        requiredClaims: ["exp"],
        ...(this.settings.jwtAudience !== null ? { audience: this.settings.jwtAudience } : {}),
        ...(this.settings.jwtIssuer !== null ? { issuer: this.settings.jwtIssuer } : {}),
      });
      if (typeof payload.sub !== "string" || payload.sub.trim() === "") throw Errors.tokenRefused("it has no sub claim (the user it speaks for)");
      const scopes = scopesOf(payload);
      const expiresAt = payload.exp! * 1000;
      return scopes.has(SCOPES.admin) ? { kind: "admin", userId: payload.sub, expiresAt } : { kind: "user", userId: payload.sub, scopes, expiresAt };
    } catch (error) {
      throw refusal(error);
    }
  }

  private async verifyReadToken(token: string): Promise<Principal> {
    try {
      const { payload } = await jwtVerify(token, this.readKey, { algorithms: ["HS256"], audience: READ_TOKEN_AUDIENCE, typ: READ_TOKEN_TYPE });
      if (typeof payload.run_id !== "string") throw Errors.tokenRefused("it names no run");
      return { kind: "reader", runId: payload.run_id, userId: typeof payload.sub === "string" ? payload.sub : null, expiresAt: (payload.exp ?? 0) * 1000 };
    } catch (error) {
      throw refusal(error);
    }
  }

  /** A token that reads `runId`'s events until it expires, `ttlSeconds` from now. */
  async issueReadToken(runId: string, userId: string | null, ttlSeconds: number): Promise<{ token: string; expiresAt: number }> {
    const expiresAt = Math.floor(Date.now() / 1000) + ttlSeconds;
    const claims = new SignJWT({ run_id: runId }).setProtectedHeader({ alg: "HS256", typ: READ_TOKEN_TYPE }).setAudience(READ_TOKEN_AUDIENCE).setIssuedAt().setExpirationTime(expiresAt);
    const token = await (userId === null ? claims : claims.setSubject(userId)).sign(this.readKey);
    return { token, expiresAt: expiresAt * 1000 };
  }
}
