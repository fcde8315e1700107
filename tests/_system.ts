/**
 * The whole system in the test process on random ports: broker with its
 * buses, state and echo workers, gateway. Every part is closed by stop().
 *
 * @module
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import {
  type BrokerConfig,
  brokerConfig,
  echoConfig,
  type GatewayConfig,
  gatewayConfig,
  type StateConfig,
  stateConfig,
} from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { startBroker } from "../roles/broker.ts";
import { startEcho } from "../roles/echo.ts";
import { startGateway } from "../roles/gateway.ts";
import { connectableEndpoint, type Running } from "../roles/running.ts";
import { startState } from "../roles/state.ts";
import type { ChangeSink } from "../state/changes.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { randomToken } from "../auth/secrets.ts";

/** A running system. */
export interface System {
  url: string;
  brokerEndpoint: string;
  /** The key state service and gateway sign and verify change events with. */
  stateBusSecret: string;
  /** Bus name to frontend (publishers) endpoint. */
  frontends: Record<string, string>;
  /** Bus name to backend (subscribers) endpoint, e.g. for a second gateway. */
  backends: Record<string, string>;
  registry: Registry;
  /** Stops the state worker (to test 503 and health), and starts it again. */
  stopState(): Promise<void>;
  startState(): Promise<void>;
  stopEcho(): Promise<void>;
  stop(): Promise<void>;
}

const random = (name: string) => ({
  name,
  frontend: "tcp://127.0.0.1:*",
  backend: "tcp://127.0.0.1:*",
});

/**
 * Starts everything; `broker`, `gateway` and `state` override configuration
 * keys; `stateChanges` makes what the state service publishes its change
 * events and heartbeats to (given the state bus frontend), instead of its own
 * publisher.
 */
export async function startSystem(
  overrides: {
    broker?: Partial<BrokerConfig>;
    gateway?: Partial<GatewayConfig>;
    state?: Partial<StateConfig>;
    stateChanges?: (frontend: string) => ChangeSink;
  } = {},
): Promise<System> {
  const env = {};
  const dir = await Deno.makeTempDir();
  const registry = new Registry();
  const broker = await startBroker(
    {
      ...loadConfig(brokerConfig, {
        args: [
          "--endpoint",
          "tcp://127.0.0.1:*",
          "--health-port",
          "0",
          "--log-level",
          "error",
          "--heartbeat-interval-ms",
          "200",
          // Ten missed heartbeats (2 s): a loaded CI machine can delay a timer past three.
          "--heartbeat-liveness",
          "10",
        ],
        env: { PLANTD_BROKER_BUSES: JSON.stringify(["state", "event", "metric"].map(random)) },
      }),
      ...overrides.broker,
    },
    registry,
  );
  const endpoint = connectableEndpoint(broker.server.endpoint);
  const frontends = Object.fromEntries(
    broker.buses.set.buses.map((bus) => [bus.name, connectableEndpoint(bus.frontend)]),
  );
  const backends = Object.fromEntries(
    broker.buses.set.buses.map((bus) => [bus.name, connectableEndpoint(bus.backend)]),
  );
  // As in `task dev`: a key per run, shared by the state service and the gateway.
  const stateBusSecret = randomToken();
  const stateSettings: StateConfig = {
    ...loadConfig(stateConfig, { args: [], env }),
    db: `${dir}/state.db`,
    broker_endpoint: endpoint,
    health_port: 0,
    concurrency: 8,
    heartbeat_interval_ms: 200,
    heartbeat_liveness: 10,
    bus_endpoint: frontends.state!,
    state_bus_secret: stateBusSecret,
    ...overrides.state,
  };
  const changes = overrides.stateChanges?.(frontends.state!);
  let state: Running | undefined = await startState(stateSettings, changes, registry);
  let echo: Running | undefined = startEcho({
    ...loadConfig(echoConfig, { args: [], env }),
    broker_endpoint: endpoint,
    heartbeat_interval_ms: 200,
    heartbeat_liveness: 10,
  });
  const gateway = await startGateway(
    {
      ...loadConfig(gatewayConfig, { args: [], env }),
      port: 0,
      broker_endpoint: endpoint,
      buses: backends,
      request_timeout_ms: 2000,
      auth_db: `${dir}/auth.db`,
      publish_buses: { event: frontends.event!, metric: frontends.metric! },
      state_bus_secret: stateBusSecret,
      ...overrides.gateway,
    },
    () => broker.buses.checks(),
    registry,
  );
  return {
    url: gateway.url,
    stateBusSecret,
    brokerEndpoint: endpoint,
    frontends,
    backends,
    registry,
    async stopState() {
      await state?.close();
      state = undefined;
    },
    async startState() {
      // A fresh registry: the first state service's metrics are still registered.
      state ??= await startState(stateSettings, changes, new Registry());
    },
    async stopEcho() {
      await echo?.close();
      echo = undefined;
    },
    async stop() {
      await gateway.close();
      await echo?.close();
      await state?.close();
      await broker.close();
      await sharedPoller().idle();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** PUT `path` on the system's gateway, with `body` as JSON if given; fails the test unless it succeeds. */
export async function put(system: System, path: string, body?: string): Promise<void> {
  const response = await fetch(`${system.url}${path}`, {
    method: "PUT",
    ...(body ? { body, headers: { "content-type": "application/json" } } : {}),
  });
  await response.body?.cancel();
  assert.ok(response.ok, `PUT ${path}: ${response.status}`);
}
