/**
 * `main.ts broker`: the Majordomo broker with its health and metrics server,
 * and the pub/sub buses listed in its configuration.
 *
 * @module
 */
import { Registry } from "prom-client";
import { processMetrics } from "../telemetry/process_metrics.ts";
import { BrokerServer } from "../broker/server.ts";
import { BrokerPair } from "../broker/pair.ts";
import { curvePublicKey } from "../transport/curve.ts";
import { pairChecks, pairMetrics } from "../broker/pair_metrics.ts";
import { type BrokerConfig, brokerConfig } from "../config/components.ts";
import { brokerAdminKeys, serverCurve } from "../config/curve.ts";
import { servicePolicyOf } from "../config/service_policy.ts";
import { brokerMetrics, servicePolicyMetrics } from "../broker/broker_metrics.ts";
import { dropLog } from "../broker/broker_drops.ts";
import { busEndpoints, plaintextNetworkEndpoints } from "../config/listeners.ts";
import { metricsAccess } from "../config/metrics_token.ts";
import { endpointLimitCounter, endpointObserver } from "../telemetry/endpoint_metrics.ts";
import { type Check, checkTracker } from "../telemetry/health.ts";
import { logger } from "../telemetry/log.ts";
import { ConfigError } from "../config/load.ts";
import { LogWindow } from "../telemetry/log_window.ts";
import {
  boundBeyondLoopback,
  busSetEndpoints,
  logCurve,
  logPlaintextNetwork,
  plaintextNetworkCheck,
  type RunningBuses,
  startBuses,
} from "./bus.ts";
import { startHealthServer } from "./health_server.ts";
import { wireHeartbeat } from "./wire_heartbeat.ts";
import { watchServicePolicy } from "./service_policy.ts";
import { dlqEvents, isPostgresJournal, openDurable, PairJournal } from "./durable.ts";
import type { DeadLetter } from "../broker/journal.ts";
import type { Running } from "./running.ts";

/** Starts the broker from its resolved configuration. */
export async function startBroker(
  config: BrokerConfig,
  registry: Registry = new Registry(),
): Promise<
  Running & {
    server: BrokerServer;
    /** The broker's side of its pair, when configured (`ha`). */
    pair: BrokerPair | undefined;
    buses: RunningBuses;
    healthPort: number;
    /** The plaintext_network check (allow_plaintext_network), for a host process's /healthz. */
    plaintext: Check[];
  }
