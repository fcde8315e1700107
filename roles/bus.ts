/**
 * Starting configured buses: alone (`main.ts bus`, with its own health and
 * metrics server) or inside another role (the broker and dev start theirs
 * from the broker configuration's `buses` list).
 *
 * @module
 */
import { Registry } from "prom-client";
import { processMetrics } from "../telemetry/process_metrics.ts";
import { type BusOptions, BusSet } from "../bus/bus.ts";
import { type BusComponentConfig, type BusConfig, busConfig } from "../config/components.ts";
import { serverCurve } from "../config/curve.ts";
import { busEndpoints, plaintextNetworkEndpoints } from "../config/listeners.ts";
import { metricsAccess } from "../config/metrics_token.ts";
import type { CurveServerKeys } from "../transport/curve.ts";
import { busMetrics } from "../bus/bus_metrics.ts";
import { endpointObserver } from "../telemetry/endpoint_metrics.ts";
import type { Check } from "../telemetry/health.ts";
import { logger } from "../telemetry/log.ts";
import type { Logger } from "@logtape/logtape";
import { curvePublicKey } from "../transport/curve.ts";
import { isLocalEndpoint } from "../transport/loopback.ts";
import { startHealthServer } from "./health_server.ts";
import type { Running } from "./running.ts";

/** Buses started by a role. */
export interface RunningBuses extends Running {
  set: BusSet;
  /** One health check per bus: UP while its proxy forwards. */
  checks(): Check[];
}

/** The bus options of a configured bus. */
export function busOptions(config: BusConfig): BusOptions {
  return {
    name: config.name,
    frontend: config.frontend,
    backend: config.backend,
    ...(config.capture ? { capture: config.capture } : {}),
    sendHighWaterMark: config.send_hwm,
    receiveHighWaterMark: config.receive_hwm,
    captureHighWaterMark: config.capture_hwm,
    topics: config.topics,
    maxMessageBytes: config.max_message_bytes,
    maxSubscriptionBytes: config.max_subscription_bytes,
  };
}

/** Logs how a listening component's endpoints are secured. */
export function logCurve(log: Logger, what: string, curve: CurveServerKeys | undefined): void {
  if (!curve) {
    log.info("{what}: plaintext (no curve_secret_key)", { what });
  } else if ((curve.allowedKeys ?? []).length === 0) {
    log.warn(
      "{what}: CURVE with no curve_allowed_keys: any client with the server's public key gets in (encryption only)",
      { what, public_key: curvePublicKey(curve.secretKey) },
    );
  } else {
    log.info("{what}: CURVE, {count} client keys allowed", {
      what,
      count: curve.allowedKeys!.length,
      public_key: curvePublicKey(curve.secretKey),
    });
  }
}

/**
 * The endpoints, as bound (ports resolved), still beyond loopback: what the
 * warning and the check name once `exposed` (configured) let some through.
 */
export function boundBeyondLoopback(
  exposed: readonly string[],
  bound: readonly (string | undefined)[],
): string[] {
  if (exposed.length === 0) return [];
  return bound.filter((endpoint): endpoint is string =>
    endpoint !== undefined && !isLocalEndpoint(endpoint)
  );
}

/** Every endpoint of a running bus set: frontends, backends, captures. */
export function busSetEndpoints(set: BusSet): (string | undefined)[] {
  return set.buses.flatMap((bus) => [bus.frontend, bus.backend, bus.capture]);
}

/** Warns, at every start, of plaintext endpoints let beyond loopback (allow_plaintext_network). */
export function logPlaintextNetwork(log: Logger, exposed: readonly string[]): void {
  if (exposed.length === 0) return;
  log.warn(
    "allow_plaintext_network: {endpoints} serve plaintext beyond loopback; anyone who reaches them is trusted",
    { endpoints: exposed.join(", ") },
  );
}

/**
 * The /healthz check of plaintext endpoints let beyond loopback: DOWN but not
 * required, so it shows without making the component DOWN. None when there are none.
 */
