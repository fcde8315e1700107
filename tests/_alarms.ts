/**
 * The alarms component's settings against a test system (tests/_system.ts):
 * its broker and buses, no health port, fast heartbeats and rule reloads.
 *
 * @module
 */
import { type AlarmsConfig, alarmsConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import type { System } from "./_system.ts";

/** The defaults, wired to `system`, with `overrides` on top. */
export function alarmsSettings(
  system: System,
  overrides: Partial<AlarmsConfig> = {},
): AlarmsConfig {
  return {
    ...loadConfig(alarmsConfig, { args: [], env: {} }),
    log_level: "error",
    broker_endpoint: system.brokerEndpoint,
    metric_bus_endpoint: system.backends.metric!,
    event_bus_endpoint: system.frontends.event!,
    health_port: 0,
    heartbeat_interval_ms: 200,
    heartbeat_liveness: 10,
    rules_reload_ms: 200,
    ...overrides,
  };
}
