/**
 * JWTs with `jose`: verification of bearer tokens (an HS256 secret, an
 * RS256/ES256/EdDSA public key, or a JWKS URL of an outside identity
 * provider) and issuance of the gateway's own access tokens.
 *
 * A verified token becomes a {@link Principal}: who it is and the
 * permissions it carries. Permissions come from the token itself (`perms` or
 * `permissions` array, or an OAuth `scope` string), plus those of the roles in
 * its `roles` claim, so the state worker can check a token without a
 * database. Tokens the gateway issues carry the permissions of the user's
 * roles at issue time; role changes apply at the next refresh.
 *
 * @module
 */
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  exportJWK,
  importJWK,
  importPKCS8,
  importSPKI,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from "jose";
import { createPrivateKey, createPublicKey } from "node:crypto";
import { ConfigError } from "../config/load.ts";
import { isPermission, permissionsOf } from "./permissions.ts";

/** Who made a request and what they may do. */
export interface Principal {
  /** `user:<name>`, `apikey:<id>`, or the `sub` of an outside token. */
  id: string;
  /** A display name. */
  name: string;
  kind: "user" | "apikey" | "token";
  roles: string[];
  permissions: string[];
  /** When the credential stops being valid (ms since the epoch); undefined: never. */
  expiresAt?: number;
  /**
   * A login session of the gateway's own users (its tokens carry `sep` and
   * `sid`): valid while the user's session epoch is `epoch` and `sid` is not
   * revoked (gateway/auth/revocations.ts).
   */
  session?: { user: string; epoch: number; sid?: string };
  /** An API key's creator (a username): the key works while that user may act. */
  owner?: string;
  /**
   * A call credential's id (`jti`), and whether this is the same delivery of
   * its request again (auth/call_credentials.ts).
   */
  call?: { id: string; redelivered: boolean };
}

/**
 * `typ` of a call credential (auth/call_credentials.ts): the gateway's grant
 * of one call to a service, never a bearer token.
 */
export const CALL_TYP = "plantd-call+jwt";

/** Why a credential was refused. */
export class AuthError extends Error {
  constructor(
    readonly code: "AUTHENTICATION_REQUIRED" | "AUTHENTICATION_FAILED" | "PERMISSION_DENIED",
    message: string,
  ) {
    super(message);
    this.name = "AuthError";
  }
}

/** A call credential presented as a bearer token: refused and audited, never treated as stale. */
export class CallCredentialAsBearer extends AuthError {
  constructor() {
    super(
      "AUTHENTICATION_FAILED",
      "A call credential (typ plantd-call+jwt) is not a bearer token: only the service it names accepts it",
    );
  }
}

/** Key material and claims checks. */
export interface TokenSettings {
  /** HS256 secret (at least 32 bytes). */
  secret?: string;
  /** PEM SPKI public key for RS256/ES256/EdDSA tokens. */
  publicKey?: string;
  /** PEM PKCS#8 private key: the gateway signs its own tokens with it. */
  privateKey?: string;
  /** Algorithm of `publicKey` / `privateKey`. */
  algorithm?: "RS256" | "ES256" | "EdDSA";
  /** JWKS of an outside identity provider. */
  jwksUrl?: string;
  issuer: string;
  audience: string;
  /** Longest a token may live (`exp - iat`, or `exp - now` without `iat`), in s. @default 86400 */
  maxLifetimeS?: number;
  /** Clock difference allowed on `exp`, `nbf` and `iat`, in s. @default 60 */
  clockSkewS?: number;
}

/** Defaults of {@link TokenSettings.maxLifetimeS} and {@link TokenSettings.clockSkewS}. */
export const TOKEN_MAX_LIFETIME_S = 86_400;
export const TOKEN_CLOCK_SKEW_S = 60;

/** Whether any key is configured, i.e. whether authentication can be on at all. */
export function hasKeys(settings: Partial<TokenSettings>): boolean {
  return Boolean(settings.secret || settings.publicKey || settings.privateKey || settings.jwksUrl);
}

