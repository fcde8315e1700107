/**
 * Call credentials: what the gateway hands a worker instead of a caller's
 * bearer token or API key. The gateway authorizes a call itself, then signs
 * a JWT bound to that one call:
 *
 * - protected header `typ: plantd-call+jwt` (the gateway refuses it as a bearer);
 * - `aud` the service (`org.plantd.State`), `iss` the gateway's issuer;
 * - `sub`/`name` of the caller; `perms` only the permission the call needs;
 * - `op` the operation and `req` the SHA-256 (base64url) of the request JSON
 *   without its `token` field, so it authorizes that request and no other;
 * - `exp` seconds away (at most {@link MAX_CALL_TTL_S}), and a random `jti`
 *   the service accepts once.
 *
 * A worker that captures one (a fake `org.plantd.State`) holds a credential
 * for the request it already saw, usable once, for seconds, at the state
 * service only.
 *
 * Signing is synchronous (node:crypto, a standard JWS): a call is signed per
 * uncached request, and jose's async HS256 sign measured 40-100 µs against
 * 10-40 µs for an HMAC here.
 *
 * @module
 */
import { createHash, createHmac, createPrivateKey, createPublicKey, sign } from "node:crypto";
import { Buffer } from "node:buffer";
import { decodeProtectedHeader, errors, importSPKI, type JWTPayload, jwtVerify } from "jose";
import { statePermissions } from "./permissions.ts";
import {
  AuthError,
  CALL_TYP,
  type Principal,
  type TokenSettings,
  TokenVerifier,
} from "./tokens.ts";

export { CALL_TYP };

/** Longest lifetime of a call credential a service accepts (and `call_token_ttl_s` allows). */
export const MAX_CALL_TTL_S = 60;
/** Clock difference between gateway and service tolerated on that ceiling (not on `exp`). */
const CLOCK_SKEW_S = 5;
/** Call credentials remembered as used, at most (each until its `exp`); beyond it calls are refused. */
const MAX_SEEN = 500_000;

/** A request to a service, as a JSON object. */
export type CallRequest = Record<string, unknown>;

/** Whether a token's protected header says it is a call credential (signature not checked). */
export function isCallCredential(token: string): boolean {
  try {
    return decodeProtectedHeader(token).typ === CALL_TYP;
  } catch {
    return false;
  }
}

/** The request's JSON without a `token` field: what `req` is the digest of. */
export function requestJson(request: CallRequest): string {
  const { token: _token, ...rest } = request;
  return JSON.stringify(rest);
}

function digest(json: string): string {
  return createHash("sha256").update(json).digest("base64url");
}

/**
 * The permission a call credential for a state operation on `scope`
 * carries: the scope's own grant at the operation's level
 * (`state:scope:plant:write`), else the global form (`state:scope:create`,
 * `state:scope:list`). None for operations that need none (`health`) or do
 * not exist (the service refuses those itself).
 */
export function statePermissionFor(operation: string, scope: string | undefined): string[] {
  const alternatives = statePermissions(operation, scope);
  if (!alternatives || operation === "health") return [];
  const own = scope === undefined
    ? undefined
    : alternatives.find((p) => p.startsWith(`state:scope:${scope}:`) && !p.endsWith(":admin"));
  return [own ?? alternatives[0]!];
}

/** Who a call is made for. */
export interface CallCaller {
  id: string;
  name: string;
}

/** Signs call credentials with the gateway's own key (`jwt_private_key`, else `jwt_secret`). */
export class CallSigner {
  readonly #issuer: string;
  readonly #ttlS: number;
  readonly #header: string;
  readonly #sign: (input: string) => string;

