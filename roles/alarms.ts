/**
 * `main.ts alarms`: alarm rules evaluated on the metric bus, alarms published
 * on the event bus and served as `org.plantd.Alarms` (alarms/service.ts).
 *
 * @module
 */
import { Counter, Gauge, Registry } from "prom-client";
import { Publisher } from "../bus/publisher.ts";
import { Subscriber } from "../bus/subscriber.ts";
import { type AlarmsConfig, alarmsConfig } from "../config/components.ts";
import { busClientCurve, clientCurve } from "../config/curve.ts";
import { metricsAccess } from "../config/metrics_token.ts";
import { MdpClient } from "../mdp/client.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { StateClient } from "../state/client.ts";
import { checkTracker } from "../telemetry/health.ts";
import { logger } from "../telemetry/log.ts";
import { processMetrics } from "../telemetry/process_metrics.ts";
import { AlarmEngine } from "../alarms/engine.ts";
import { ALARMS_SCOPE, ALARMS_SERVICE, RULES_SCOPE } from "../alarms/rules.ts";
import { CallSigner, ownScopeRequests } from "../auth/call_credentials.ts";
import type { TokenSettings } from "../auth/tokens.ts";
import { ConfigError } from "../config/load.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { AlarmService } from "../alarms/service.ts";
import { REJECT_REASONS } from "../metrics/point.ts";
import { startHealthServer } from "./health_server.ts";
import type { Running } from "./running.ts";
import { logWorkerEvents, workerOptions } from "./worker_options.ts";
import { wireHeartbeat } from "./wire_heartbeat.ts";

/** A running alarms component. */
export interface RunningAlarms extends Running {
  service: AlarmService;
  worker: MdpWorker;
}

/** Series of the service's counts, read when /metrics is scraped. */
function alarmMetrics(registry: Registry, service: AlarmService): void {
  const registers = [registry];
  const stats = service.stats;
  new Counter({
    name: "alarms_points_evaluated_total",
    help: "Metric points evaluated against the alarm rules",
    registers,
    collect() {
      this.reset();
      this.inc(stats.points);
    },
  });
  new Counter({
    name: "alarms_points_rejected_total",
    help: "Malformed metric points, per reason",
    labelNames: ["reason"],
    registers,
    collect() {
      this.reset();
      for (const reason of REJECT_REASONS) this.inc({ reason }, stats.rejected[reason] ?? 0);
    },
  });
  new Counter({
    name: "alarms_transitions_total",
    help: "Alarms raised, cleared and acknowledged",
    labelNames: ["state"],
    registers,
    collect() {
      this.reset();
      for (const [state, n] of Object.entries(stats.transitions)) this.inc({ state }, n);
    },
  });
  new Gauge({
    name: "alarms_invalid_rules",
    help: "Rules in the state service that are not valid rules (skipped)",
    registers,
    collect() {
      this.set(stats.invalidRules);
    },
  });
  new Counter({
    name: "alarms_bad_requests_total",
    help: "org.plantd.Alarms requests refused as malformed",
    registers,
    collect() {
      this.reset();
      this.inc(stats.badRequests);
    },
  });
  new Gauge({
    name: "alarms",
    help: "Alarms kept, per state",
    labelNames: ["state"],
    registers,
    collect() {
      for (const [state, n] of Object.entries(service.engine.counts())) this.set({ state }, n);
    },
  });
}

/** Who the alarms component's own call credentials name. */
export const ALARMS_CALLER = { id: "service:alarms", name: "alarms" } as const;

/**
 * How state requests are written: with call credentials of
 * {@link ALARMS_CALLER} for its own two scopes when a signing key is set,
 * else with `state_token`, else as they are (a state service without token
 * checks).
 */
