/**
 * plantd-ts entry point: `deno run -A main.ts <component> [--flags]`.
 * Resolves configuration, starts the component, stops it on SIGINT/SIGTERM.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  alarmsConfig,
  brokerConfig,
  busConfig,
  echoConfig,
  gatewayConfig,
  metricsConfig,
  stateConfig,
} from "./config/components.ts";
import { ConfigError, configHelp, loadConfig, wantsHelp } from "./config/load.ts";
import { inProcessCurve } from "./config/curve.ts";
import { withGrant } from "./config/service_policy.ts";
import { devCert, userAdd } from "./auth/commands.ts";
import { randomToken } from "./auth/secrets.ts";
import { publicKeyPem } from "./auth/call_credentials.ts";
import { tokenSettingsFrom } from "./auth/tokens.ts";
import { startBroker } from "./roles/broker.ts";
import { keygen, KEYGEN_USAGE } from "./roles/keygen.ts";
import { startBusComponent } from "./roles/bus.ts";
import { startEcho } from "./roles/echo.ts";
import { startGateway } from "./roles/gateway.ts";
import { startMetrics } from "./roles/metrics.ts";
import { startAlarms } from "./roles/alarms.ts";
import { ALARMS_SERVICE } from "./alarms/rules.ts";
import { redactUrl } from "./storage/postgres.ts";
import { startState } from "./roles/state.ts";
import { backupState } from "./state/backup.ts";
import { STATE_SERVICE } from "./state/operations.ts";
import { ECHO_SERVICE } from "./workers/echo.ts";
import { connectableEndpoint, type Running, runningAll } from "./roles/running.ts";
import { Registry } from "prom-client";
import type {
  AlarmsConfig,
  BrokerConfig,
  EchoConfig,
  GatewayConfig,
  MetricsConfig,
  StateConfig,
} from "./config/components.ts";
import { type ConfigLogLevel, type LogFormat, logger, setupLogging } from "./telemetry/log.ts";

const USAGE = `usage: main.ts <component> [--config FILE] [--key value ...]

components:
  dev      broker, buses, echo and state workers, gateway in one process, on embedded defaults
  broker   Majordomo broker (tcp://127.0.0.1:9797) and the pub/sub buses of its config
  bus      pub/sub buses alone: state 11000/11001, event 12000/12001, metric 13000/13001
  echo     org.plantd.module.Echo worker
  state    org.plantd.State key/value service (libSQL, or PostgreSQL for several workers)
  gateway  HTTP/WebSocket gateway (http://127.0.0.1:8080)
  metrics  metrics ingester: metric bus into PostgreSQL/TimescaleDB or libSQL
  alarms   alarm rules on the metric bus, alarms on the event bus, org.plantd.Alarms
  state-backup FILE   consistent copy of the state database while it runs
  user-add --username NAME [--roles admin]   create a gateway user (password: prompt,
                      PLANTD_USER_PASSWORD or a piped line)
  dev-cert [--out data]   self-signed TLS certificate for localhost
  keygen [--out NAME]     new CURVE key pair for the broker, buses or a client
  keygen --jwt --out NAME   Ed25519 key pair for the gateway's tokens (PEM)

Every key of a component's configuration is a flag (--log-level debug), an
environment variable (PLANTD_BROKER_LOG_LEVEL=debug) and a YAML key (log_level).`;

function devFlags(args: string[]): string[] {
  try {
    const { values } = parseArgs({
      args,
      options: { "log-level": { type: "string" }, "log-format": { type: "string" } },
      strict: true,
    });
    return Object.entries(values).flatMap(([flag, value]) => [`--${flag}`, String(value)]);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
}

/**
 * Everything in one process on embedded defaults. The broker's health port
 * serves only the broker's (and its buses') metrics; the gateway's /metrics
 * is the process's one scrape target: the broker's series and everything
 * else's (state, ingester, gateway).
 */
