/**
 * Prometheus metrics of the gateway's state read cache: hits, misses, entries,
 * flushes per reason, and whether it sees every change event now.
 *
 * @module
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { StateCache } from "./state_read_cache.ts";
import type { LossReason, StateCoherence } from "./state_coherence.ts";

/** Registers the cache's metrics; returns what counts a flush. */
export function stateCacheMetrics(
  registry: Registry,
  cache: StateCache,
  coherence?: StateCoherence,
): (reason: LossReason) => void {
  const registers = [registry];
  // Read from the cache's own counts when scraped: nothing is added per request.
  const counted = { hits: 0, misses: 0 };
  for (
    const [name, field, help] of [
      ["gateway_state_cache_hits_total", "hits", "State reads answered by the read cache"],
      ["gateway_state_cache_misses_total", "misses", "State reads the read cache sent on"],
    ] as const
  ) {
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.inc(cache[field] - counted[field]);
        counted[field] = cache[field];
      },
    });
  }
  new Gauge({
    name: "gateway_state_cache_entries",
    help: "Entries in the state read cache",
    registers,
    collect() {
      this.set(cache.size);
    },
  });
  new Gauge({
    name: "gateway_state_cache_coherent",
    help:
      "1 while the gateway sees every state change event (cached reads live until changed), else 0",
    registers,
    collect() {
      this.set(coherence?.check() ? 1 : 0);
    },
  });
  const flushes = new Counter({
    name: "gateway_state_cache_flushes_total",
    help: "Times the state read cache dropped every entry, per reason (a missed change event)",
    labelNames: ["reason"],
    registers,
  });
  return (reason) => flushes.inc({ reason });
}
