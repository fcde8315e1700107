import { collectDefaultMetrics, type Registry } from "prom-client";

/** Registers prom-client's process metrics once per registry (dev shares one registry). */
export function processMetrics(registry: Registry): void {
  if (registry.getSingleMetric("process_cpu_user_seconds_total")) return;
  collectDefaultMetrics({ register: registry });
}
