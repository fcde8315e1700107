/**
 * The gateway's Hono app: REST (`/api/state`, `/api/services`), the OpenAPI
 * document, WebSocket `/ws`, health and metrics. It reaches the broker and
 * the buses only over the wire, through the dependencies it is given.
 *
 * @module
 */
import { OpenAPIHono } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { fusingRouter } from "./fusing_router.ts";
import type { Registry } from "prom-client";
import type { BrokerClient } from "../mdp/client.ts";
import type { MetricsReader } from "../metrics/store.ts";
import { type Check, healthRoutes } from "../telemetry/health.ts";
import type { GatewayMetrics } from "./gateway_metrics.ts";
import type { Guard } from "./auth/guard.ts";
import { AuthError } from "../auth/tokens.ts";
import { authorizeCall, requestPipeline } from "./auth/http.ts";
import { WsAdmission } from "./auth/ws_admission.ts";
import type { BusHub } from "./bus_hub.ts";
import type { BusOutlet } from "./bus_outlet.ts";
import { busRoutes } from "./routes/buses.ts";
import type { Call, ServiceDirectory } from "../mdp/directory.ts";
import { ApiError, toApiError } from "./errors.ts";
import { logger } from "../telemetry/log.ts";
import { logLimiter } from "../telemetry/log_window.ts";
import { authRoutes } from "./routes/auth.ts";
import { devicesRoutes } from "./routes/devices.ts";
import { dlqRoutes } from "./routes/dlq.ts";
import { gatewayStatsRoutes } from "./routes/gateway_stats.ts";
import { layoutRoutes } from "./routes/layout.ts";
import { eventsRoutes } from "./routes/events.ts";
import { alarmsRoutes } from "./routes/alarms.ts";
import { metricsRoutes } from "./routes/metrics.ts";
import { servicesRoutes } from "./routes/services.ts";
import { stateRoutes } from "./routes/state.ts";
import { SecureHeaders } from "./secure_headers.ts";
import { dashboardRoutes } from "./static.ts";
import { apiDocsRoutes } from "./api_docs.ts";
import { StateClient } from "../state/client.ts";
import type { RateCounters } from "./shared/counters.ts";
import type { SessionStore } from "./shared/sessions.ts";
import type { StateCache } from "./state_read_cache.ts";
import { CLOSE, type WsAuth, type WsLimits, WsSession } from "./ws.ts";

/** What the app needs. */
export interface GatewayDeps {
  /** The broker (an MdpClient; a fake in route tests). */
  client: BrokerClient;
  directory: ServiceDirectory;
  hub: BusHub;
  registry: Registry;
  metrics: GatewayMetrics;
  checks: () => Check[] | Promise<Check[]>;
  options: GatewayAppOptions;
  /** The metrics store behind GET /api/metrics and /api/events; without it they answer 503. */
  metricsStore?: MetricsReader;
  /** Cache of state reads, kept fresh by the state bus; none: every read asks the service. */
  stateCache?: StateCache;
  /** Authentication, authorization and audit. */
  guard: Guard;
  /** Rate-limit counters (shared by replicas through Redis when configured). */
  counters: RateCounters;
  /** Refresh-token sessions of logged-in users. */
  sessions: SessionStore;
  /** Publishing on the buses for clients. */
  outlet: BusOutlet;
}

/** Security policies of the app. */
export interface SecurityOptions {
  accessTtlS: number;
  refreshTtlS: number;
  /** The gateway serves TLS: HSTS and Secure cookies. */
  tls: boolean;
  trustedProxies: string[];
  rateLimitWindowMs: number;
  rateLimitPerIp: number;
  rateLimitPerToken: number;
  /** Open WebSockets on this gateway. */
  wsMaxConnections: number;
  /** Open WebSockets per principal (per address without authentication). */
  wsMaxPerUser: number;
  /** Prometheus `/metrics` needs no token. */
  publicMetrics: boolean;
  /** A bearer secret that also admits `/metrics` (metrics_token). */
  metricsToken?: string | undefined;
  /** Login attempts per minute from one address, whatever the username. @default 20 */
  loginPerIp?: number;
  /** Login attempts per minute for one username. @default 10 */
  loginPerUser?: number;
  /** Seconds a rotated refresh token is forgiven (routes/auth.ts). @default 5 */
  refreshReuseGraceS?: number;
}

