/**
 * The per-process health and metrics HTTP server: `/healthz` in the seed's
 * format (`application/health+json`, 503 when a required check is down),
 * `/livez`, `/readyz` and Prometheus `/metrics`.
 *
 * @module
 */
import { Hono } from "hono";
import type { Registry } from "prom-client";
import { listenFailure } from "../transport/bind.ts";
import { constantTimeEqual } from "../auth/secrets.ts";

/**
 * Who may read `/metrics`: with a `token`, only `Authorization: Bearer <token>`;
 * without one, anyone when `open` (a loopback server), nobody otherwise
 * (403 naming `setting`, where the token is configured).
 */
export interface MetricsGuard {
  token: string | undefined;
  open: boolean;
  setting: string;
}

/** Whether an Authorization header is `Bearer <token>` (compared in constant time). */
export function bearerIs(authorization: string | undefined, token: string): boolean {
  const presented = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "")?.[1];
  return presented !== undefined && constantTimeEqual(presented, token);
}

/** The refusal of a /metrics request `guard` does not admit, or undefined to serve it. */
export function metricsRefusal(
  guard: MetricsGuard,
  authorization: string | undefined,
): Response | undefined {
  if (guard.token === undefined) {
    if (guard.open) return undefined;
    return Response.json({
      error: `/metrics beyond loopback needs a token: set ${guard.setting}`,
    }, { status: 403 });
  }
  if (bearerIs(authorization, guard.token)) return undefined;
  return Response.json({ error: "/metrics needs Authorization: Bearer <metrics_token>" }, {
    status: 401,
    headers: { "www-authenticate": 'Bearer realm="metrics"' },
  });
}

/** One health check result. */
export interface Check {
  name: string;
  status: "UP" | "DOWN";
  lastUpdated: string;
  /** A required check that is DOWN makes the whole process DOWN. @default true */
  required?: boolean;
  /** A short reason, shown when DOWN. */
  output?: string;
}

/** The health document of the seed. */
export interface Health {
  version: string;
  releaseId: string;
  status: "UP" | "DOWN";
  checks: Check[];
}

export const HEALTH_VERSION = "1";
export const RELEASE_ID = "0.1.0";

/**
 * A check builder that remembers when each named check last changed status,
 * so `lastUpdated` says since when it has been UP or DOWN, not when it was read.
 */
export function checkTracker(): (
  name: string,
  up: boolean,
  output?: string,
  required?: boolean,
) => Check {
  const since = new Map<string, { up: boolean; at: string }>();
  return (name, up, output, required = true) => {
    const previous = since.get(name);
    if (!previous || previous.up !== up) since.set(name, { up, at: new Date().toISOString() });
    return {
      name,
      status: up ? "UP" : "DOWN",
      lastUpdated: since.get(name)!.at,
      ...(required ? {} : { required }),
      ...(!up && output ? { output } : {}),
    };
  };
}

/** Builds the health document from check results. */
export function healthOf(checks: Check[]): Health {
  const down = checks.some((c) => c.status === "DOWN" && c.required !== false);
  return { version: HEALTH_VERSION, releaseId: RELEASE_ID, status: down ? "DOWN" : "UP", checks };
}

/**
 * Routes of the health server, mountable in any Hono app (the gateway reuses
 * them, guarding /metrics itself). `/healthz`, `/livez`, `/readyz` are open
 * (probes); `/metrics` is guarded by `metricsGuard` when given.
 */
export function healthRoutes(
  checks: () => Check[] | Promise<Check[]>,
  registry?: Registry,
  metricsGuard?: MetricsGuard,
): Hono {
  const app = new Hono();
  const health = async () => healthOf(await checks());
  app.get("/healthz", async (c) => {
    const body = await health();
    c.header("content-type", "application/health+json");
    c.header("cache-control", "no-store");
    return c.body(JSON.stringify(body), body.status === "UP" ? 200 : 503);
  });
  app.get("/livez", (c) => c.json({ status: "UP" }));
  app.get("/readyz", async (c) => {
    const body = await health();
    return c.json({ status: body.status }, body.status === "UP" ? 200 : 503);
  });
  if (registry) {
    app.get("/metrics", async (c) => {
      const refused = metricsGuard && metricsRefusal(metricsGuard, c.req.header("authorization"));
      if (refused) return refused;
      c.header("content-type", registry.contentType);
      // `?name=a&name=b` reads just those metrics: a poller watching one counter
      // does not make every scrape collect the process metrics too.
      const names = c.req.queries("name");
      if (!names) return c.body(await registry.metrics());
      const known = names.filter((name) => registry.getSingleMetric(name) !== undefined);
      const texts = await Promise.all(known.map((name) => registry.getSingleMetricAsString(name)));
      return c.body(texts.map((text) => text + "\n").join(""));
    });
  }
  // Probes and scrapers read; any other method is answered, not 404.
  const paths = ["/healthz", "/livez", "/readyz", ...(registry ? ["/metrics"] : [])];
  app.on(["POST", "PUT", "PATCH", "DELETE"], paths, (c) =>
    c.json(
      {
        error: {
          code: "METHOD_NOT_ALLOWED",
          message: `${c.req.method} is not allowed on ${c.req.path}: use GET or HEAD`,
        },
      },
      405,
      { Allow: "GET, HEAD" },
    ));
  return app;
}

/** Raised when an HTTP server cannot listen. */
export class ListenError extends Error {
  constructor(what: string, host: string, port: number, reason: string, options?: ErrorOptions) {
    super(`${what}: cannot listen on ${host}:${port}: ${reason}`, options);
    this.name = "ListenError";
  }
}

/** Serves `app` with Deno.serve and turns listen failures into a {@link ListenError}. */
export function serveOrExplain(
  app: { fetch: (request: Request) => Response | Promise<Response> },
  what: string,
  hostname: string,
  port: number,
  tls?: { cert: string; key: string },
): Deno.HttpServer<Deno.NetAddr> {
  try {
    return Deno.serve({ hostname, port, onListen: () => {}, ...tls }, app.fetch);
  } catch (error) {
    throw new ListenError(what, hostname, port, listenFailure(error), { cause: error });
  }
}