  constructor(settings: TokenSettings, ttlS: number) {
    if (!Number.isInteger(ttlS) || ttlS < 1 || ttlS > MAX_CALL_TTL_S) {
      throw new RangeError(`call credential lifetime must be 1..${MAX_CALL_TTL_S} s, not ${ttlS}`);
    }
    this.#issuer = settings.issuer;
    this.#ttlS = ttlS;
    let alg: string;
    // The same key as TokenIssuer: the private key when set, else the secret.
    if (settings.privateKey) {
      alg = settings.algorithm ?? "ES256";
      const key = createPrivateKey(settings.privateKey);
      this.#sign = alg === "EdDSA"
        ? (input) => sign(null, Buffer.from(input), key).toString("base64url")
        : alg === "ES256"
        ? (input) =>
          sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" }).toString(
            "base64url",
          )
        : (input) => sign("sha256", Buffer.from(input), key).toString("base64url");
    } else if (settings.secret) {
      alg = "HS256";
      const secret = settings.secret;
      this.#sign = (input) => createHmac("sha256", secret).update(input).digest("base64url");
    } else {
      throw new Error("call credentials need jwt_private_key or jwt_secret");
    }
    this.#header = Buffer.from(JSON.stringify({ alg, typ: CALL_TYP })).toString("base64url");
  }

  /** Whether settings have a key to sign with. */
  static possible(settings: Partial<TokenSettings>): boolean {
    return Boolean(settings.secret || settings.privateKey);
  }

  /** A credential for `operation` of `service` with exactly `perms`, bound to `json`. */
  sign(caller: CallCaller, service: string, operation: string, perms: string[], json: string) {
    const now = Math.floor(Date.now() / 1000);
    const payload = {
      iss: this.#issuer,
      aud: service,
      sub: caller.id,
      name: caller.name,
      perms,
      op: operation,
      req: digest(json),
      iat: now,
      exp: now + this.#ttlS,
      jti: crypto.randomUUID(),
    };
    const input = `${this.#header}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}`;
    return `${input}.${this.#sign(input)}`;
  }

  /**
   * The JSON to send for a state request made by `caller`: the request
   * without any `token` it came with, plus a call credential when the
   * operation needs a permission.
   */
  stateRequest(caller: CallCaller, service: string, operation: string, request: CallRequest) {
    const json = requestJson(request);
    const scope = typeof request.service === "string" ? request.service : undefined;
    const perms = statePermissionFor(operation, scope);
    if (perms.length === 0) return json;
    const token = JSON.stringify(this.sign(caller, service, operation, perms, json));
    // JSON.stringify of an object is "{…}": the token goes in as its last field.
    return json === "{}" ? `{"token":${token}}` : `${json.slice(0, -1)},"token":${token}}`;
  }
}

/**
 * What taking a call credential's id is: its `first` use; the same delivery
 * of the same request again (`redelivery`: the broker routing a request
 * again after a worker was lost, or a durable request after a restart); or a
 * `replay`, the id arriving with another delivery (a new request to the
 * broker by whoever captured it).
 */
export type CallUse = "first" | "redelivery" | "replay";

/**
 * Where a service records the ids of the call credentials it took, each
 * with the delivery it came with, until its `exp`. In the process for a
 * service that is alone on its store (libSQL: one worker holds the file);
 * in the shared database when several workers serve one store (PostgreSQL,
 * state/store_pg.ts), so a replay reaching another worker is refused too.
 */
export interface CallLedger {
  /**
   * Records `jti`, first seen with `delivery` (undefined: unknown, so any
   * second sight is a replay), kept until `expS` (seconds since the epoch).
   */
  claim(jti: string, delivery: string | undefined, expS: number): CallUse | Promise<CallUse>;
}

/** A call credential presented again with another delivery: refused, counted apart. */
export class CallReplayed extends AuthError {
  constructor() {
    super("AUTHENTICATION_FAILED", "Call credential already used");
  }
}

/** A second sight of an id: a redelivery only with the same delivery, known both times. */
export function useOf(first: string | null | undefined, again: string | undefined): CallUse {
  return first != null && again !== undefined && first === again ? "redelivery" : "replay";
}

/** Call credentials already used, each kept until its `exp` (seconds), in the process. */
export class MemoryCallLedger implements CallLedger {
  readonly #entries = new Map<string, { until: number; delivery: string | undefined }>();
  readonly #max: number;

  constructor(max = MAX_SEEN) {
    this.#max = max;
  }