async function startDev(
  broker: BrokerConfig,
  echo: EchoConfig,
  state: StateConfig,
  gateway: GatewayConfig,
  metrics: MetricsConfig,
  alarms: AlarmsConfig,
): Promise<Running> {
  const brokerRegistry = new Registry();
  const parts: Running[] = [];
  try {
    // With broker CURVE keys, the in-process components connect with a key pair of their own.
    const curve = inProcessCurve("broker", broker);
    const curveKeys = curve?.client ?? {};
    // Their key serves the dev system's own services, which the service policy protects.
    const started = await startBroker(
      curve
        ? {
          ...withGrant(curve.server, curve.publicKey, [
            STATE_SERVICE,
            ECHO_SERVICE,
            ALARMS_SERVICE,
          ]),
          // The gateway's /api/dlq changes dead letters with it (checked against dlq:write).
          admin_keys: [...broker.admin_keys, curve.publicKey],
        }
        : broker,
      brokerRegistry,
    );
    parts.push(started);
    // A view holding the broker's metrics (the same objects), where the others register theirs.
    const registry = Registry.merge([brokerRegistry]);
    const brokerEndpoint = connectableEndpoint(started.server.endpoint);
    parts.push(startEcho({ ...echo, ...curveKeys, broker_endpoint: brokerEndpoint }));
    // Embedded default: the state database lives in ./data unless PLANTD_STATE_DB says otherwise.
    const db = Deno.env.get("PLANTD_STATE_DB") ?? "data/plantd-state.db";
    const stateBus = started.buses.set.get("state");
    // Without keys of its own, the state worker checks the gateway's tokens when the gateway does,
    // and its call credentials: signed with jwt_private_key, they verify with its public half.
    const gatewayKey = (await tokenSettingsFrom(gateway))?.privateKey;
    const stateKeys = state.jwt_secret || state.jwt_public_key || state.jwks_url ? {} : {
      jwt_secret: gateway.jwt_secret,
      jwt_public_key: gatewayKey ? publicKeyPem(gatewayKey) : gateway.jwt_public_key,
      jwt_algorithm: gateway.jwt_algorithm,
      jwks_url: gateway.jwks_url,
      jwt_issuer: gateway.jwt_issuer,
      jwt_audience: gateway.jwt_audience,
      jwt_max_lifetime_s: gateway.jwt_max_lifetime_s,
      jwt_clock_skew_s: gateway.jwt_clock_skew_s,
    };
    // Change events are signed and verified with a key made for this run, unless one is configured.
    const configuredKey = [gateway, state].find((c) =>
      c.state_bus_secret || c.state_bus_secret_file
    );
    const stateBusKey = {
      state_bus_secret: configuredKey ? configuredKey.state_bus_secret : randomToken(),
      state_bus_secret_file: configuredKey?.state_bus_secret_file,
    };
    const stateRole = await startState(
      {
        ...state,
        ...stateKeys,
        ...stateBusKey,
        ...curveKeys,
        db,
        broker_endpoint: brokerEndpoint,
        health_port: 0,
        bus_endpoint: stateBus ? connectableEndpoint(stateBus.frontend) : "",
      },
      undefined,
      registry,
    );
    parts.push(stateRole);
    const buses = Object.fromEntries(
      started.buses.set.buses.map((bus) => [bus.name, connectableEndpoint(bus.backend)]),
    );
    // Metrics go to data/plantd-metrics.db unless PLANTD_METRICS_DB or _DATABASE_URL say otherwise.
    const metricsDb = Deno.env.get("PLANTD_METRICS_DB") ?? "data/plantd-metrics.db";
    const metricBus = started.buses.set.get("metric");
    const metricsRole = metricBus
      ? startMetrics(
        {
          ...metrics,
          ...curveKeys,
          db: metricsDb,
          bus_endpoint: connectableEndpoint(metricBus.backend),
          // The event buses of this dev set, where the configured names exist in it.
          event_buses: Object.fromEntries(
            Object.keys(metrics.event_buses).filter((name) => name in buses).map((
              name,
            ) => [name, buses[name]!]),
          ),
          health_port: 0,
        },
        registry,
      )
      : undefined;
    if (metricsRole) parts.push(metricsRole);
    // Alarms read the metric bus and publish on the event bus, next to the ingester.
    const eventBus = started.buses.set.get("event");
    if (metricBus && eventBus) {
      parts.push(startAlarms(
        {
          ...alarms,
          ...curveKeys,
          broker_endpoint: brokerEndpoint,
          metric_bus_endpoint: connectableEndpoint(metricBus.backend),
          event_bus_endpoint: connectableEndpoint(eventBus.frontend),
          health_port: 0,
        },
        registry,
      ));
    }
    const web = await startGateway(
      {
        ...gateway,
        ...curveKeys,
        ...stateBusKey,
        broker_endpoint: brokerEndpoint,
        buses,
        metrics_database_url: metrics.database_url,
        metrics_db: metricsDb,
        publish_buses: Object.fromEntries(
          started.buses.set.buses.filter((bus) => bus.name !== "state").map((
            bus,
          ) => [bus.name, connectableEndpoint(bus.frontend)]),
        ),
      },
      async () => [
        ...(await started.buses.checks()),
        ...started.plaintext,
        ...(metricsRole?.checks() ?? []),
      ],
      registry,
    );
    parts.push(web);
    logger("dev").info("plantd dev system up: gateway {url}, broker {endpoint}", {
      url: web.url,
      endpoint: started.server.endpoint,
      buses: started.buses.set.buses.map((bus) => `${bus.name} ${bus.frontend} -> ${bus.backend}`),
      state: redactUrl(db),
      metrics: metricsRole?.database ?? "off (no metric bus)",
    });
    return runningAll(parts);
  } catch (error) {
    await runningAll(parts).close();
    throw error;
  }
}

