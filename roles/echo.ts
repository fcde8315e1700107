/**
 * `main.ts echo`: the `org.plantd.module.Echo` worker.
 *
 * @module
 */
import type { EchoConfig } from "../config/components.ts";
import { checkTracker } from "../telemetry/health.ts";
import { logger } from "../telemetry/log.ts";
import { ECHO_SERVICE, startEchoWorker } from "../workers/echo.ts";
import { startHealthServer } from "./health_server.ts";
import type { Running } from "./running.ts";
import { logWorkerEvents, workerOptions } from "./worker_options.ts";

/** Starts the echo worker from its resolved configuration. */
export function startEcho(config: EchoConfig): Running {
  const log = logger("echo");
  const worker = startEchoWorker(
    config.broker_endpoint,
    workerOptions(config, "echo"),
    logWorkerEvents(log, "dialect (PLANTD_MODULE_ECHO_DIALECT)"),
  );
  const check = checkTracker();
  const health = startHealthServer("echo", config.health_host, config.health_port, () => [
    check("broker_connection", worker.connected, "not registered at the broker"),
  ]);
  log.info("echo worker for {service} connecting to {endpoint}", {
    service: ECHO_SERVICE,
    endpoint: config.broker_endpoint,
  });
  return {
    async close() {
      await health.close();
      await worker.close();
    },
  };
}
