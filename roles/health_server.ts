import type { Registry } from "prom-client";
import type { MetricsAccess } from "../config/metrics_token.ts";
import { type Check, healthRoutes, serveOrExplain } from "../telemetry/health.ts";
import { isLoopback } from "../transport/loopback.ts";
import type { Running } from "./running.ts";

/**
 * Starts the process's health server unless `port` is 0. `/metrics` needs
 * `access.token` when one is set, and is refused (403) beyond loopback
 * without one; without `access` it is refused beyond loopback, like that.
 */
export function startHealthServer(
  what: string,
  hostname: string,
  port: number,
  checks: () => Check[] | Promise<Check[]>,
  registry?: Registry,
  access: MetricsAccess = { token: undefined, setting: "metrics_token" },
): Running & { port: number } {
  if (port === 0) return { port: 0, close: () => Promise.resolve() };
  const server = serveOrExplain(
    healthRoutes(checks, registry, { ...access, open: isLoopback(hostname) }),
    `${what} health server`,
    hostname,
    port,
  );
  return { port: server.addr.port, close: () => server.shutdown() };
}