  /** Throws when too many are in flight to remember one more. */
  claim(jti: string, delivery: string | undefined, expS: number): CallUse {
    const now = Math.floor(Date.now() / 1000);
    // Mostly in expiry order: drop expired ones from the front.
    for (const [id, entry] of this.#entries) {
      if (entry.until >= now) break;
      this.#entries.delete(id);
    }
    const known = this.#entries.get(jti);
    if (known) return useOf(known.delivery, delivery);
    if (this.#entries.size >= this.#max) {
      for (const [id, entry] of this.#entries) if (entry.until < now) this.#entries.delete(id);
      // Forgetting one would let it be replayed: refuse instead.
      if (this.#entries.size >= this.#max) {
        throw new AuthError("AUTHENTICATION_FAILED", "Too many call credentials in flight");
      }
    }
    this.#entries.set(jti, { until: expS, delivery });
    return "first";
  }

  get size(): number {
    return this.#entries.size;
  }
}

type Key = Awaited<ReturnType<typeof importSPKI>>;

/**
 * Verifies the call credentials a service receives: the gateway's signature
 * (its HS256 secret, or the public key of its `jwt_private_key`), `typ`,
 * `aud` the service, `iss`, `exp` present and at most a minute away, the
 * `jti` not seen before, and the binding to the request at hand.
 */
export class CallVerifier {
  readonly #settings: TokenSettings;
  readonly #service: string;
  readonly #hmac?: Promise<Key>;
  readonly #publicKey?: Promise<Key>;
  readonly #ledger: CallLedger;
  readonly #memory?: MemoryCallLedger;

  constructor(
    settings: TokenSettings,
    service: string,
    options: { maxSeen?: number; ledger?: CallLedger } = {},
  ) {
    this.#settings = settings;
    this.#service = service;
    if (options.ledger) this.#ledger = options.ledger;
    else this.#ledger = this.#memory = new MemoryCallLedger(options.maxSeen ?? MAX_SEEN);
    if (settings.secret) {
      // Imported once: jose imports a raw secret again on every verification.
      this.#hmac = crypto.subtle.importKey(
        "raw",
        new TextEncoder().encode(settings.secret),
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["verify"],
      ) as Promise<Key>;
    }
    const algorithm = settings.algorithm ?? "ES256";
    const pem = settings.publicKey ??
      (settings.privateKey ? publicKeyPem(settings.privateKey) : undefined);
    if (pem) this.#publicKey = importSPKI(pem, algorithm);
  }

  /** Call credentials remembered as used in the process (for tests and metrics). */
  get remembered(): number {
    return this.#memory?.size ?? 0;
  }

  /**
   * The caller of a valid credential for `operation` with `request`; throws
   * {@link AuthError} ({@link CallReplayed} for an id taken before with
   * another delivery). `delivery` names how the request arrived (the broker's
   * client address for it, the same when the broker routes it again);
   * without it a second sight of an id is always a replay.
   */
  async verify(
    token: string,
    operation: string,
    request: CallRequest,
    delivery?: string,
  ): Promise<Principal> {
    const payload = await this.#verified(token);
    const now = Math.floor(Date.now() / 1000);
    const exp = payload.exp!;
    if (exp > now + MAX_CALL_TTL_S + CLOCK_SKEW_S) {
      throw new AuthError("AUTHENTICATION_FAILED", "Call credential lives too long");
    }
    const perms = payload.perms;
    if (
      typeof payload.jti !== "string" || typeof payload.op !== "string" ||
      typeof payload.req !== "string" || !Array.isArray(perms) ||
      !perms.every((p) => typeof p === "string")
    ) {
      throw new AuthError("AUTHENTICATION_FAILED", "Call credential claims are not valid");
    }
    const use = await this.#ledger.claim(payload.jti, delivery, exp);
    if (use === "replay") throw new CallReplayed();
    if (payload.op !== operation || payload.req !== digest(requestJson(request))) {
      throw new AuthError("PERMISSION_DENIED", "Call credential is for another request");
    }
    const sub = payload.sub!;
    return {
      id: sub,
      name: typeof payload.name === "string" ? payload.name : sub,
      kind: sub.startsWith("user:") ? "user" : sub.startsWith("apikey:") ? "apikey" : "token",
      roles: [],
      permissions: perms as string[],
      expiresAt: exp * 1000,
      call: { id: payload.jti, redelivered: use === "redelivery" },
    };
  }

