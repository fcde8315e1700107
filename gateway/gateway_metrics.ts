/**
 * Prometheus metrics of the gateway: HTTP requests and latency per route,
 * WebSocket connections and traffic.
 *
 * @module
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { WsObserver } from "./ws.ts";

/** The gateway's metrics. */
export interface GatewayMetrics {
  request(method: string, route: string, status: number, seconds: number): void;
  /** Queued audit events dropped: the queue was full while the auth database failed. */
  auditDropped?(count: number): void;
  ws: WsObserver;
  /** A request refused by a rate limit. */
  rateLimited?(kind: "ip" | "token" | "login_ip" | "login_user" | "login_busy"): void;
  /** A credential refused, per reason code. */
  authFailure?(code: string): void;
  /** A request refused for lack of a permission. */
  denied?(): void;
  /** A WebSocket upgrade refused by a connection limit. */
  wsRefused?(reason: "node" | "user"): void;
  /** A bus message dropped at ingress (gateway/state_bus_gate.ts), per bus and reason. */
  busRejected?(bus: string, reason: string): void;
}

/** Requests of one method and route. */
interface RequestSeries {
  labels: { method: string; route: string };
  /** Requests per status not yet added to the counter. */
  statuses: Map<number, { unsent: number }>;
  latency: LatencySeries;
}

/** One label set of a {@link LatencyHistogram}. */
class LatencySeries {
  readonly labels: Record<string, string>;
  /** Observations per bucket (not cumulative); the last one is above every bound. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  readonly #bounds: readonly number[];

  constructor(labels: Record<string, string>, bounds: readonly number[]) {
    this.labels = labels;
    this.#bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

/**
 * A histogram read by prom-client's registry like its own (same text and JSON:
 * gateway/gateway_metrics_test.ts compares them), whose series are bound once
 * and observed without hashing labels.
 */
export class LatencyHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  readonly #series = new Map<string, LatencySeries>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly bounds: readonly number[],
    /** The label names every series has (prom-client metrics expose them too). */
    readonly labelNames: readonly string[],
  ) {}

  /** The series of `labels` (bind it once, observe it often). */
  series(labels: Record<string, string>): LatencySeries {
    const key = JSON.stringify(Object.entries(labels).sort());
    let one = this.#series.get(key);
    if (!one) this.#series.set(key, one = new LatencySeries(labels, this.bounds));
    return one;
  }

  getForPromString() {
    const bucket = `${this.name}_bucket`;
    const values: {
      labels: Record<string, string | number>;
      sharedLabels: Record<string, string>;
      value: number;
      metricName: string;
      exemplar?: null;
    }[] = [];
    for (const one of this.#series.values()) {
      const sharedLabels = one.labels;
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += one.counts[i]!;
        values.push({
          labels: { le },
          sharedLabels,
          value: cumulative,
          metricName: bucket,
          exemplar: null,
        });
      });
      values.push({
        labels: { le: "+Inf" },
        sharedLabels,
        value: one.count,
        metricName: bucket,
        exemplar: null,
      });
      values.push({ labels: {}, sharedLabels, value: one.sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels, value: one.count, metricName: `${this.name}_count` });
    }
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      values,
      aggregator: this.aggregator,
    };
  }

  get() {
    const data = this.getForPromString();
    return {
      ...data,
      values: data.values.map(({ sharedLabels, labels, ...rest }) => ({
        ...rest,
        labels: { ...labels, ...sharedLabels },
      })),
    };
  }

  reset(): void {
    for (const one of this.#series.values()) {
      one.counts.fill(0);
      one.sum = 0;
      one.count = 0;
    }
  }
}

