/**
 * `GET /api/gateway/stats`: the gateway's own counters (gateway/gateway_metrics.ts)
 * as one small JSON object, for the dashboard's live gateway panel, which
 * would otherwise parse Prometheus text. Totals since the gateway started:
 * a reader takes two samples and divides the differences by the time between
 * them (rates, latency of that interval).
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Registry } from "prom-client";
import { PERMISSIONS } from "../../auth/permissions.ts";
import type { Guard } from "../auth/guard.ts";
import { authorize } from "../auth/http.ts";
import { errorResponses } from "./schemas.ts";

const StatsSchema = z.object({
  at: z.number().int().openapi({ description: "When the sample was taken (ms since the epoch)" }),
  requests: z.number().openapi({ description: "HTTP requests served" }),
  client_errors: z.number().openapi({ description: "Requests answered 4xx" }),
  server_errors: z.number().openapi({ description: "Requests answered 5xx" }),
  latency: z.object({
    bounds: z.array(z.number()).openapi({ description: "Upper bounds of the buckets (s)" }),
    counts: z.array(z.number()).openapi({
      description: "Requests at or under each bound (cumulative), then all of them",
    }),
    sum: z.number().openapi({ description: "Seconds spent serving requests" }),
    count: z.number(),
  }),
  ws_connections: z.number(),
  ws_messages_sent: z.number(),
  refused: z.number().openapi({
    description: "Requests refused by rate limits, credentials or permissions",
  }),
}).openapi("GatewayStats");

const getStats = createRoute({
  method: "get",
  path: "/api/gateway/stats",
  summary: "Totals of this gateway's requests, latency, errors and WebSocket traffic",
  description: "A JSON summary of the Prometheus metrics on /metrics; needs telemetry:read.",
  responses: {
    200: {
      description: "Totals since the gateway started",
      content: { "application/json": { schema: StatsSchema } },
    },
    ...errorResponses(401, 403),
  },
});

type Value = { value: number; labels: Record<string, string | number>; metricName?: string };

async function values(registry: Registry, name: string): Promise<Value[]> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return [];
  return (await metric.get()).values as Value[];
}

const total = (list: Value[]) => list.reduce((sum, one) => sum + one.value, 0);

/** The summary of `registry`'s gateway metrics. */
export async function gatewayStats(registry: Registry): Promise<z.infer<typeof StatsSchema>> {
  const requests = await values(registry, "http_requests_total");
  const status = (one: Value) => Number(one.labels.status);
  const histogram = await values(registry, "http_request_duration_seconds");
  // Buckets of every route added up, per bound.
  const byBound = new Map<string, number>();
  let sum = 0;
  let count = 0;
  for (const one of histogram) {
    if (one.metricName?.endsWith("_bucket")) {
      const le = String(one.labels.le);
      byBound.set(le, (byBound.get(le) ?? 0) + one.value);
    } else if (one.metricName?.endsWith("_sum")) sum += one.value;
    else if (one.metricName?.endsWith("_count")) count += one.value;
  }
  const bounds = [...byBound.keys()].filter((le) => le !== "+Inf").map(Number)
    .sort((a, b) => a - b);
  return {
    at: Date.now(),
    requests: total(requests),
    client_errors: total(requests.filter((one) => status(one) >= 400 && status(one) < 500)),
    server_errors: total(requests.filter((one) => status(one) >= 500)),
    latency: {
      bounds,
      counts: [...bounds.map((b) => byBound.get(String(b)) ?? 0), byBound.get("+Inf") ?? 0],
      sum,
      count,
    },
    ws_connections: total(await values(registry, "ws_connections")),
    ws_messages_sent: total(await values(registry, "ws_messages_sent_total")),
    refused: total(await values(registry, "gateway_rate_limited_total")) +
      total(await values(registry, "gateway_auth_failures_total")) +
      total(await values(registry, "gateway_access_denied_total")),
  };
}

/** Adds `/api/gateway/stats` to `app`. */
export function gatewayStatsRoutes(app: OpenAPIHono, registry: Registry, guard: Guard): void {
  app.openapi(getStats, async (c) => {
    authorize(c, guard, PERMISSIONS.telemetryRead);
    return c.json(await gatewayStats(registry), 200);
  });
}