> {
  const log = logger("broker");
  if (config.ha && config.durable_services.length > 0 && !isPostgresJournal(config.journal)) {
    // A local journal cannot follow the active broker: a failover would lose what it held.
    throw new ConfigError(
      `broker config: journal: a broker pair (ha) with durable_services needs a journal both brokers share, a postgres:// URL; got '${config.journal}' (docs/ha.md, docs/durability.md)`,
    );
  }
  // Keys are read (and checked) before anything binds: a bad key file is a config error.
  const curve = serverCurve("broker", config);
  const audit = logger("broker", "audit");
  const refusals = new LogWindow();
  const logDrop = dropLog(log.with({ context: "protocol" }));
  const servicePolicy = servicePolicyOf(config, curve !== undefined);
  const adminKeys = brokerAdminKeys(config, curve);
  const access = metricsAccess(brokerConfig, config);
  // Loopback unless secured: refused here, before anything binds.
  const exposed = plaintextNetworkEndpoints(
    brokerConfig,
    [
      { key: "endpoint", endpoint: config.endpoint },
      ...(config.ha ? [{ key: "ha.state_bind", endpoint: config.ha.state_bind }] : []),
      ...busEndpoints(config.buses),
    ],
    curve !== undefined,
    config.allow_plaintext_network,
  );
  processMetrics(registry);
  // The metrics read the broker once it exists; it is created after them.
  const holder: { server?: BrokerServer } = {};
  const metrics = brokerMetrics(registry, () => holder.server?.broker);
  // Dead letters are announced on a bus once the buses run.
  const announce: { publish?: (letter: DeadLetter) => void } = {};
  const onDeadLetter = (letter: DeadLetter) => announce.publish?.(letter);
  // A pair opens its shared journal when it becomes active (docs/ha.md); a lone broker at once.
  const shared = config.ha && config.durable_services.length > 0
    ? new PairJournal(config, registry, onDeadLetter)
    : undefined;
  const durable = shared ? undefined : await openDurable(config, registry, onDeadLetter);
  let pair: Awaited<ReturnType<typeof startPair>> | undefined;
  let server: BrokerServer;
  try {
    pair = config.ha ? await startPair(config, registry, holder, shared) : undefined;
    const votes = pair;
    server = holder.server = await BrokerServer.start({
      ...(votes ? { admitClient: () => votes.admitClient() } : {}),
      endpoint: config.endpoint,
      heartbeatIntervalMs: config.heartbeat_interval_ms,
      heartbeatLiveness: config.heartbeat_liveness,
      requestTimeoutMs: config.request_timeout_ms,
      maxMessageBytes: config.max_message_bytes,
      maxQueuePerService: config.max_queue,
      requeueLost: config.requeue_lost,
      requeueLostServices: config.requeue_lost_services,
      transport: config.mdp_transport,
      wireHeartbeat: wireHeartbeat(config),
      handover: config.router_handover,
      ...(curve ? { curve } : {}),
      ...(servicePolicy ? { servicePolicy } : {}),
      ...(adminKeys ? { adminKeys } : {}),
      onListenerEvent: endpointObserver(registry, logger("broker", "security")),
      maxConnections: config.max_connections,
      maxBufferedOutputBytes: config.max_buffered_output_bytes,
      onLimit: endpointLimitCounter(registry, "broker"),
      ...(durable ? { durable: durable.durable } : {}),
      ...(shared ? { durableServices: config.durable_services } : {}),
    }, {
      ...metrics,
      drop: (reason, from) => {
        metrics.drop?.(reason, from);
        logDrop(reason, from);
      },
      workerJoined: (service, dialect) =>
        logger("broker", "worker", "registration").debug("worker registered", { service, dialect }),
      workerLeft: (service, reason) =>
        logger("broker", "worker", "registration").debug("worker removed", { service, reason }),
      adminRefused: (operation, key) => {
        metrics.adminRefused?.(operation, key);
        audit.warn("{operation} refused: key {key} is not in admin_keys", {
          operation,
          key: key ?? "none (plaintext)",
        });
      },
      workerRefused: (service, reason, key) => {
        metrics.workerRefused?.(service, reason, key);
        // A refused worker retries READY every second or so: one line per 10 s is the trail.
        const repeated = refusals.pass(`${service}\0${reason}\0${key}`);
        if (repeated === undefined) return;
        // The audit trail of who tried to serve what (keys are public, safe to log).
        audit.warn("worker for {service} refused: {reason}", {
          service,
          reason,
          key: key ?? "none (plaintext)",
          ...(repeated ? { repeated } : {}),
        });
      },
    });
  } catch (error) {
    await pair?.close();
    await shared?.close();
    await durable?.close();
    throw error;
  }
  shared?.setBroker(server.broker);
  const reloader = watchServicePolicy(
    config,
    (policy) => server.broker.setServicePolicy(policy),
    servicePolicyMetrics(registry),
  );
  let buses: RunningBuses;
  try {
    buses = await startBuses(config.buses, registry, curve);
  } catch (error) {
    reloader?.close();
    await server.close();
    await pair?.close();
    await shared?.close();
    await durable?.close();
    throw error;
  }
  const events = dlqEvents(config, buses, curve !== undefined);
  announce.publish = events?.publish;
  const started = new Date().toISOString();
  const check = checkTracker();
  const beyond = boundBeyondLoopback(exposed, [
    server.endpoint,
    ...(pair ? [pair.endpoint] : []),
    ...busSetEndpoints(buses.set),
  ]);
  const plaintext = plaintextNetworkCheck(beyond, started);
  const health = startHealthServer(
    "broker",
    config.health_host,
    config.health_port,
    () => [
      check("broker_socket", server.serving, `${server.endpoint} is closed`),
      ...(pair ? pairChecks(pair) : []),
      ...buses.checks(),
      ...plaintext,
      ...(durable ? [durable.check()] : []),
      ...(shared ? [shared.check()] : []),
    ],
    registry,
    access,
  );
  logCurve(log, config.buses.length > 0 ? "broker and bus endpoints" : "broker endpoint", curve);
  if (servicePolicy) {
    log.info("service policy: {keys} keys granted org.plantd.* services", {
      keys: servicePolicy.keys,
      file: config.service_policy_file ?? "none",
    });
  }
  logPlaintextNetwork(log, beyond);
  log.info("broker listening on {endpoint} ({transport})", {
    endpoint: server.endpoint,
    transport: server.transport === "zmtp" ? "ZMTP in TypeScript" : "libzmq",
    health: health.port ? `http://${config.health_host}:${health.port}/healthz` : "off",
  });
  if (pair) {
    log.info("pair: {role} on state channel {endpoint}, peer {peer}: {state}", {
      role: pair.fsm.role,
      endpoint: pair.endpoint,
      peer: pair.peerEndpoint,
      state: pair.fsm.state,
      heartbeat_ms: config.ha!.heartbeat_ms,
    });
  }
  return {
    server,
    pair,
    buses,
    healthPort: health.port,
    plaintext,
    async close() {
      reloader?.close();
      await health.close();
      await events?.close();
      await buses.close();
      await server.close();
      await pair?.close();
      await shared?.close();
      await durable?.close();
      log.info("broker stopped");
    },
  };
}

/**
 * The broker's side of its pair (docs/ha.md). With CURVE on the broker, the
 * state channel uses the broker's key pair, which both brokers of the pair
 * share (clients know one server key), and admits only that key.
 */
async function startPair(
  config: BrokerConfig,
  registry: Registry,
  holder: { server?: BrokerServer },
  journal: PairJournal | undefined,
): Promise<BrokerPair> {
  const ha = config.ha!;
  const log = logger("broker", "pair");
  const curve = serverCurve("broker", config);
  const errors = new LogWindow();
  const metrics = pairMetrics(registry, () => pair);
  const pair: BrokerPair = await BrokerPair.start({
    role: ha.role,
    stateBind: ha.state_bind,
    peerStateEndpoint: ha.peer_state_endpoint,
    heartbeatMs: ha.heartbeat_ms,
    ...(curve
      ? { curve: { secretKey: curve.secretKey, publicKey: curvePublicKey(curve.secretKey) } }
      : {}),
    transport: config.mdp_transport,
    onListenerEvent: endpointObserver(registry, logger("broker", "security")),
  }, {
    ...metrics,
    transition: (transition) => {
      metrics.transition(transition);
      log.info("{from} -> {to}: {reason}", { ...transition });
      // A passive broker routes nothing: what waits in its queues goes back to the clients.
      if (transition.to === "passive") holder.server?.broker.refuseQueued();
      // The shared journal follows the active role: one broker holds its lock at a time.
      if (transition.to === "active") journal?.activate();
      else if (transition.to === "passive") void journal?.deactivate();
    },
    error: (message) => {
      metrics.error(message);
      const repeated = errors.pass(message);
      if (repeated !== undefined) log.error(message, repeated ? { repeated } : {});
    },
    badReport: (reason) => log.warn("dropped a message on the state channel: {reason}", { reason }),
  });
  return pair;
}
