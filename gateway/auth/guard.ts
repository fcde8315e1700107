/**
 * Who is calling, and may they: turns a request's credentials (a bearer JWT,
 * an API key, or the access-token cookie of a logged-in browser) into a
 * {@link Principal}, checks permissions, and writes every failure and denial
 * to the audit log.
 *
 * With authentication off (no token key configured, loopback only), every
 * caller is the anonymous principal with every permission.
 *
 * @module
 */
import { type AuditEvent, type AuthStore, AuthStoreUnavailableError } from "../../auth/store.ts";
import { allows } from "../../auth/permissions.ts";
import { CallSigner, requestJson } from "../../auth/call_credentials.ts";
import { AuthError, type Principal, TokenIssuer, TokenVerifier } from "../../auth/tokens.ts";
import type { TokenSettings } from "../../auth/tokens.ts";
import { logger } from "../../telemetry/log.ts";
import { logLimiter } from "../../telemetry/log_window.ts";
import type { Revocations } from "./revocations.ts";

/** Name of the cookie holding a browser's access token. */
export const ACCESS_COOKIE = "plantd_access";
/** Name of the cookie holding a browser's refresh token (sent to /api/auth only). */
export const REFRESH_COOKIE = "plantd_refresh";

/** The principal of every request when authentication is off. */
export const ANONYMOUS: Principal = {
  id: "anonymous",
  name: "anonymous",
  kind: "token",
  roles: [],
  permissions: ["*"],
};

/** Where a credential came from: cookies need CSRF protection, headers do not. */
export type CredentialSource = "header" | "cookie" | "message";

/** What the guard reports, for metrics. */
export interface GuardObserver {
  authFailure?(reason: string): void;
  denied?(): void;
}

const API_KEY_PREFIX = "pk_";
/** Verified API keys are remembered this long, so a key costs no database read per request. */
const API_KEY_CACHE_MS = 10_000;

/** Authentication and authorization of the gateway. */
export class Guard {
  readonly enabled: boolean;
  readonly store: AuthStore;
  readonly issuer?: TokenIssuer;
  /** Signs the call credentials state requests carry; undefined without a signing key. */
  readonly calls?: CallSigner;
  readonly #verifier?: TokenVerifier;
  readonly #observer: GuardObserver;
  readonly #keys = new Map<string, { principal: Principal; until: number }>();
  readonly #log = logger("gateway", "audit");
  /** Failed writes of queued events are logged at most this often (they are retried). */
  readonly #logOnce = logLimiter(10_000);
  /** Session epochs and revoked sessions; none: tokens are good until they expire. */
  readonly revocations?: Revocations;

  constructor(
    store: AuthStore,
    settings: TokenSettings | undefined,
    observer: GuardObserver = {},
    options: { callTokenTtlS?: number; revocations?: Revocations } = {},
  ) {
    this.store = store;
    const { revocations } = options;
    this.revocations = revocations;
    // A revoked user's API keys may sit in the cache: read them again.
    revocations?.onChange(() => this.forgetApiKeys());
    this.enabled = settings !== undefined;
    this.#observer = observer;
    if (settings) {
      this.#verifier = new TokenVerifier(settings);
      if (TokenIssuer.possible(settings)) this.issuer = new TokenIssuer(settings);
      if (CallSigner.possible(settings)) {
        this.calls = new CallSigner(settings, options.callTokenTtlS ?? 10);
      }
    }
  }

  /**
   * The JSON of a request to `service` made for `principal`. With
   * authentication on, a `token` the caller put in is dropped (the gateway
   * speaks for the caller, and no caller's credential goes to a worker) and a
   * call credential for this request only is added (auth/call_credentials.ts);
   * with authentication off, the request as it is.
   */
  stateRequest(
    principal: Principal,
    service: string,
    operation: string,
    request: Record<string, unknown>,
  ): string {
    if (!this.enabled) return JSON.stringify(request);
    if (!this.calls) return requestJson(request);
    return this.calls.stateRequest(principal, service, operation, request);
  }

  /** The principal behind a credential; throws {@link AuthError} when it is missing or bad. */
  async authenticate(credential: string | undefined): Promise<Principal> {
    if (!this.enabled) return ANONYMOUS;
    if (!credential) {
      throw new AuthError("AUTHENTICATION_REQUIRED", "Authentication required");
    }
    const principal = credential.startsWith(API_KEY_PREFIX)
      ? await this.#apiKey(credential)
      : await this.#verifier!.verify(credential);
    if (this.revocations && !await this.revocations.check(principal)) {
      throw new AuthError("AUTHENTICATION_FAILED", "Access revoked");
    }
    return principal;
  }

