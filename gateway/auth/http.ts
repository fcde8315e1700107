/**
 * The guard in the HTTP pipeline: client addresses, credentials from headers
 * and cookies, refusal of cross-site writes and of bodies a page could send
 * cross-site, rate limits, and the `authorize` call every route makes.
 *
 * @module
 */
import type { Context, Next } from "hono";
import { bodyLimit } from "hono/body-limit";
import { getCookie } from "hono/cookie";
import {
  alarmsOperationPermission,
  brokerOperationPermission,
  PERMISSIONS,
  serviceCall,
  statePermissions,
} from "../../auth/permissions.ts";
import { AuthError, CallCredentialAsBearer, type Principal } from "../../auth/tokens.ts";
import { BROKER_SERVICE_NAME } from "../../mdp/broker_operations.ts";
import { STATE_SERVICE } from "../../state/operations.ts";
import { ALARMS_SERVICE } from "../../alarms/rules.ts";
import type { GatewayMetrics } from "../gateway_metrics.ts";
import { bearerIs } from "../../telemetry/health.ts";
import { ApiError } from "../errors.ts";
import { checkBodyType, utf8Body } from "../routes/body.ts";
import type { SecureHeaders } from "../secure_headers.ts";
import type { RateCounters, RateHit } from "../shared/counters.ts";
import { crossSiteRefusal, SAFE_METHODS } from "./cross_site.ts";
import { ACCESS_COOKIE, type CredentialSource, type Guard } from "./guard.ts";
import { API_DOCS_PATH } from "../api_docs.ts";

declare module "hono" {
  interface ContextVariableMap {
    principal: Principal;
    clientIp: string;
  }
}