/** jose's key type (Node's CryptoKey when node types are in the program, the DOM one otherwise). */
type Key = Awaited<ReturnType<typeof importSPKI>>;
type VerifyKey = Key | Uint8Array;
type KeyResolver = Parameters<typeof jwtVerify>[1];

function claimList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

/** Permissions and roles carried by a verified payload. */
function principalOf(payload: JWTPayload): Principal {
  const roles = claimList(payload.roles);
  const direct = [
    ...claimList(payload.perms),
    ...claimList(payload.permissions),
    ...(typeof payload.scope === "string" ? payload.scope.split(" ") : []),
  ].filter(isPermission);
  const permissions = [...new Set([...direct, ...permissionsOf(roles, {})])];
  const sub = typeof payload.sub === "string" ? payload.sub : "unknown";
  const name = typeof payload.name === "string" ? payload.name : sub;
  return {
    id: sub,
    name,
    kind: sub.startsWith("user:") ? "user" : sub.startsWith("apikey:") ? "apikey" : "token",
    roles,
    permissions,
    ...(payload.exp ? { expiresAt: payload.exp * 1000 } : {}),
    ...(typeof payload.sep === "number" && sub.startsWith("user:")
      ? {
        session: {
          user: sub.slice("user:".length),
          epoch: payload.sep,
          ...(typeof payload.sid === "string" ? { sid: payload.sid } : {}),
        },
      }
      : {}),
  };
}

const VERIFIED_CACHE_MS = 60_000;
const VERIFIED_CACHE_SIZE = 10_000;

/** Verifies bearer tokens against the configured keys. */
export class TokenVerifier {
  readonly #settings: TokenSettings;
  #secret?: Uint8Array;
  #publicKey?: Promise<Key>;
  #jwks?: ReturnType<typeof createRemoteJWKSet>;
  readonly #verified = new Map<string, { principal: Principal; until: number }>();

  constructor(settings: TokenSettings) {
    this.#settings = settings;
    if (settings.secret) this.#secret = new TextEncoder().encode(settings.secret);
    if (settings.publicKey) {
      this.#publicKey = importSPKI(settings.publicKey, settings.algorithm ?? "ES256");
    } else if (settings.privateKey) {
      this.#publicKey = publicOf(settings.privateKey, settings.algorithm ?? "ES256");
    }
    if (settings.jwksUrl) this.#jwks = createRemoteJWKSet(new URL(settings.jwksUrl));
  }

  #resolve: KeyResolver = async (header, token) => {
    if (header.alg === "HS256") {
      if (this.#secret) return this.#secret as VerifyKey;
    } else if (this.#publicKey && (!this.#jwks || !header.kid)) {
      return await this.#publicKey;
    } else if (this.#jwks) {
      return await this.#jwks(header, token);
    }
    throw new AuthError("AUTHENTICATION_FAILED", `No key for tokens signed with ${header.alg}`);
  };

  /** The principal of a token verified before and not expired since; undefined otherwise. */
  verified(token: string): Principal | undefined {
    const cached = this.#verified.get(token);
    return cached && cached.until > Date.now() ? cached.principal : undefined;
  }