/** Limits and policies of the app. */
export interface GatewayAppOptions {
  /** Per-request timeout towards the broker. */
  requestTimeoutMs: number;
  /** Largest request body. */
  maxBodyBytes: number;
  /** Cached state entries whose whole HTTP reply is kept ready (gateway/routes/state.ts). */
  stateCacheMaxReplies?: number;
  /** Origins allowed to open WebSockets; "*" allows any. Same-host origins are always allowed. */
  allowedOrigins: string[];
  ws: WsLimits;
  security: SecurityOptions;
}

function originAllowed(request: Request, allowed: string[]): boolean {
  const origin = request.headers.get("origin");
  if (!origin) return true; // not a browser
  if (allowed.includes("*") || allowed.includes(origin)) return true;
  try {
    return new URL(origin).host === request.headers.get("host");
  } catch {
    return false;
  }
}

/** Builds the app; `sessions` receives every open WebSocket session (for shutdown). */
export function createApp(deps: GatewayDeps, sessions: Set<WsSession> = new Set()): OpenAPIHono {
  const { client, directory, options, metrics } = deps;
  const call: Call = (service, body, timeoutMs) =>
    client.request(service, body, { timeoutMs: timeoutMs ?? options.requestTimeoutMs });
  const router = fusingRouter();
  const app = new OpenAPIHono({
    router,
    defaultHook: (result) => {
      if (!result.success) {
        const issue = result.error.issues[0];
        throw new ApiError(
          "BAD_REQUEST",
          `${issue?.path.join(".") || "request"}: ${issue?.message ?? "invalid"}`,
        );
      }
    },
  });

  const { guard, counters } = deps;
  const security = options.security;
  const log = logger("gateway");
  const logOnce = logLimiter(10_000);
  const errorResponse = (error: Error, c: Context) => {
    const api = toApiError(error);
    if (
      api.code === "INTERNAL" || api.code === "STORAGE_FULL" ||
      api.code === "AUTH_STORE_UNAVAILABLE"
    ) {
      // The client gets a code; the operator needs the cause.
      logOnce(api.code, (suppressed) =>
        log.error("{method} {path}: {code}: {error}", {
          method: c.req.method,
          path: c.req.path,
          code: api.code,
          error: String(error),
          cause: error.cause === undefined ? undefined : String(error.cause),
          suppressed,
        }));
    }
    return c.json(api.body(), api.status, api.headers);
  };
  // Client address, rate limits, credentials, body checks, security headers and
  // metrics: one middleware (gateway/auth/http.ts) in front of every route.
  const headers = new SecureHeaders(security.tls);
  const pipeline = requestPipeline({
    guard,
    counters,
    metrics,
    headers,
    onError: errorResponse,
    trustedProxies: security.trustedProxies,
    allowedOrigins: options.allowedOrigins,
    rateLimitWindowMs: security.rateLimitWindowMs,
    rateLimitPerIp: security.rateLimitPerIp,
    rateLimitPerToken: security.rateLimitPerToken,
    publicMetrics: security.publicMetrics,
    metricsToken: security.metricsToken,
    maxBodyBytes: options.maxBodyBytes,
  });
  // Hono awaits what a middleware returns; its type asks for a promise.
  app.use("*", pipeline as unknown as MiddlewareHandler);
  router.fuse(pipeline, errorResponse);

  app.onError(errorResponse);
  app.notFound((c) =>
    c.json(new ApiError("NOT_FOUND", `No route for ${c.req.method} ${c.req.path}`).body(), 404)
  );

  const stateClient = new StateClient(call, directory, deps.stateCache);
  // Without a read cache every read brings a new entry: no reply is worth keeping.
  stateRoutes(app, stateClient, guard, headers, deps.stateCache ? options.stateCacheMaxReplies : 0);
  layoutRoutes(app, stateClient, guard);
  servicesRoutes(app, call, directory, guard);
  dlqRoutes(app, call, guard);
  alarmsRoutes(app, call, directory, guard);
  metricsRoutes(app, deps.metricsStore, guard);
  devicesRoutes(app, deps.metricsStore, guard);
  gatewayStatsRoutes(app, deps.registry, guard);
  eventsRoutes(app, deps.metricsStore, guard);
  busRoutes(app, deps.hub, deps.outlet, guard);
  authRoutes(app, {
    guard,
    sessions: deps.sessions,
    counters,
    accessTtlS: security.accessTtlS,
    refreshTtlS: security.refreshTtlS,
    secureCookies: security.tls,
    loginPerIp: security.loginPerIp ?? 20,
    loginPerUser: security.loginPerUser ?? 10,
    refreshReuseGraceS: security.refreshReuseGraceS ?? 5,
    loginRefused: (kind) => metrics.rateLimited?.(kind),
  });
  // A revoked principal's open WebSockets close at once: no event after the revocation.
  guard.revocations?.onChange(() => {
    for (const session of [...sessions]) {
      const principal = session.principal;
      if (principal && !guard.stillValid(principal)) {
        session.close(CLOSE.REVOKED, "access revoked");
      }
    }
  });
  app.doc31("/api/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "plantd-ts gateway",
      version: "0.1.0",
      description:
        "REST bridge to plantd's Majordomo services. WebSocket protocol: docs/websocket.md",
    },
  });

  const admission = new WsAdmission(security.wsMaxConnections, security.wsMaxPerUser);
  app.get("/ws", (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      throw new ApiError("BAD_REQUEST", "/ws expects a WebSocket upgrade");
    }
    if (!originAllowed(c.req.raw, options.allowedOrigins)) {
      throw new ApiError("BAD_REQUEST", "Origin not allowed");
    }
    const ip = c.get("clientIp");
    const principal = c.get("principal");
    const known = guard.enabled && principal.id !== "anonymous";
    const first = admission.admit(known ? principal.id : `ip:${ip}`);
    if (typeof first === "string") {
      metrics.wsRefused?.(first);
      throw first === "node"
        ? new ApiError("SERVICE_UNAVAILABLE", "This gateway has no room for more WebSockets")
        : new ApiError("RATE_LIMITED", "Too many WebSockets open for this user or address");
    }
    let ticket = first;
    const auth: WsAuth = {
      required: guard.enabled,
      ...(known ? { principal } : {}),
      authenticate: async (token) => {
        try {
          return await guard.authenticate(token);
        } catch (error) {
          if (error instanceof AuthError) guard.failed(error, ip, "ws auth");
          throw error;
        }
      },
      require: (who, alternatives, target) => guard.require(who, ip, alternatives, target),
      call: (who, service, body) => authorizeCall(guard, who, ip, service, body),
      admit: (who) => {
        const next = admission.rekey(ticket, who.id);
        if (typeof next === "string") {
          metrics.wsRefused?.(next);
          return false;
        }
        ticket = next;
        return true;
      },
      release: () => ticket.release(),
    };
    const { socket, response } = Deno.upgradeWebSocket(c.req.raw);
    const session = new WsSession(
      socket,
      deps.hub,
      client,
      options.ws,
      {
        ...metrics.ws,
        closed: () => {
          sessions.delete(session);
          metrics.ws.closed?.();
        },
      },
      auth,
      deps.outlet,
      directory,
    );
    sessions.add(session);
    return response;
  });

  app.route("/", healthRoutes(deps.checks, deps.registry));
  app.route("/", dashboardRoutes());
  app.route("/", apiDocsRoutes());
  return app;
}
