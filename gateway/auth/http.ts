/**
 * The guard in the HTTP pipeline: client addresses, credentials from headers
 * and cookies, CSRF protection for cookie-authenticated writes, rate limits,
 * and the `authorize` call every route makes.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { getCookie } from "hono/cookie";
import { getConnInfo } from "hono/deno";
import { serviceCall, statePermissions } from "../../auth/permissions.ts";
import { AuthError, type Principal } from "../../auth/tokens.ts";
import { STATE_SERVICE } from "../../state/operations.ts";
import { ApiError } from "../errors.ts";
import type { RateCounters } from "../shared/counters.ts";
import { ACCESS_COOKIE, type CredentialSource, type Guard } from "./guard.ts";

declare module "hono" {
  interface ContextVariableMap {
    principal: Principal;
    clientIp: string;
  }
}

/** The client's address: the peer, or with a trusted proxy in front, the hop before it. */
export function clientIp(c: Context, trustedProxies: readonly string[]): string {
  let peer = "unknown";
  try {
    peer = getConnInfo(c).remote.address ?? "unknown";
  } catch {
    // not served by Deno.serve (app.request in tests)
  }
  if (trustedProxies.length === 0 || !trustedProxies.includes(peer)) return peer;
  const hops = (c.req.header("x-forwarded-for") ?? "").split(",").map((h) => h.trim())
    .filter(Boolean);
  // Walk from the nearest hop back past our own proxies.
  for (let i = hops.length - 1; i >= 0; i--) {
    if (!trustedProxies.includes(hops[i]!)) return hops[i]!;
  }
  return hops[0] ?? peer;
}

/** The credential of a request and where it came from. */
export function credentialOf(
  c: Context,
): { credential: string; source: CredentialSource } | undefined {
  const header = c.req.header("authorization");
  if (header) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match) return { credential: match[1]!, source: "header" };
    return { credential: "", source: "header" };
  }
  const apiKey = c.req.header("x-api-key");
  if (apiKey) return { credential: apiKey, source: "header" };
  const cookie = getCookie(c, ACCESS_COOKIE);
  if (cookie) return { credential: cookie, source: "cookie" };
  return undefined;
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Cookies ride along on cross-site requests; a write authenticated by one
 * must come from the gateway's own pages (Origin or Sec-Fetch-Site say so).
 */
function checkCsrf(c: Context, allowedOrigins: readonly string[]): void {
  if (SAFE_METHODS.has(c.req.method)) return;
  const origin = c.req.header("origin");
  if (origin) {
    if (allowedOrigins.includes(origin)) return;
    try {
      if (new URL(origin).host === c.req.header("host")) return;
    } catch {
      // not a URL: refused below
    }
  } else if (c.req.header("sec-fetch-site") === "same-origin") {
    return;
  }
  throw new ApiError("FORBIDDEN", "Cross-site request with a session cookie refused");
}

/**
 * Sets `principal` and `clientIp` on every request. Routes that need no
 * credential (login, health) still get the anonymous principal when none is
 * sent; a credential that is sent must be valid.
 */
export function authMiddleware(
  guard: Guard,
  allowedOrigins: readonly string[],
): MiddlewareHandler {
  return async (c, next) => {
    const ip = c.get("clientIp");
    const found = guard.enabled ? credentialOf(c) : undefined;
    if (!found) {
      c.set("principal", guard.enabled ? UNAUTHENTICATED : await guard.authenticate(undefined));
      return await next();
    }
    try {
      c.set("principal", await guard.authenticate(found.credential));
    } catch (error) {
      if (!(error instanceof AuthError)) throw error;
      // A stale session cookie is not a request to be someone: the caller is
      // anonymous (and may log in or refresh); a bad header credential is refused.
      if (found.source === "cookie") {
        c.set("principal", UNAUTHENTICATED);
        return await next();
      }
      guard.failed(error, ip, `${c.req.method} ${c.req.path}`);
      throw error;
    }
    if (found.source === "cookie") checkCsrf(c, allowedOrigins);
    await next();
  };
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
 * send: state requests carry the caller's token for a state worker that
 * checks tokens itself.
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
  if (!principal.token) return body;
  return [body[0]!, JSON.stringify({ ...request, token: principal.token }), ...body.slice(2)];
}

/**
 * A fixed-window limit per key (`keyOf` undefined: not counted); 429 with
 * Retry-After past it. The address limit runs before authentication, so a
 * flood of bad credentials is limited too; the credential limit after it.
 */
export function rateLimit(
  counters: RateCounters,
  keyOf: (c: Context) => string | undefined,
  limit: number,
  windowMs: number,
  limited?: () => void,
): MiddlewareHandler {
  return async (c, next) => {
    const key = limit > 0 ? keyOf(c) : undefined;
    if (key !== undefined) {
      const { count, resetMs } = await counters.hit(key, windowMs);
      if (count > limit) {
        limited?.();
        const seconds = Math.max(1, Math.ceil(resetMs / 1000));
        throw new ApiError("RATE_LIMITED", `Rate limit reached; retry in ${seconds} s`, undefined, {
          "Retry-After": String(seconds),
        });
      }
    }
    await next();
  };
}

/** Sets `clientIp`. */
export function clientIpMiddleware(trustedProxies: readonly string[]): MiddlewareHandler {
  return async (c, next) => {
    c.set("clientIp", clientIp(c, trustedProxies));
    await next();
  };
}
