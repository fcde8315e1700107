/**
 * The security headers of every gateway response, computed once, in two sets.
 *
 * Documents (the dashboard, static files, anything outside `/api`) get what
 * `hono/secure-headers` sets with {@link secureHeadersOptions}
 * (secure_headers_test.ts checks that they stay equal). JSON responses under
 * `/api` get the set the OWASP REST Security Cheat Sheet asks of an API
 * ({@link SecureHeaders.apiList}): nosniff, a CSP that lets nothing load or
 * frame it, `X-Frame-Options: DENY`, CORP same-origin, and HSTS under TLS.
 * The rest of the document set (opener policy, referrer policy, DNS
 * prefetch, download options...) governs pages, not JSON, and each header
 * costs Deno's HTTP server about 2 µs per response: 14 headers made a
 * cached state read twice as expensive as 6 (measured: a constant JSON
 * response with 12 headers 25K req/s, with 6 about 50K).
 *
 * Both sets are fixed lists:
 * the middleware rebuilt and set about a dozen headers one by one on every
 * response, a large share of a cached state read. The request pipeline sets
 * {@link SecureHeaders.list} on responses after their route (overwriting what
 * a route set, as the middleware did); a hot route may build its response
 * with {@link SecureHeaders.apiHeaders} and {@link SecureHeaders.mark} it, so
 * they are not set twice.
 *
 * @module
 */
import type { secureHeaders } from "hono/secure-headers";

type SecureHeadersOptions = NonNullable<Parameters<typeof secureHeaders>[0]>;

/** What the dashboard needs: its own scripts and styles, talking to its own origin. */
const CSP = {
  defaultSrc: ["'self'"],
  connectSrc: ["'self'", "ws:", "wss:"],
  imgSrc: ["'self'", "data:"],
  styleSrc: ["'self'", "'unsafe-inline'"],
  frameAncestors: ["'none'"],
};

const HSTS = "max-age=31536000; includeSubDomains";

/** The options of `hono/secure-headers` these headers are equal to. */
export function secureHeadersOptions(tls: boolean): Partial<SecureHeadersOptions> {
  return { strictTransportSecurity: tls ? HSTS : false, contentSecurityPolicy: CSP };
}

function cspValue(): string {
  return Object.entries(CSP).map(([directive, values]) =>
    [directive.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()), ...values].join(" ")
  ).join("; ");
}

/** What an API response may load or be framed by: nothing. */
const API_CSP = "default-src 'none'; frame-ancestors 'none'";

const MARKED = Symbol("secure headers set");
type Marked = Response & { [MARKED]?: boolean };

/** The security headers of one gateway. */
export class SecureHeaders {
  /** Lower-case names and values, in the order the middleware set them. */
  readonly list: readonly (readonly [string, string])[];
  /** The set of JSON responses under `/api`. */
  readonly apiList: readonly (readonly [string, string])[];
  readonly #apiObject: Readonly<Record<string, string>>;

  constructor(tls: boolean) {
    this.list = Object.freeze(
      [
        ["cross-origin-resource-policy", "same-origin"],
        ["cross-origin-opener-policy", "same-origin"],
        ["origin-agent-cluster", "?1"],
        ["referrer-policy", "no-referrer"],
        ...(tls ? [["strict-transport-security", HSTS] as const] : []),
        ["x-content-type-options", "nosniff"],
        ["x-dns-prefetch-control", "off"],
        ["x-download-options", "noopen"],
        ["x-frame-options", "SAMEORIGIN"],
        ["x-permitted-cross-domain-policies", "none"],
        ["x-xss-protection", "0"],
        ["content-security-policy", cspValue()],
      ] as const,
    );
    this.apiList = Object.freeze(
      [
        ["cross-origin-resource-policy", "same-origin"],
        ...(tls ? [["strict-transport-security", HSTS] as const] : []),
        ["x-content-type-options", "nosniff"],
        ["x-frame-options", "DENY"],
        ["content-security-policy", API_CSP],
      ] as const,
    );
    this.#apiObject = Object.freeze(Object.fromEntries(this.apiList));
  }

  /**
   * Headers for a new API response: `own` (content type, ETag...) and the
   * API security headers, which win. A Headers instance: a route that keeps
   * it for many responses has Deno copy it faster than a record.
   */
  apiHeaders(own: Record<string, string>): Headers {
    return new Headers({ ...own, ...this.#apiObject });
  }

  /** Notes that `response` was built with {@link apiHeaders}. */
  mark(response: Response): Response {
    // A property rather than a WeakSet: adding to a WeakSet cost more than the rest of this.
    (response as Marked)[MARKED] = true;
    return response;
  }

  /**
   * Sets the security headers on `response` unless it was built with them:
   * the API set when it answers a request under `/api`, else the document set.
   */
  apply(response: Response, api: boolean): void {
    if ((response as Marked)[MARKED] === true) return;
    const headers = response.headers;
    for (const [name, value] of api ? this.apiList : this.list) headers.set(name, value);
    // What the middleware also did (nothing of ours sets it).
    headers.delete("x-powered-by");
  }
}
