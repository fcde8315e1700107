/**
 * Prometheus metrics of the state service.
 *
 * @module
 */
import { Counter, Histogram, type Registry } from "prom-client";
import type { OperationsObserver } from "./operations.ts";

/** Metrics fed by the operations observer and the store's commit callback. */
export interface StateMetrics extends OperationsObserver {
  commit(writes: number, seconds: number): void;
  /** Expired idempotency keys deleted. */
  keysPurged(count: number): void;
}

/** Creates the state service's metrics in `registry`. */
export function stateMetrics(registry: Registry): StateMetrics {
  const registers = [registry];
  const operations = new Counter({
    name: "state_operations_total",
    help: "State operations served, per operation and result",
    labelNames: ["operation", "result"],
    registers,
  });
  const bad = new Counter({
    name: "state_bad_requests_total",
    help: "Malformed or refused state requests, per reason",
    labelNames: ["reason"],
    registers,
  });
  const groupSize = new Histogram({
    name: "state_commit_writes",
    help: "Writes grouped into one transaction",
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096],
    registers,
  });
  const commitSeconds = new Histogram({
    name: "state_commit_duration_seconds",
    help: "Time to commit one group of writes",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers,
  });
  const refused = new Counter({
    name: "state_requests_refused_total",
    help: "Requests refused for a missing or bad token or a missing permission, per code",
    labelNames: ["code"],
    registers,
  });
  const idempotent = new Counter({
    name: "state_idempotent_writes_total",
    help:
      "Writes with an idempotency key, per outcome: applied (first use), replayed (answered with the stored reply), reused (refused: the key was used for another request)",
    labelNames: ["outcome"],
    registers,
  });
  const callReused = new Counter({
    name: "state_call_credentials_reused_total",
    help:
      "Call credentials seen again, per use: redelivery (the broker routed the same request again: served, a write with its stored reply), replay (another request with a used credential: refused)",
    labelNames: ["use"],
    registers,
  });
  const purged = new Counter({
    name: "state_idempotency_keys_purged_total",
    help: "Expired idempotency keys deleted from the store",
    registers,
  });
  return {
    refused: (code: string) => refused.inc({ code }),
    idempotent: (outcome) => idempotent.inc({ outcome }),
    keysPurged: (count) => purged.inc(count),
    callReused: (use) => callReused.inc({ use }),
    operation: (operation, ok) => operations.inc({ operation, result: ok ? "ok" : "error" }),
    // Reasons are a fixed set of texts, except parse errors: keep the label bounded.
    badRequest: (reason) => bad.inc({ reason: reason.split(":")[0]!.slice(0, 60) }),
    commit: (writes, seconds) => {
      groupSize.observe(writes);
      commitSeconds.observe(seconds);
    },
  };
}