  /**
   * What {@link authenticate} would answer, when that is known without
   * waiting: authentication off, or a token or API key verified moments ago.
   * Undefined: call {@link authenticate}.
   */
  authenticated(credential: string | undefined): Principal | undefined {
    if (!this.enabled) return ANONYMOUS;
    if (!credential) return undefined;
    let principal: Principal | undefined;
    if (credential.startsWith(API_KEY_PREFIX)) {
      const cached = this.#keys.get(credential);
      principal = cached && cached.until > Date.now() ? cached.principal : undefined;
    } else principal = this.#verifier!.verified(credential);
    // Revoked, or not known yet: authenticate() says which.
    if (!principal || !this.revocations) return principal;
    const ok = this.revocations.check(principal);
    if (ok === true) return principal;
    if (ok !== false) ok.catch(() => {}); // authenticate() reads it again and reports
    return undefined;
  }

  /** Whether a principal admitted earlier (an open WebSocket's) may still act. */
  stillValid(principal: Principal): boolean {
    return this.revocations?.valid(principal) ?? true;
  }

  async #apiKey(key: string): Promise<Principal> {
    const cached = this.#keys.get(key);
    if (cached && cached.until > Date.now()) return cached.principal;
    this.#keys.delete(key);
    const view = await this.store.checkApiKey(key);
    if (!view) throw new AuthError("AUTHENTICATION_FAILED", "API key is not valid");
    const permissions = await this.store.permissionsOf(view.roles);
    const principal: Principal = {
      id: `apikey:${view.id}`,
      name: view.name,
      kind: "apikey",
      roles: view.roles,
      permissions,
      ...(view.expires_at !== null ? { expiresAt: view.expires_at } : {}),
      ...(view.owner !== undefined ? { owner: view.owner } : {}),
    };
    if (this.#keys.size > 10_000) this.#keys.clear();
    this.#keys.set(key, { principal, until: Date.now() + API_KEY_CACHE_MS });
    return principal;
  }

  /** Forgets cached API keys (after a revocation on this gateway). */
  forgetApiKeys(): void {
    this.#keys.clear();
  }

  /** Whether the principal holds any of the alternatives. */
  allows(principal: Principal, ...alternatives: string[]): boolean {
    return allows(principal.permissions, ...alternatives);
  }

  /**
   * Throws {@link AuthError} PERMISSION_DENIED, after auditing it, unless the
   * principal holds one of the alternatives (the first one names the denial).
   */
  require(principal: Principal, ip: string, alternatives: string[], target: string): void {
    if (this.allows(principal, ...alternatives)) return;
    this.#observer.denied?.();
    this.audit({
      time: Date.now(),
      actor: principal.id,
      action: "access.denied",
      target,
      outcome: "denied",
      ip,
      details: { needs: alternatives[0] },
    });
    throw new AuthError("PERMISSION_DENIED", `Permission '${alternatives[0]}' required`);
  }

  /** Records a refused credential. */
  failed(error: AuthError, ip: string, target: string): void {
    this.#observer.authFailure?.(error.code);
    this.audit({
      time: Date.now(),
      actor: "anonymous",
      action: "auth.failure",
      target,
      outcome: "failure",
      ip,
      details: { code: error.code, reason: error.message },
    });
  }

  /**
   * Writes an audit event to the log and queues it for the audit table
   * (written in batches, retried while the database fails, the oldest
   * dropped past the queue's bound: auth/store.ts); never throws.
   */
  audit(event: AuditEvent): void {
    const level = event.outcome === "success" ? "info" : "warn";
    this.#log[level]("{action} {target} by {actor}: {outcome}", { ...event });
    this.store.audit(event).catch((error) => {
      this.#logOnce(
        "queued",
        (suppressed) =>
          this.#log.error("audit events not stored yet, kept for a retry: {error}", {
            error: String(error),
            waiting: this.store.auditStatus().waiting,
            suppressed,
          }),
      );
    });
  }

  /**
   * Writes the `attempt` event of a security-relevant change and waits until
   * it is stored, before the change is made: a change is never made
   * unaudited. Throws {@link AuthStoreUnavailableError} (503, nothing
   * changed) when it cannot be written.
   */
  async auditFirst(event: AuditEvent): Promise<void> {
    this.#log.info("{action} {target} by {actor}: {outcome}", { ...event });
    try {
      await this.store.auditNow(event);
    } catch (error) {
      const cause = error instanceof Error ? error.message : String(error);
      this.#log.error("{action} {target} refused: its audit event cannot be stored: {error}", {
        ...event,
        error: cause,
      });
      throw new AuthStoreUnavailableError(
        `the audit log cannot be written, so nothing was changed: ${cause}`,
        { cause: error },
      );
    }
  }
}
