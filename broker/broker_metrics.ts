/**
 * Prometheus metrics of the broker, fed by its observer interface.
 *
 * @module
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { Broker, BrokerObserver } from "./broker.ts";

const MAX_SERVICE_LABELS = 500;

/** Creates the broker's metrics in `registry` and returns the observer that feeds them. */
export function brokerMetrics(
  registry: Registry,
  broker: () => Broker | undefined,
): BrokerObserver {
  const registers = [registry];
  const requests = new Counter({
    name: "mdp_requests_total",
    help: "Client requests received by the broker, per service",
    labelNames: ["service"],
    registers,
  });
  const replies = new Counter({
    name: "mdp_replies_total",
    help: "Final replies delivered to clients, per service",
    labelNames: ["service"],
    registers,
  });
  const errors = new Counter({
    name: "mdp_errors_total",
    help: "Error replies made by the broker, per service and code",
    labelNames: ["service", "code"],
    registers,
  });
  const drops = new Counter({
    name: "mdp_dropped_messages_total",
    help: "Malformed or unexpected messages dropped by the broker, per reason",
    labelNames: ["reason"],
    registers,
  });
  const refused = new Counter({
    name: "mdp_workers_refused_total",
    help:
      "Workers refused (READY for a service their key is not granted, or reserved) or removed (policy revoked, peer key changed), per reason",
    labelNames: ["reason"],
    registers,
  });
  const adminRefused = new Counter({
    name: "mdp_admin_refused_total",
    help:
      "Dead-letter changes (dlq-replay, dlq-delete, dlq-purge) refused: the key is not in admin_keys",
    labelNames: ["operation"],
    registers,
  });
  const latency = new Histogram({
    name: "mdp_request_duration_seconds",
    help: "Time from a request's arrival at the broker to its final reply",
    labelNames: ["service"],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers,
  });
  new Gauge({
    name: "mdp_workers",
    help: "Workers registered, per service",
    labelNames: ["service"],
    registers,
    collect() {
      this.reset();
      for (const s of broker()?.services() ?? []) this.set({ service: s.name }, s.workers);
    },
  });
  new Gauge({
    name: "mdp_queue_depth",
    help: "Requests waiting for a worker, per service",
    labelNames: ["service"],
    registers,
    collect() {
      this.reset();
      for (const s of broker()?.services() ?? []) this.set({ service: s.name }, s.queued);
    },
  });
  // Service names come from clients: bound the label values a client can create.
  const seen = new Set<string>();
  const label = (service: string): string => {
    if (seen.has(service)) return service;
    if (seen.size >= MAX_SERVICE_LABELS) return "other";
    seen.add(service);
    return service;
  };
  return {
    request: (service) => requests.inc({ service: label(service) }),
    reply: (service, seconds) => {
      replies.inc({ service: label(service) });
      latency.observe({ service: label(service) }, seconds);
    },
    error: (service, code) => errors.inc({ service: label(service), code }),
    drop: (reason) => drops.inc({ reason }),
    workerRefused: (_service, reason) => refused.inc({ reason }),
    adminRefused: (operation) => adminRefused.inc({ operation }),
  };
}

/** Counts reloads of the service policy file; returns the callback that feeds it. */
export function servicePolicyMetrics(registry: Registry): (ok: boolean) => void {
  const reloads = new Counter({
    name: "mdp_service_policy_reloads_total",
    help: "Reloads of the broker's service_policy_file, per outcome (ok, error: old policy kept)",
    labelNames: ["outcome"],
    registers: [registry],
  });
  return (ok) => reloads.inc({ outcome: ok ? "ok" : "error" });
}