export function plaintextNetworkCheck(exposed: readonly string[], since: string): Check[] {
  if (exposed.length === 0) return [];
  return [{
    name: "plaintext_network",
    status: "DOWN",
    required: false,
    lastUpdated: since,
    output: `allow_plaintext_network: plaintext beyond loopback on ${exposed.join(", ")}`,
  }];
}

/**
 * Starts `configs` (all or none) and registers their metrics in `registry`.
 * A port in use is a BindError naming the bus and the endpoint. With `curve`,
 * every bus endpoint requires CURVE.
 */
export async function startBuses(
  configs: readonly BusConfig[],
  registry?: Registry,
  curve?: CurveServerKeys,
): Promise<RunningBuses> {
  const log = logger("bus");
  const onListenerEvent = endpointObserver(registry, logger("bus", "security"));
  const options = configs.map((config) => ({
    ...busOptions(config),
    ...(curve ? { curve } : {}),
    onListenerEvent,
  }));
  const set = await BusSet.start(options, (event) => {
    if (event.type === "exited") {
      log.error("bus {bus}: proxy exited with {code}", {
        bus: event.bus,
        code: event.code,
        restarting: event.restarting,
      });
    } else {
      log.error("bus {bus}: capture counter failed", {
        bus: event.bus,
        error: String(event.error),
      });
    }
  });
  if (registry) busMetrics(registry, () => set.buses);
  const since = new Map(set.buses.map((bus) => [bus.name, new Date().toISOString()]));
  const was = new Map(set.buses.map((bus) => [bus.name, true]));
  for (const bus of set.buses) {
    log.info("bus {bus}: publishers to {frontend}, subscribers to {backend}", {
      bus: bus.name,
      frontend: bus.frontend,
      backend: bus.backend,
      ...(bus.capture ? { capture: bus.capture } : {}),
    });
  }
  return {
    set,
    checks() {
      return set.buses.map((bus) => {
        if (was.get(bus.name) !== bus.running) {
          was.set(bus.name, bus.running);
          since.set(bus.name, new Date().toISOString());
        }
        return {
          name: `bus_${bus.name}`,
          status: bus.running ? "UP" : "DOWN",
          lastUpdated: since.get(bus.name)!,
          ...(bus.running ? {} : { output: "proxy not running" }),
        };
      });
    },
    async close() {
      await set.close();
      if (set.buses.length > 0) log.info("buses stopped");
    },
  };
}

/** `main.ts bus`: the configured buses with a health and metrics server. */
export async function startBusComponent(
  config: BusComponentConfig,
  registry: Registry = new Registry(),
): Promise<RunningBuses & { healthPort: number }> {
  const curve = serverCurve("bus", config);
  const access = metricsAccess(busConfig, config);
  // Loopback unless secured: refused here, before anything binds.
  const exposed = plaintextNetworkEndpoints(
    busConfig,
    busEndpoints(config.buses),
    curve !== undefined,
    config.allow_plaintext_network,
  );
  processMetrics(registry);
  if (config.buses.length > 0) logCurve(logger("bus"), "bus endpoints", curve);
  const buses = await startBuses(config.buses, registry, curve);
  const beyond = boundBeyondLoopback(exposed, busSetEndpoints(buses.set));
  logPlaintextNetwork(logger("bus"), beyond);
  const plaintext = plaintextNetworkCheck(beyond, new Date().toISOString());
  let health: Running & { port: number };
  try {
    health = startHealthServer(
      "bus",
      config.health_host,
      config.health_port,
      () => [...buses.checks(), ...plaintext],
      registry,
      access,
    );
  } catch (error) {
    await buses.close();
    throw error;
  }
  logger("bus").info("{count} buses up", {
    count: buses.set.buses.length,
    health: health.port ? `http://${config.health_host}:${health.port}/healthz` : "off",
  });
  return {
    ...buses,
    healthPort: health.port,
    async close() {
      await health.close();
      await buses.close();
    },
  };
}