/** `main.ts <component> --help`: the component's flags, from its schema where it has one. */
function help(component: string): string | undefined {
  const configs = {
    broker: brokerConfig,
    bus: busConfig,
    echo: echoConfig,
    state: stateConfig,
    gateway: gatewayConfig,
    metrics: metricsConfig,
    alarms: alarmsConfig,
  } as const;
  if (component in configs) {
    const config = configs[component as keyof typeof configs];
    return configHelp(config, `usage: main.ts ${component} [--config FILE] [--key value ...]`);
  }
  switch (component) {
    case "dev":
      return `usage: main.ts dev [--log-level debug|info|warn|error] [--log-format json|pretty]

Broker, buses, echo and state workers, metrics ingester, alarms and gateway in one
process on embedded defaults. Each component reads its own environment
(PLANTD_BROKER_*, PLANTD_GATEWAY_*...): see main.ts <component> --help.`;
    case "state-backup":
      return `usage: main.ts state-backup FILE [--db PATH]

Writes a consistent copy of the state database (VACUUM INTO) while the state
service runs. --db and the other flags are the state service's (main.ts state --help).`;
    case "user-add":
      return `usage: main.ts user-add --username NAME [--roles admin[,role...]] [--auth-db PATH]

Creates a gateway user. The password comes from PLANTD_USER_PASSWORD, the first
line of a pipe, or a prompt.`;
    case "dev-cert":
      return `usage: main.ts dev-cert [--out DIR]

Writes a self-signed TLS certificate and key for localhost into DIR (default data).`;
    case "keygen":
      return KEYGEN_USAGE;
  }
  return undefined;
}

/** Starts a component; one-shot commands return undefined once done. */
async function start(component: string, args: string[]): Promise<Running | undefined> {
  switch (component) {
    case "broker": {
      const config = loadConfig(brokerConfig, { args });
      await setupLogging(config.log_level, config.log_format);
      return await startBroker(config);
    }
    case "bus": {
      const config = loadConfig(busConfig, { args });
      await setupLogging(config.log_level, config.log_format);
      return await startBusComponent(config);
    }
    case "echo": {
      const config = loadConfig(echoConfig, { args });
      await setupLogging(config.log_level, config.log_format);
      return startEcho(config);
    }
    case "state": {
      const config = loadConfig(stateConfig, { args });
      await setupLogging(config.log_level, config.log_format);
      return await startState(config);
    }
    case "gateway": {
      const config = loadConfig(gatewayConfig, { args });
      await setupLogging(config.log_level, config.log_format);
      return await startGateway(config);
    }
    case "metrics": {
      const config = loadConfig(metricsConfig, { args });
      await setupLogging(config.log_level, config.log_format);
      return startMetrics(config);
    }
    case "alarms": {
      const config = loadConfig(alarmsConfig, { args });
      await setupLogging(config.log_level, config.log_format);
      return startAlarms(config);
    }
    case "state-backup": {
      // The positional FILE is the target; the rest are the state config's flags (--db).
      const [target, ...rest] = args;
      if (!target || target.startsWith("--")) {
        throw new ConfigError("usage: main.ts state-backup FILE [--db PATH]");
      }
      const config = loadConfig(stateConfig, { args: rest });
      await backupState(config.db, target);
      console.log(`backup of ${config.db} written to ${target}`);
      return undefined;
    }
    case "user-add":
      await userAdd(args);
      return undefined;
    case "dev-cert":
      await devCert(args);
      return undefined;
    case "keygen":
      keygen(args);
      return undefined;
    case "dev": {
      // Components read their own environment; dev's flags set only what they share.
      const shared = devFlags(args);
      const broker = loadConfig(brokerConfig, { args: shared });
      const echo = loadConfig(echoConfig, { args: shared });
      const state = loadConfig(stateConfig, { args: shared });
      const gateway = loadConfig(gatewayConfig, { args: shared });
      const metrics = loadConfig(metricsConfig, { args: shared });
      const alarms = loadConfig(alarmsConfig, { args: shared });
      await setupLogging(broker.log_level as ConfigLogLevel, broker.log_format as LogFormat);
      return await startDev(broker, echo, state, gateway, metrics, alarms);
    }
    default:
      throw new ConfigError(`unknown component '${component}'\n${USAGE}`);
  }
}

async function main(): Promise<void> {
  const [component, ...args] = Deno.args;
  if (!component || component === "help" || component === "--help" || component === "-h") {
    console.log(USAGE);
    return;
  }
  if (wantsHelp(args)) {
    const text = help(component);
    if (text !== undefined) {
      console.log(text);
      return;
    }
  }
  let running: Running | undefined;
  try {
    running = await start(component, args);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    console.error(`plantd ${component}: ${message}`);
    Deno.exit(error instanceof ConfigError ? 2 : 1);
  }
  if (!running) return;
  const started = running;
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await started.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}

if (import.meta.main) await main();
