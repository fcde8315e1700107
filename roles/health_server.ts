import type { Registry } from "prom-client";
import { type Check, healthRoutes, serveOrExplain } from "../telemetry/health.ts";
import type { Running } from "./running.ts";

/** Starts the process's health server unless `port` is 0. */
export function startHealthServer(
  what: string,
  hostname: string,
  port: number,
  checks: () => Check[] | Promise<Check[]>,
  registry?: Registry,
): Running & { port: number } {
  if (port === 0) return { port: 0, close: () => Promise.resolve() };
  const server = serveOrExplain(
    healthRoutes(checks, registry),
    `${what} health server`,
    hostname,
    port,
  );
  return { port: server.addr.port, close: () => server.shutdown() };
}
