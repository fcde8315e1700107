/**
 * Prometheus metrics of the gateway: HTTP requests and latency per route,
 * WebSocket connections and traffic.
 *
 * @module
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { WsObserver } from "../gateway/ws.ts";

/** The gateway's metrics. */
export interface GatewayMetrics {
  request(method: string, route: string, status: number, seconds: number): void;
  ws: WsObserver;
  /** A request refused by a rate limit. */
  rateLimited?(kind: "ip" | "token"): void;
  /** A credential refused, per reason code. */
  authFailure?(code: string): void;
  /** A request refused for lack of a permission. */
  denied?(): void;
  /** A WebSocket upgrade refused by a connection limit. */
  wsRefused?(reason: "node" | "user"): void;
}

/** Creates the gateway's metrics in `registry`. */
export function gatewayMetrics(registry: Registry): GatewayMetrics {
  const registers = [registry];
  const requests = new Counter({
    name: "http_requests_total",
    help: "HTTP requests served, per method, route and status",
    labelNames: ["method", "route", "status"],
    registers,
  });
  const duration = new Histogram({
    name: "http_request_duration_seconds",
    help: "HTTP request latency, per method and route",
    labelNames: ["method", "route"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers,
  });
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
    help: "Requests refused with 429 by a rate limit, per kind (ip, token)",
    labelNames: ["kind"],
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
  // Label sets are few (methods x routes x statuses): bind each once rather
  // than hashing the labels on every request.
  const counters = new Map<string, { inc(): void }>();
  const timers = new Map<string, { observe(value: number): void }>();
  return {
    request(method, route, status, seconds) {
      const timerKey = `${method} ${route}`;
      const counterKey = `${timerKey} ${status}`;
      let counter = counters.get(counterKey);
      if (!counter) {
        counter = requests.labels({ method, route, status: String(status) });
        counters.set(counterKey, counter);
      }
      let timer = timers.get(timerKey);
      if (!timer) {
        timer = duration.labels({ method, route });
        timers.set(timerKey, timer);
      }
      counter.inc();
      timer.observe(seconds);
    },
    rateLimited: (kind) => rateLimited.inc({ kind }),
    authFailure: (code) => authFailures.inc({ code }),
    denied: () => denials.inc(),
    wsRefused: (reason) => wsRefused.inc({ reason }),
    ws: {
      opened: () => connections.inc(),
      closed: () => connections.dec(),
      sent: (count) => unsent += count,
      slowConsumer: () => slow.inc(),
      protocolError: (code) => errors.inc({ code }),
    },
  };
}