  /**
   * The principal of a valid token; throws {@link AuthError} otherwise.
   * Verified tokens are remembered until they expire (a minute at most), so
   * a client sending the same token with every request pays for one check.
   */
  async verify(token: string): Promise<Principal> {
    const known = this.verified(token);
    if (known) return known;
    this.#verified.delete(token);
    const principal = await this.#verify(token);
    if (this.#verified.size >= VERIFIED_CACHE_SIZE) this.#verified.clear();
    this.#verified.set(token, {
      principal,
      until: Math.min(principal.expiresAt ?? Infinity, Date.now() + VERIFIED_CACHE_MS),
    });
    return principal;
  }

  async #verify(token: string): Promise<Principal> {
    let typ: unknown;
    try {
      typ = decodeProtectedHeader(token).typ;
    } catch {
      throw new AuthError("AUTHENTICATION_FAILED", "Malformed token");
    }
    // Its audience is a service, so jwt_audience refuses it too; this says why.
    if (typ === CALL_TYP) throw new CallCredentialAsBearer();
    try {
      const skew = this.#settings.clockSkewS ?? TOKEN_CLOCK_SKEW_S;
      const { payload } = await jwtVerify(token, this.#resolve, {
        issuer: this.#settings.issuer,
        audience: this.#settings.audience,
        algorithms: ["HS256", "RS256", "ES256", "EdDSA"],
        // A token without exp would be a credential for ever; jose checks exp and nbf with the skew.
        requiredClaims: ["exp"],
        clockTolerance: skew,
      });
      this.#checkLifetime(payload, skew);
      return principalOf(payload);
    } catch (error) {
      if (error instanceof AuthError) throw error;
      if (error instanceof errors.JWTExpired) {
        throw new AuthError("AUTHENTICATION_FAILED", "Token expired");
      }
      if (error instanceof errors.JWSSignatureVerificationFailed) {
        throw new AuthError("AUTHENTICATION_FAILED", "Token signature is not valid");
      }
      if (error instanceof errors.JWTClaimValidationFailed && error.reason === "missing") {
        throw new AuthError("AUTHENTICATION_FAILED", `Token has no '${error.claim}' claim`);
      }
      if (error instanceof errors.JWTClaimValidationFailed) {
        throw new AuthError("AUTHENTICATION_FAILED", `Token claim '${error.claim}' is not valid`);
      }
      throw new AuthError("AUTHENTICATION_FAILED", "Token is not valid");
    }
  }

  /**
   * jose checks `iat` only with a maximum age: a token "issued" in the future
   * would outlive any age limit, and a long `exp - iat` is a credential that
   * stays useful long after it leaked.
   */
  #checkLifetime(payload: JWTPayload, skew: number): void {
    const now = Math.floor(Date.now() / 1000);
    const iat = typeof payload.iat === "number" ? payload.iat : undefined;
    if (iat !== undefined && iat > now + skew) {
      throw new AuthError(
        "AUTHENTICATION_FAILED",
        `Token 'iat' is ${iat - now} s in the future (allowed clock skew ${skew} s)`,
      );
    }
    const max = this.#settings.maxLifetimeS ?? TOKEN_MAX_LIFETIME_S;
    const lifetime = payload.exp! - (iat ?? now);
    if (lifetime > max) {
      throw new AuthError(
        "AUTHENTICATION_FAILED",
        `Token lives ${lifetime} s (exp - ${iat === undefined ? "now" : "iat"}), ` +
          `longer than the ${max} s allowed (jwt_max_lifetime_s)`,
      );
    }
  }
}

/** The public half of a PKCS#8 private key (JWK export keeps the public parameters). */
async function publicOf(pem: string, algorithm: string): Promise<Key> {
  const privateKey = await importPKCS8(pem, algorithm, { extractable: true });
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...jwk } = await exportJWK(privateKey);
  return await importJWK({ ...jwk, alg: algorithm }, algorithm) as Key;
}

/** What the gateway puts in the tokens it issues. */
export interface IssueClaims {
  sub: string;
  name: string;
  roles: string[];
  perms: string[];
  /** The user's session epoch, for tokens of a login (see {@link Principal.session}). */
  sep?: number;
  /** The login session (refresh-token family) the token belongs to. */
  sid?: string;
}

/** Signs the gateway's own access tokens (with the secret, or the private key). */
export class TokenIssuer {
  readonly #settings: TokenSettings;
  readonly #key: Promise<VerifyKey>;
  readonly #alg: string;

  constructor(settings: TokenSettings) {
    this.#settings = settings;
    if (settings.privateKey) {
      this.#alg = settings.algorithm ?? "ES256";
      this.#key = importPKCS8(settings.privateKey, this.#alg);
    } else if (settings.secret) {
      this.#alg = "HS256";
      this.#key = Promise.resolve(new TextEncoder().encode(settings.secret));
    } else {
      throw new Error("issuing tokens needs jwt_secret or jwt_private_key");
    }
  }