/** Creates the gateway's metrics in `registry`. */
export function gatewayMetrics(registry: Registry): GatewayMetrics {
  const registers = [registry];
  // Per request: plain numbers, found through maps of the (interned) method and
  // route strings; prom-client's observe and inc hashed their labels each time,
  // a large share of a cached read. Counts reach the counter when it is read.
  const series = new Map<string, Map<string, RequestSeries>>();
  new Counter({
    name: "http_requests_total",
    help: "HTTP requests served, per method, route and status",
    labelNames: ["method", "route", "status"],
    registers,
    collect() {
      for (const byRoute of series.values()) {
        for (const one of byRoute.values()) {
          for (const [status, count] of one.statuses) {
            if (count.unsent === 0) continue;
            this.inc({ ...one.labels, status: String(status) }, count.unsent);
            count.unsent = 0;
          }
        }
      }
    },
  });
  const duration = new LatencyHistogram(
    "http_request_duration_seconds",
    "HTTP request latency, per method and route",
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    ["method", "route"],
  );
  registry.registerMetric(duration as unknown as Parameters<Registry["registerMetric"]>[0]);
  const connections = new Gauge({
    name: "ws_connections",
    help: "Open WebSocket connections",
    registers,
  });
  // Counted in a plain number on the hot path and added to the counter on scrape.
  let unsent = 0;
  new Counter({
    name: "ws_messages_sent_total",
    help: "Messages sent to WebSocket clients",
    registers,
    collect() {
      this.inc(unsent);
      unsent = 0;
    },
  });
  const slow = new Counter({
    name: "ws_slow_consumer_disconnects_total",
    help: "WebSockets closed because they did not read fast enough (close code 4008)",
    registers,
  });
  const errors = new Counter({
    name: "ws_protocol_errors_total",
    help: "Error messages sent to WebSocket clients, per code",
    labelNames: ["code"],
    registers,
  });
  const rateLimited = new Counter({
    name: "gateway_rate_limited_total",
    help:
      "Requests refused by a rate limit, per kind (ip, token; logins: login_ip, login_user, login_busy = 503, hash pool full)",
    labelNames: ["kind"],
    registers,
  });
  const auditDropped = new Counter({
    name: "gateway_audit_events_dropped_total",
    help:
      "Audit events dropped without being stored: more were waiting for the auth database than the queue holds (audit_queue_max)",
    registers,
  });
  const authFailures = new Counter({
    name: "gateway_auth_failures_total",
    help: "Refused credentials, per reason",
    labelNames: ["code"],
    registers,
  });
  const denials = new Counter({
    name: "gateway_access_denied_total",
    help: "Requests refused for lack of a permission",
    registers,
  });
  const wsRefused = new Counter({
    name: "ws_connections_refused_total",
    help: "WebSocket upgrades refused by a connection limit, per limit (node, user)",
    labelNames: ["reason"],
    registers,
  });
  const busRejected = new Counter({
    name: "gateway_bus_rejected_total",
    help:
      "Bus messages dropped at ingress (forged, unsigned or replayed state changes), per bus and reason",
    labelNames: ["bus", "reason"],
    registers,
  });
  return {
    request(method, route, status, seconds) {
      let byRoute = series.get(method);
      if (!byRoute) series.set(method, byRoute = new Map());
      let one = byRoute.get(route);
      if (!one) {
        one = {
          labels: { method, route },
          statuses: new Map(),
          latency: duration.series({ method, route }),
        };
        byRoute.set(route, one);
      }
      let count = one.statuses.get(status);
      if (!count) one.statuses.set(status, count = { unsent: 0 });
      count.unsent++;
      one.latency.observe(seconds);
    },
    rateLimited: (kind) => rateLimited.inc({ kind }),
    auditDropped: (count) => auditDropped.inc(count),
    authFailure: (code) => authFailures.inc({ code }),
    denied: () => denials.inc(),
    wsRefused: (reason) => wsRefused.inc({ reason }),
    busRejected: (bus, reason) => busRejected.inc({ bus, reason }),
    ws: {
      opened: () => connections.inc(),
      closed: () => connections.dec(),
      sent: (count) => unsent += count,
      slowConsumer: () => slow.inc(),
      protocolError: (code) => errors.inc({ code }),
    },
  };
}
