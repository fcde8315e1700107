import { collectDefaultMetrics, type Registry } from "prom-client";

/** Registers prom-client's process metrics once per registry (dev shares one registry). */
export function processMetrics(registry: Registry): void {
  if (registry.getSingleMetric("process_cpu_user_seconds_total")) return;
  collectDefaultMetrics({ register: registry });
  // prom-client reads it from VmData, which under V8 counts the reserved, not used, heap
  // (1.2 GB beside 175 MB resident): nodejs_heap_size_used_bytes says what the heap holds.
  registry.removeSingleMetric("process_heap_bytes");
}