  /** Whether settings allow issuing tokens. */
  static possible(settings: Partial<TokenSettings>): boolean {
    return Boolean(settings.secret || settings.privateKey);
  }

  /** A signed token valid for `ttlSeconds`, with its expiry in ms. */
  async issue(
    claims: IssueClaims,
    ttlSeconds: number,
  ): Promise<{ token: string; expiresAt: number }> {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({
      name: claims.name,
      roles: claims.roles,
      perms: claims.perms,
      ...(claims.sep !== undefined ? { sep: claims.sep } : {}),
      ...(claims.sid !== undefined ? { sid: claims.sid } : {}),
    })
      .setProtectedHeader({ alg: this.#alg, typ: "JWT" })
      .setSubject(claims.sub)
      .setIssuer(this.#settings.issuer)
      .setAudience(this.#settings.audience)
      .setIssuedAt(now)
      .setExpirationTime(now + ttlSeconds)
      .setJti(crypto.randomUUID())
      .sign(await this.#key);
    return { token, expiresAt: (now + ttlSeconds) * 1000 };
  }
}

/** The key type each signing algorithm needs (node:crypto's asymmetricKeyType). */
const KEY_TYPES = { RS256: "rsa", ES256: "ec", EdDSA: "ed25519" } as const;

/**
 * Token settings from a component's configuration; undefined when no key is
 * set (auth off). A key that cannot be read or parsed, or does not fit
 * jwt_algorithm, is a {@link ConfigError} naming the key.
 */
export async function tokenSettingsFrom(config: {
  jwt_secret?: string;
  jwt_public_key?: string;
  jwt_private_key?: string;
  jwt_algorithm: "RS256" | "ES256" | "EdDSA";
  jwks_url?: string;
  jwt_issuer: string;
  jwt_audience: string;
  jwt_max_lifetime_s?: number;
  jwt_clock_skew_s?: number;
}): Promise<TokenSettings | undefined> {
  const pem = async (key: "jwt_public_key" | "jwt_private_key", value: string | undefined) => {
    if (value === undefined) return undefined;
    const where = value.startsWith("-----BEGIN") ? "" : ` (${value})`;
    let text = value;
    if (where) {
      try {
        text = await Deno.readTextFile(value);
      } catch (error) {
        throw new ConfigError(`${key}: cannot read ${value}: ${(error as Error).message}`);
      }
    }
    // A bad key is a configuration error at start, not a crash at the first token.
    const expected = KEY_TYPES[config.jwt_algorithm];
    let type: string | undefined;
    try {
      const parsed = key === "jwt_private_key" ? createPrivateKey(text) : createPublicKey(text);
      type = parsed.asymmetricKeyType;
    } catch {
      throw new ConfigError(
        `${key}${where} is not a PEM ${
          key === "jwt_private_key" ? "PKCS#8 private" : "SPKI public"
        } key (make one with \`main.ts keygen --jwt --out NAME\`)`,
      );
    }
    if (type !== expected) {
      throw new ConfigError(
        `${key}${where} is a ${type} key, but jwt_algorithm ${config.jwt_algorithm} needs ${expected}`,
      );
    }
    return text;
  };
  const settings: TokenSettings = {
    secret: config.jwt_secret,
    publicKey: await pem("jwt_public_key", config.jwt_public_key),
    privateKey: await pem("jwt_private_key", config.jwt_private_key),
    algorithm: config.jwt_algorithm,
    jwksUrl: config.jwks_url,
    issuer: config.jwt_issuer,
    audience: config.jwt_audience,
    maxLifetimeS: config.jwt_max_lifetime_s,
    clockSkewS: config.jwt_clock_skew_s,
  };
  return hasKeys(settings) ? settings : undefined;
}
