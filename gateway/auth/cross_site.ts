/**
 * No cross-site writes: a browser attaches what it has (cookies, a loopback
 * gateway's reach) to a request a page of any origin makes, so a
 * state-changing request is refused when the browser says it comes from
 * another origin, whether authentication is on or off and whatever the
 * credential. A same-site page (another port or subdomain) is another
 * origin's page, so `Sec-Fetch-Site: same-site` is refused too. Requests with
 * neither `Origin` nor `Sec-Fetch-Site` are not from a browser page (curl,
 * scripts, Go clients) and pass, except when a session cookie authenticates
 * them: a cookie needs the browser's word that the page is the gateway's own.
 *
 * @module
 */
import type { Context } from "hono";

/** Methods that change nothing (and are the only ones a check may skip). */
export const SAFE_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Why `c` is a cross-site write to refuse, or undefined when it is not one.
 * `allowedOrigins` are origins besides the gateway's own (`*` opens only
 * WebSockets, never writes). `cookie`: the request is authenticated by a
 * session cookie, so it must show it comes from an allowed origin.
 */
export function crossSiteRefusal(
  c: Context,
  allowedOrigins: readonly string[],
  cookie: boolean,
): string | undefined {
  const origin = c.req.header("origin");
  if (origin !== undefined) {
    if (origin !== "*" && allowedOrigins.includes(origin)) return undefined;
    try {
      const own = c.req.header("host") ?? new URL(c.req.url).host;
      if (new URL(origin).host === own) return undefined;
    } catch {
      // "null" (sandboxed pages, file://) or not a URL: refused below
    }
    return `Origin '${origin.slice(0, 200)}' is not this gateway's`;
  }
  const site = c.req.header("sec-fetch-site");
  if (site === "cross-site" || site === "same-site") return `Sec-Fetch-Site is ${site}`;
  if (cookie && site !== "same-origin") return "a session cookie without Origin or Sec-Fetch-Site";
  return undefined;
}
