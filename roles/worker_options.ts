/**
 * What every worker role takes from its configuration, and how it logs its
 * worker's events.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { clientCurve, type CurveClientConfig } from "../config/curve.ts";
import type { WorkerDialect } from "../mdp/dialect_discovery.ts";
import type { WorkerEvent, WorkerOptions } from "../mdp/worker.ts";
import type { TransportChoice } from "../transport/message_socket.ts";
import { wireHeartbeat, type WireHeartbeatConfig } from "./wire_heartbeat.ts";

/** The configuration keys shared by worker components. */
export interface WorkerConfig extends CurveClientConfig, WireHeartbeatConfig {
  concurrency: number;
  capacity: number;
  heartbeat_interval_ms: number;
  heartbeat_liveness: number;
  dialect?: WorkerDialect;
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

/**
 * Logs reconnects, handler failures and what dialect discovery found; the
 * rest is routine. `dialectSetting` names the setting to point operators at.
 */
export function logWorkerEvents(
  log: Logger,
  dialectSetting = "dialect",
): (event: WorkerEvent) => void {
  return (event) => {
    if (event.type === "reconnect") log.warn("reconnecting: {reason}", { reason: event.reason });
    if (event.type === "handler-error") log.error("handler failed", { error: String(event.error) });
    if (event.type !== "dialect") return;
    const fields = { dialect: event.dialect, setting: dialectSetting };
    if (event.outcome === "confirmed") {
      log.info("the broker accepts the {dialect} dialect", fields);
    } else if (event.outcome === "exhausted") {
      // Every dialect was tried on a live connection: a broker that answers none is
      // misconfigured or not Majordomo; the operator must look, so say it loudly.
      log.error(
        "the broker answered a READY in none of the dialects plantd, mdp01, mdp02 " +
          "(tried in turn, each for heartbeat_interval_ms x heartbeat_liveness); " +
          "set {setting} to the broker's dialect; trying again",
        fields,
      );
    } else {
      log.warn("no answer to READY in the {dialect} dialect; trying {next}", {
        ...fields,
        next: event.next,
      });
    }
  };
}