/** The client's address: the peer, or with a trusted proxy in front, the hop before it. */
export function clientIp(c: Context, trustedProxies: readonly string[]): string {
  // What hono/deno's getConnInfo reads (Deno.serve's handler info), without the
  // two objects it wraps it in for every request.
  const info = c.env as { remoteAddr?: Partial<Deno.NetAddr> } | undefined;
  const peer = info?.remoteAddr?.hostname ?? "unknown"; // none: app.request in tests
  if (trustedProxies.length === 0 || !trustedProxies.includes(peer)) return peer;
  const hops = (c.req.header("x-forwarded-for") ?? "").split(",").map((h) => h.trim())
    .filter(Boolean);
  // Walk from the nearest hop back past our own proxies.
  for (let i = hops.length - 1; i >= 0; i--) {
    if (!trustedProxies.includes(hops[i]!)) return hops[i]!;
  }
  return hops[0] ?? peer;
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;
const WHITESPACE = /\s/;

/**
 * The token of an `Authorization: Bearer <token>` header (RFC 6750), or
 * undefined. The usual form is read without running {@link BEARER} over the
 * whole token, which cost a bearer request a measurable share of its time;
 * `trim` and `\s` strip and find the same characters, so both agree.
 */
export function bearerToken(header: string): string | undefined {
  if (header.startsWith("Bearer ")) {
    const token = header.slice(7).trim();
    return token !== "" && !WHITESPACE.test(token) ? token : undefined;
  }
  return BEARER.exec(header)?.[1];
}

/**
 * The last Authorization header read and its credential: a client sends the
 * same header with every request, and handing back the same credential
 * string (whose hash V8 keeps) spares scanning and hashing a long token
 * again to find it among the verified ones. A pure function's memo: every
 * check still runs on the credential.
 */
let lastHeader = "";
let lastCredential = "";

/** The credential of an Authorization header ("" when it is not a bearer one). */
function headerCredential(header: string): string {
  if (header !== lastHeader) {
    lastCredential = bearerToken(header) ?? "";
    lastHeader = header;
  }
  return lastCredential;
}

/** The credential of a request and where it came from. */
export function credentialOf(
  c: Context,
): { credential: string; source: CredentialSource } | undefined {
  const header = c.req.header("authorization");
  if (header) return { credential: headerCredential(header), source: "header" };
  const apiKey = c.req.header("x-api-key");
  if (apiKey) return { credential: apiKey, source: "header" };
  const cookie = getCookie(c, ACCESS_COOKIE);
  if (cookie) return { credential: cookie, source: "cookie" };
  return undefined;
}

/** The principal of a request that sent no credential while authentication is on. */
const UNAUTHENTICATED: Principal = {
  id: "anonymous",
  name: "anonymous",
  kind: "token",
  roles: [],
  permissions: [],
};

/**
 * Requires one of `alternatives`: 401 when the caller sent no credential, 403
 * (audited) when it lacks the permission.
 */
export function authorize(c: Context, guard: Guard, ...alternatives: string[]): void {
  const principal = c.get("principal");
  if (guard.allows(principal, ...alternatives)) return;
  if (principal === UNAUTHENTICATED) {
    throw new AuthError("AUTHENTICATION_REQUIRED", "Authentication required");
  }
  guard.require(principal, c.get("clientIp"), alternatives, `${c.req.method} ${c.req.path}`);
}

/**
 * Checks a Majordomo call on behalf of a principal: `service:call:<service>`,
 * and for the state service the operation's own permission, so the generic
 * bridge is no way around the state routes' checks. Returns the body to
 * send: state requests carry a call credential for that request only
 * ({@link Guard.stateRequest}), never the caller's token.
 */
export function authorizeCall(
  guard: Guard,
  principal: Principal,
  ip: string,
  service: string,
  body: string[],
): string[] {
  if (!guard.enabled) return body;
  const target = `${service} ${body[0] ?? ""}`;
  guard.require(principal, ip, [serviceCall(service)], target);
  if (service === BROKER_SERVICE_NAME) {
    const needed = brokerOperationPermission(body[0] ?? "");
    if (needed) guard.require(principal, ip, [needed], target);
    return body;
  }
  if (service === ALARMS_SERVICE) {
    guard.require(principal, ip, [alarmsOperationPermission(body[0] ?? "")], target);
    return body[0] === "ack" ? withAcker(body, principal) : body;
  }
  if (service !== STATE_SERVICE || body.length < 2) return body;
  let request: Record<string, unknown>;
  try {
    const parsed = JSON.parse(body[1]!);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return body;
    request = parsed;
  } catch {
    return body; // the state service answers malformed requests itself
  }
  const scope = typeof request.service === "string" ? request.service : undefined;
  const needed = statePermissions(body[0]!, scope);
  if (needed) guard.require(principal, ip, needed, target);
  return [body[0]!, guard.stateRequest(principal, service, body[0]!, request), ...body.slice(2)];
}

/**
 * An acknowledgement through the bridge names the caller, whatever `by` it
 * carried: the alarms service records `by` as who acknowledged.
 */
function withAcker(body: string[], principal: Principal): string[] {
  try {
    const request = JSON.parse(body[1] ?? "{}");
    if (typeof request !== "object" || request === null || Array.isArray(request)) return body;
    return [body[0]!, JSON.stringify({ ...request, by: principal.id }), ...body.slice(2)];
  } catch {
    return body; // the alarms service answers malformed requests itself
  }
}

/**
 * The pipeline: a Hono middleware that answers without a promise when no step
 * waits (Hono's `compose` awaits whatever a middleware returns; its type says
 * a promise).
 */
export type RequestPipeline = (c: Context, next: Next) => Response | Promise<Response>;

/** What {@link requestPipeline} needs. */
export interface PipelineOptions {
  guard: Guard;
  counters: RateCounters;
  metrics: GatewayMetrics;
  headers: SecureHeaders;
  /** Renders an error thrown before the route (the app's error handler). */
  onError: (error: Error, c: Context) => Response | Promise<Response>;
  trustedProxies: readonly string[];
  allowedOrigins: readonly string[];
  rateLimitWindowMs: number;
  /** Requests per window from one address; 0: no limit. */
  rateLimitPerIp: number;
  /** Requests per window with one credential; 0: no limit. */
  rateLimitPerToken: number;
  /** `/metrics` needs no permission. */
  publicMetrics: boolean;
  /** A bearer secret that also admits `/metrics` (a scraper's metrics_token). */
  metricsToken?: string | undefined;
  /** Largest request body of `/api/*`. */
  maxBodyBytes: number;
}

/**
 * Everything every request goes through, in one middleware (it was eight, one
 * async frame each, most of a cached read's time):
 *
 * 1. `clientIp`: the peer, or the client named by trusted proxies.
 * 2. On `/api/*`, `/ws` and `/metrics`: the limit per address (before
 *    authentication, so a flood of bad credentials is limited too); the
 *    credential (bearer token, API key or session cookie) as `principal`,
 *    anonymous when none is sent or the session cookie is stale (the caller
 *    may log in or refresh); a bad header credential is refused and audited;
 *    a cross-site write refused (403, before the credential is looked at,
 *    and again for a cookie without the browser's word on its origin); the
 *    limit per credential; on `/metrics` the telemetry permission unless
 *    metrics are public. Past a limit: 429 with Retry-After.
 * 3. On `/api/*`: the body's content type (415), the body limit (413) and
 *    the strict UTF-8 body check (400).
 * 4. After the route (or the error of any step): the security headers and
 *    the request's metrics.
 *
 * Nothing waits when nothing has to: in-process rate counters and
 * credentials verified moments ago are answered at once.
 */
export function requestPipeline(options: PipelineOptions): RequestPipeline {
  const { guard, counters, metrics, headers, trustedProxies, allowedOrigins } = options;
  const windowMs = options.rateLimitWindowMs;
  const limitBody = bodyLimit({
    maxSize: options.maxBodyBytes,
    onError: () => {
      throw new ApiError("PAYLOAD_TOO_LARGE", `Body over ${options.maxBodyBytes} bytes`);
    },
  });

  const checkHit = (kind: "ip" | "token", limit: number, { count, resetMs }: RateHit) => {
    if (count <= limit) return;
    metrics.rateLimited?.(kind);
    const seconds = Math.max(1, Math.ceil(resetMs / 1000));
    throw new ApiError("RATE_LIMITED", `Rate limit reached; retry in ${seconds} s`, undefined, {
      "Retry-After": String(seconds),
    });
  };
  /** Counts a hit; a promise only when the counters are remote. */
  const count = (kind: "ip" | "token", key: string, limit: number): Promise<void> | void => {
    const hit = counters.hitNow?.(key, windowMs);
    if (hit) return checkHit(kind, limit, hit);
    return counters.hit(key, windowMs).then((remote) => checkHit(kind, limit, remote));
  };

  const telemetry = (c: Context, path: string): void => {
    if (path === "/metrics" && !options.publicMetrics) {
      authorize(c, guard, PERMISSIONS.telemetryRead);
    }
  };
  /** 403 for a cross-site write (./cross_site.ts), counted and audited like a denial. */
  const checkCrossSite = (c: Context, cookie: boolean): void => {
    if (SAFE_METHODS.has(c.req.method)) return;
    const reason = crossSiteRefusal(c, allowedOrigins, cookie);
    if (reason === undefined) return;
    metrics.denied?.();
    guard.audit({
      time: Date.now(),
      actor: cookie ? c.get("principal").id : "anonymous",
      action: "access.cross_site",
      target: `${c.req.method} ${c.req.path}`,
      outcome: "denied",
      ip: c.get("clientIp"),
      details: { reason },
    });
    throw new ApiError("FORBIDDEN", `Cross-site request refused: ${reason}`);
  };

  /**
   * The counter key of a principal id, made once per id: a key built per
   * request is a new string to hash at every hit.
   */
  const tokenKeys = new Map<string, string>();
  const tokenKey = (id: string): string => {
    let key = tokenKeys.get(id);
    if (key === undefined) {
      if (tokenKeys.size >= 10_000) tokenKeys.clear();
      tokenKeys.set(id, key = `id:${id}`);
    }
    return key;
  };

  /** After the credential: the limit per credential, then the telemetry permission. */
  const authenticated = (c: Context, path: string): Promise<void> | void => {
    const id = c.get("principal").id;
    if (options.rateLimitPerToken > 0 && id !== "anonymous") {
      const waiting = count("token", tokenKey(id), options.rateLimitPerToken);
      if (waiting) return waiting.then(() => telemetry(c, path));
    }
    telemetry(c, path);
  };

  const authenticate = (c: Context, path: string): Promise<void> | void => {
    const found = guard.enabled ? credentialOf(c) : undefined;
    if (!found) {
      c.set("principal", guard.enabled ? UNAUTHENTICATED : guard.authenticated(undefined)!);
      return authenticated(c, path);
    }
    const known = guard.authenticated(found.credential);
    if (known) {
      c.set("principal", known);
      if (found.source === "cookie") checkCrossSite(c, true);
      return authenticated(c, path);
    }
    return guard.authenticate(found.credential).then((principal) => {
      c.set("principal", principal);
      if (found.source === "cookie") checkCrossSite(c, true);
      return authenticated(c, path);
    }, (error) => {
      if (!(error instanceof AuthError)) throw error;
      // A stale session cookie is not a request to be someone: the caller is
      // anonymous (and may log in or refresh); a bad header credential, or a
      // call credential in any place, is refused.
      if (found.source === "cookie" && !(error instanceof CallCredentialAsBearer)) {
        c.set("principal", UNAUTHENTICATED);
        return authenticated(c, path);
      }
      guard.failed(error, c.get("clientIp"), `${c.req.method} ${c.req.path}`);
      throw error;
    });
  };

  /** Step 2; a promise only when something has to be waited for. */
  const admit = (c: Context, path: string): Promise<void> | void => {
    if (options.rateLimitPerIp > 0) {
      const waiting = count("ip", `ip:${c.get("clientIp")}`, options.rateLimitPerIp);
      if (waiting) {
        return waiting.then(() => {
          checkCrossSite(c, false);
          return authenticate(c, path);
        });
      }
    }
    checkCrossSite(c, false);
    return authenticate(c, path);
  };

  /** Whether `/metrics` is asked with the scraper's metrics_token (no user, no rate limit). */
  const scraper = (c: Context): boolean => {
    if (options.metricsToken === undefined) return false;
    return bearerIs(c.req.header("authorization"), options.metricsToken);
  };

  /** Step 3, then the route; a promise only when something has to be waited for. */
  const route = (c: Context, api: boolean, next: Next): Promise<unknown> | unknown => {
    if (api) checkBodyType(c);
    if (api && c.req.raw.body) {
      return limitBody(c, async () => {
        await utf8Body(c, next);
      });
    }
    return next();
  };

  /** Step 4: security headers and the request's metrics. */
  const finish = (
    c: Context,
    path: string,
    api: boolean,
    started: number,
    refused: boolean,
  ): Response | Promise<Response> => {
    // A route that answered nothing is a bug: a 500, not Hono's empty default response.
    if (!c.finalized) {
      return refuse(c, path, api, started, new Error(`No response for ${c.req.method} ${path}`));
    }
    const res = c.res;
    headers.apply(res, api);
    // The label of a request refused here: the paths the middlewares had.
    const label = refused ? (api ? "/api/*" : path) : routeLabel(c);
    metrics.request(c.req.method, label, res.status, (performance.now() - started) / 1000);
    return res;
  };
  /** An error of steps 1-3 rendered by the app's handler (the route's own are rendered where thrown). */
  const refuse = (
    c: Context,
    path: string,
    api: boolean,
    started: number,
    error: unknown,
  ): Promise<Response> | Response => {
    if (!(error instanceof Error)) throw error;
    c.error = error;
    const rendered = options.onError(error, c);
    if (rendered instanceof Promise) {
      return rendered.then((res) => {
        c.res = res;
        return finish(c, path, api, started, true);
      });
    }
    c.res = rendered;
    return finish(c, path, api, started, true);
  };

  // Synchronous unless a step has to wait: with the fusing router
  // (gateway/fusing_router.ts) a cached read is answered without a promise,
  // and without a closure made for it.
  return (c, next) => {
    const started = performance.now();
    const path = c.req.path;
    // The docs page under /api/docs is a document: it gets the page headers.
    const api = (path === "/api" || path.startsWith("/api/")) && !path.startsWith(API_DOCS_PATH);
    let done: Promise<unknown> | unknown;
    try {
      c.set("clientIp", clientIp(c, trustedProxies));
      const guarded = api || path === "/ws" || (path === "/metrics" && !scraper(c));
      const waiting = guarded ? admit(c, path) : undefined;
      done = waiting ? waiting.then(() => route(c, api, next)) : route(c, api, next);
    } catch (error) {
      return refuse(c, path, api, started, error);
    }
    if (done instanceof Promise) {
      return done.then(
        () => finish(c, path, api, started, false),
        (error) => refuse(c, path, api, started, error),
      );
    }
    return finish(c, path, api, started, false);
  };
}

/**
 * The metrics label of a routed request: its route's path, "unmatched" for
 * the catch-all. Hono's `routePath` builds the list of every matched route
 * to pick one.
 */
function routeLabel(c: Context): string {
  const path = c.req.routePath;
  return path === "/*" ? "unmatched" : path;
}
