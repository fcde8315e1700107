/**
 * The gateway's Hono app: REST (`/api/state`, `/api/services`), the OpenAPI
 * document, WebSocket `/ws`, health and metrics. It reaches the broker and
 * the buses only over the wire, through the dependencies it is given.
 *
 * @module
 */
import { OpenAPIHono } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import type { Registry } from "prom-client";
import type { MdpClient } from "../mdp/client.ts";
import type { MetricsReader } from "../metrics/store.ts";
import { type Check, healthRoutes } from "../telemetry/health.ts";
import type { GatewayMetrics } from "../telemetry/gateway_metrics.ts";
import type { BusHub } from "./bus_hub.ts";
import type { Call, ServiceDirectory } from "./directory.ts";
import { ApiError, toApiError } from "./errors.ts";
import { metricsRoutes } from "./routes/metrics.ts";
import { servicesRoutes } from "./routes/services.ts";
import { stateRoutes } from "./routes/state.ts";
import { dashboardRoutes } from "./static.ts";
import { StateApi } from "./state_api.ts";
import type { StateCache } from "./state_cache.ts";
import { type WsLimits, WsSession } from "./ws.ts";

/** What the app needs. */
export interface GatewayDeps {
  client: MdpClient;
  directory: ServiceDirectory;
  hub: BusHub;
  registry: Registry;
  metrics: GatewayMetrics;
  checks: () => Check[] | Promise<Check[]>;
  options: GatewayAppOptions;
  /** The metrics store behind GET /api/metrics; without it the route answers 503. */
  metricsStore?: MetricsReader;
  /** Cache of state reads, kept fresh by the state bus; none: every read asks the service. */
  stateCache?: StateCache;
}

/** Limits and policies of the app. */
export interface GatewayAppOptions {
  /** Per-request timeout towards the broker. */
  requestTimeoutMs: number;
  /** Largest request body. */
  maxBodyBytes: number;
  /** Origins allowed to open WebSockets; "*" allows any. Same-host origins are always allowed. */
  allowedOrigins: string[];
  ws: WsLimits;
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
  const app = new OpenAPIHono({
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

  app.use("*", async (c, next) => {
    const started = performance.now();
    await next();
    const route = c.req.routePath === "/*" ? "unmatched" : c.req.routePath;
    metrics.request(c.req.method, route, c.res.status, (performance.now() - started) / 1000);
  });
  app.use(
    "/api/*",
    bodyLimit({
      maxSize: options.maxBodyBytes,
      onError: () => {
        throw new ApiError("PAYLOAD_TOO_LARGE", `Body over ${options.maxBodyBytes} bytes`);
      },
    }),
  );

  app.onError((error, c) => {
    const api = toApiError(error);
    return c.json(api.body(), api.status);
  });
  app.notFound((c) =>
    c.json(new ApiError("NOT_FOUND", `No route for ${c.req.method} ${c.req.path}`).body(), 404)
  );

  stateRoutes(app, new StateApi(call, directory, deps.stateCache));
  servicesRoutes(app, call, directory);
  metricsRoutes(app, deps.metricsStore);
  app.doc31("/api/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "plantd-ts gateway",
      version: "0.1.0",
      description:
        "REST bridge to plantd's Majordomo services. WebSocket protocol: docs/websocket.md",
    },
  });

  app.get("/ws", (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      throw new ApiError("BAD_REQUEST", "/ws expects a WebSocket upgrade");
    }
    if (!originAllowed(c.req.raw, options.allowedOrigins)) {
      throw new ApiError("BAD_REQUEST", "Origin not allowed");
    }
    const { socket, response } = Deno.upgradeWebSocket(c.req.raw);
    const session = new WsSession(socket, deps.hub, client, options.ws, {
      ...metrics.ws,
      closed: () => {
        sessions.delete(session);
        metrics.ws.closed?.();
      },
    });
    sessions.add(session);
    return response;
  });

  app.route("/", healthRoutes(deps.checks, deps.registry));
  app.route("/", dashboardRoutes());
  return app;
}