export function stateRequests(config: AlarmsConfig, log: ReturnType<typeof logger>) {
  const settings = signingSettings(config);
  if (settings) {
    const signer = new CallSigner(settings, config.call_token_ttl_s);
    return ownScopeRequests(signer, ALARMS_CALLER, STATE_SERVICE, [RULES_SCOPE, ALARMS_SCOPE]);
  }
  const token = config.state_token;
  if (token) {
    return (_operation: string, request: Record<string, unknown>) =>
      JSON.stringify({ ...request, token });
  }
  log.info(
    "state requests carry no credential: a state service that checks tokens refuses them (set jwt_secret, PLANTD_ALARMS_JWT_SECRET, the same as the gateway's)",
  );
  return undefined;
}

/** The signing key of the configuration; a private key given as a path is read here. */
function signingSettings(config: AlarmsConfig): TokenSettings | undefined {
  const base = { issuer: config.jwt_issuer, audience: config.jwt_audience };
  const pem = config.jwt_private_key;
  if (pem !== undefined) {
    let privateKey = pem;
    if (!pem.startsWith("-----BEGIN")) {
      try {
        privateKey = Deno.readTextFileSync(pem);
      } catch (error) {
        throw new ConfigError(`jwt_private_key: cannot read ${pem}: ${(error as Error).message}`);
      }
    }
    return { ...base, privateKey, algorithm: config.jwt_algorithm };
  }
  return config.jwt_secret === undefined ? undefined : { ...base, secret: config.jwt_secret };
}

/** Starts the alarms component from its resolved configuration. */
export function startAlarms(
  config: AlarmsConfig,
  registry: Registry = new Registry(),
): RunningAlarms {
  const log = logger("alarms");
  const access = metricsAccess(alarmsConfig, config);
  const brokerCurve = clientCurve("alarms", config);
  const busCurve = busClientCurve("alarms", config);
  if (!registry.getSingleMetric("process_cpu_seconds_total")) processMetrics(registry);
  const client = new MdpClient(config.broker_endpoint, {
    timeoutMs: config.state_timeout_ms,
    ...(brokerCurve ? { curve: brokerCurve } : {}),
    transport: config.mdp_transport,
    wireHeartbeat: wireHeartbeat(config),
  });
  const state = new StateClient(
    (service, body, timeoutMs) =>
      client.request(service, body, { timeoutMs: timeoutMs ?? config.state_timeout_ms }),
    // Every call waits for the broker instead: the state service may start after us.
    { require: () => Promise.resolve() },
    undefined,
    stateRequests(config, log),
  );
  const subscriber = new Subscriber(config.metric_bus_endpoint, {
    bus: "metric",
    envelopes: config.envelopes,
    receiveHighWaterMark: config.receive_hwm,
    ...(busCurve ? { curve: busCurve } : {}),
  });
  subscriber.subscribe("");
  const events = new Publisher(config.event_bus_endpoint, {
    form: "frames",
    sendHighWaterMark: 10_000,
    ...(busCurve ? { curve: busCurve } : {}),
  });
  const service = new AlarmService({
    source: subscriber,
    events,
    state,
    engine: new AlarmEngine(config.history_limit),
    log,
    reloadMs: config.rules_reload_ms,
  });
  alarmMetrics(registry, service);
  service.start();
  const worker = new MdpWorker(
    config.broker_endpoint,
    ALARMS_SERVICE,
    service.handler,
    workerOptions(config, "alarms"),
    logWorkerEvents(log, "dialect (PLANTD_ALARMS_DIALECT)"),
  );
  const check = checkTracker();
  const health = startHealthServer(
    "alarms",
    config.health_host,
    config.health_port,
    () => [
      check("broker_connection", worker.connected, "not registered at the broker"),
      check(
        "state_loaded",
        service.ready,
        service.stateError ?? "rules and alarms not read from the state service yet",
      ),
    ],
    registry,
    access,
  );
  log.info("alarms reading {metric} and publishing on {event} as {service}", {
    metric: config.metric_bus_endpoint,
    event: config.event_bus_endpoint,
    service: ALARMS_SERVICE,
  });
  return {
    service,
    worker,
    async close() {
      await health.close();
      await worker.close();
      await service.close();
      await events.close();
      await client.close();
      log.info("alarms stopped");
    },
  };
}
