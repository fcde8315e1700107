/**
 * Counters and logs of what the guards of listening sockets report
 * (transport/guard.ts) and the broker's ZMTP ROUTER: peers refused by
 * CURVE/ZAP and connections that ended (a peer that sends a frame over the
 * endpoint's size limit is one of them; the ZMTP ROUTER also says why, which
 * is logged).
 * Shared by every role that listens; registered once per registry.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { Counter, type Registry } from "prom-client";
import type { ListenerEvent } from "../transport/guard.ts";
import { LogWindow } from "./log_window.ts";

const REFUSED = "plantd_curve_refused_total";
const DISCONNECTS = "plantd_endpoint_disconnects_total";

/** The same refusal is logged at most once per this window (a reconnecting peer retries often). */
const LOG_WINDOW_MS = 10_000;

/** Registers (once per registry) the endpoint counters; returns what feeds them and logs. */
export function endpointObserver(
  registry: Registry | undefined,
  log: Logger,
): (event: ListenerEvent) => void {
  const refused = registry
    ? (registry.getSingleMetric(REFUSED) as Counter | undefined) ?? new Counter({
      name: REFUSED,
      help:
        "Peers refused by CURVE on a listening endpoint: key not allowed, no CURVE, bad handshake",
      labelNames: ["endpoint", "reason"],
      registers: [registry],
    })
    : undefined;
  const disconnects = registry
    ? (registry.getSingleMetric(DISCONNECTS) as Counter | undefined) ?? new Counter({
      name: DISCONNECTS,
      help:
        "Connections to a listening endpoint that ended: peer left, handshake refused, or a frame over the endpoint's size limit",
      labelNames: ["endpoint"],
      registers: [registry],
    })
    : undefined;
  const throttle = new LogWindow(LOG_WINDOW_MS);
  return (event) => {
    if (event.type === "disconnected") {
      disconnects?.inc({ endpoint: event.endpoint });
      if (event.reason) logRefusal("{endpoint}: dropped peer: {reason}", event);
      return;
    }
    refused?.inc({ endpoint: event.endpoint, reason: event.reason });
    logRefusal("{endpoint}: refused peer: {reason}", event);
  };

  function logRefusal(
    message: string,
    event: { endpoint: string; reason?: string; address?: string; key?: string },
  ): void {
    // By host: a reconnecting peer comes from a new port each time.
    const host = event.address?.replace(/:\d+$/, "") ?? "";
    const repeated = throttle.pass(`${event.endpoint}\0${event.reason}\0${host}`);
    if (repeated === undefined) return;
    log.warn(message, {
      endpoint: event.endpoint,
      reason: event.reason,
      ...(event.address ? { address: event.address } : {}),
      ...(event.key ? { key: event.key } : {}),
      ...(repeated ? { repeated } : {}),
    });
  }
}

const LIMITS = "plantd_endpoint_limit_refusals_total";

/**
 * Registers (once per registry) the counter of what a listening endpoint's
 * global limits refused: connections beyond `max_connections`, messages
 * dropped beyond `max_buffered_output_bytes`. Returns what feeds it for `endpoint`.
 */
export function endpointLimitCounter(
  registry: Registry | undefined,
  endpoint: string,
): (limit: "connections" | "output") => void {
  if (!registry) return () => {};
  const counter = (registry.getSingleMetric(LIMITS) as Counter | undefined) ?? new Counter({
    name: LIMITS,
    help:
      "Refused at a listening endpoint's global limits: connections beyond max_connections, messages dropped beyond max_buffered_output_bytes",
    labelNames: ["endpoint", "limit"],
    registers: [registry],
  });
  return (limit) => counter.inc({ endpoint, limit });
}
