/**
 * What every worker role takes from its configuration, and how it logs its
 * worker's events.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { clientCurve, type CurveClientConfig } from "../config/curve.ts";
import type { Dialect } from "../mdp/protocol.ts";
import type { WorkerEvent, WorkerOptions } from "../mdp/worker.ts";
import type { TransportChoice } from "../transport/message_socket.ts";
import { wireHeartbeat, type WireHeartbeatConfig } from "./wire_heartbeat.ts";

/** The configuration keys shared by worker components. */
export interface WorkerConfig extends CurveClientConfig, WireHeartbeatConfig {
  concurrency: number;
  capacity: number;
  heartbeat_interval_ms: number;
  heartbeat_liveness: number;
  dialect?: Dialect;
  mdp_transport: TransportChoice;
}

/** Worker options from a component's configuration (`component` names it in key errors). */
export function workerOptions(config: WorkerConfig, component = "worker"): WorkerOptions {
  const curve = clientCurve(component, config);
  return {
    ...(curve ? { curve } : {}),
    concurrency: config.concurrency,
    capacity: config.capacity,
    heartbeatIntervalMs: config.heartbeat_interval_ms,
    heartbeatLiveness: config.heartbeat_liveness,
    ...(config.dialect ? { dialect: config.dialect } : {}),
    transport: config.mdp_transport,
    wireHeartbeat: wireHeartbeat(config),
  };
}

/** Logs reconnects and handler failures; the rest is routine. */
export function logWorkerEvents(log: Logger): (event: WorkerEvent) => void {
  return (event) => {
    if (event.type === "reconnect") log.warn("reconnecting: {reason}", { reason: event.reason });
    if (event.type === "handler-error") log.error("handler failed", { error: String(event.error) });
  };
}