  async #verified(token: string): Promise<JWTPayload> {
    try {
      const { payload } = await jwtVerify(token, async (header) => {
        if (header.alg === "HS256" && this.#hmac) return await this.#hmac;
        if (header.alg !== "HS256" && this.#publicKey) return await this.#publicKey;
        throw new AuthError("AUTHENTICATION_FAILED", `No key for call credentials (${header.alg})`);
      }, {
        typ: CALL_TYP,
        issuer: this.#settings.issuer,
        audience: this.#service,
        algorithms: ["HS256", this.#settings.algorithm ?? "ES256"],
        requiredClaims: ["exp", "jti", "sub"],
      });
      return payload;
    } catch (error) {
      if (error instanceof AuthError) throw error;
      if (error instanceof errors.JWTExpired) {
        throw new AuthError("AUTHENTICATION_FAILED", "Call credential expired");
      }
      if (error instanceof errors.JWTClaimValidationFailed) {
        throw new AuthError(
          "AUTHENTICATION_FAILED",
          `Call credential claim '${error.claim}' is not valid`,
        );
      }
      throw new AuthError("AUTHENTICATION_FAILED", "Call credential is not valid");
    }
  }
}

/**
 * How a service checks the `token` field of a request: a call credential of
 * the gateway ({@link CallVerifier}), or the caller's own access token as Go
 * plantd clients send it ({@link TokenVerifier}, audience `jwt_audience`).
 */
export function serviceTokenCheck(
  settings: TokenSettings,
  service: string,
  options: { ledger?: CallLedger } = {},
): (
  token: string,
  operation: string,
  request: CallRequest,
  delivery?: string,
) => Promise<Principal> {
  const calls = new CallVerifier(settings, service, options);
  const tokens = new TokenVerifier(settings);
  return (token, operation, request, delivery) =>
    isCallCredential(token)
      ? calls.verify(token, operation, request, delivery)
      : tokens.verify(token);
}

/** The SPKI PEM of a PKCS#8 private key: what a service verifies the gateway's credentials with. */
export function publicKeyPem(privateKeyPem: string): string {
  return createPublicKey(privateKeyPem).export({ type: "spki", format: "pem" }) as string;
}

/**
 * The permission a component acting for itself gets for a state operation on
 * one of its own scopes. Creating a scope takes the scope's own admin grant
 * (the only form the state service accepts that names one scope); deleting
 * scopes, erasing history and listing scopes are never signed.
 */
const OWN_SCOPE_LEVELS: Record<string, string> = {
  "create-scope": "admin",
  "list-keys": "read",
  "state-get": "read",
  "state-get-many": "read",
  "state-set": "write",
  "state-set-many": "write",
  "state-cas": "write",
  "delete": "delete",
};

/**
 * The JSON of each state request a component (`caller`, e.g.
 * `service:alarms`) makes on its own behalf: with a call credential holding
 * `state:scope:<scope>:<level>` when the request is on one of `scopes`,
 * without any otherwise, so the state service refuses it. No credential
 * ever names another scope or a global grant.
 */
export function ownScopeRequests(
  signer: CallSigner,
  caller: CallCaller,
  service: string,
  scopes: readonly string[],
): (operation: string, request: CallRequest) => string {
  const own = new Set(scopes);
  return (operation, request) => {
    const json = requestJson(request);
    const scope = typeof request.service === "string" ? request.service : undefined;
    const level = OWN_SCOPE_LEVELS[operation];
    if (scope === undefined || !own.has(scope) || level === undefined) return json;
    const perms = [`state:scope:${scope}:${level}`];
    const token = JSON.stringify(signer.sign(caller, service, operation, perms, json));
    return json === "{}" ? `{"token":${token}}` : `${json.slice(0, -1)},"token":${token}}`;
  };
}
