/**
 * Broker pairs for tests (docs/ha.md): in this process (startBroker), or as
 * real `main.ts broker` processes that can be SIGKILLed and restarted.
 *
 * @module
 */
import { Registry } from "prom-client";
import { brokerConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { startBroker } from "../roles/broker.ts";
import { connectableEndpoint } from "../roles/running.ts";
import { freePort, spawnWatched, waitFor, type WatchedChild } from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Where the two brokers of a pair listen (fixed ports, so a broker can restart on them). */
export interface PairPorts {
  primary: { endpoint: string; stateBind: string; healthPort: number };
  backup: { endpoint: string; stateBind: string; healthPort: number };
}

/** Free loopback ports for a pair. */
export function pairPorts(): PairPorts {
  const side = () => ({
    endpoint: `tcp://127.0.0.1:${freePort()}`,
    stateBind: `tcp://127.0.0.1:${freePort()}`,
    healthPort: freePort(),
  });
  return { primary: side(), backup: side() };
}

/** The command-line flags of one broker of the pair. */
export function pairArgs(
  ports: PairPorts,
  role: "primary" | "backup",
  heartbeatMs: number,
  extra: string[] = [],
): string[] {
  const self = ports[role];
  const peer = ports[role === "primary" ? "backup" : "primary"];
  return [
    "--endpoint",
    self.endpoint,
    "--health-port",
    String(self.healthPort),
    "--buses",
    "[]",
    "--heartbeat-interval-ms",
    "200",
    "--heartbeat-liveness",
    "10",
    "--ha",
    JSON.stringify({
      role,
      state_bind: self.stateBind,
      peer_state_endpoint: peer.stateBind,
      heartbeat_ms: heartbeatMs,
    }),
    ...extra,
  ];
}

/** One broker of a pair in this process. */
export async function startPairBroker(
  ports: PairPorts,
  role: "primary" | "backup",
  heartbeatMs = 100,
) {
  const started = await startBroker(
    loadConfig(brokerConfig, {
      args: [...pairArgs(ports, role, heartbeatMs), "--log-level", "error"],
      env: {},
    }),
    new Registry(),
  );
  return { ...started, endpoint: connectableEndpoint(started.server.endpoint) };
}

/** The `pair_state` and `pair_peer` checks of a broker's /healthz. */
export async function pairHealth(
  healthPort: number,
): Promise<{ status: number; state: string; peer: string; peerUp: boolean }> {
  const response = await fetch(`http://127.0.0.1:${healthPort}/healthz`);
  const body = await response.json();
  const check = (name: string) =>
    body.checks.find((c: { name: string }) => c.name === name) as {
      status: string;
      output: string;
    };
  return {
    status: response.status,
    state: check("pair_state").output.split(" ")[0]!,
    peer: check("pair_peer").output,
    peerUp: check("pair_peer").status === "UP",
  };
}

/** A `main.ts broker` process of a pair. */
export class BrokerProcess {
  readonly role: "primary" | "backup";
  readonly healthPort: number;
  child: WatchedChild;
  #args: string[];

  constructor(ports: PairPorts, role: "primary" | "backup", heartbeatMs: number) {
    this.role = role;
    this.healthPort = ports[role].healthPort;
    this.#args = pairArgs(ports, role, heartbeatMs, ["--log-level", "info"]);
    this.child = this.#spawn();
  }

  #spawn(): WatchedChild {
    return spawnWatched(
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "main.ts", "broker", ...this.#args],
        cwd: ROOT,
        env: { PLANTD_BROKER_LOG_FORMAT: "json" },
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }),
    );
  }

  /** Its pair state from /healthz, or undefined while it does not answer. */
  async state(): Promise<string | undefined> {
    try {
      return (await pairHealth(this.healthPort)).state;
    } catch {
      return undefined;
    }
  }

  /** Waits until /healthz names `state`. */
  async waitState(state: string, timeoutMs = 30_000): Promise<void> {
    let last: string | undefined;
    await waitFor(async () => (last = await this.state()) === state, {
      timeoutMs,
      intervalMs: 50,
      what: () => `the ${this.role} to be ${state} (is ${last}); stderr: ${this.child.stderr()}`,
    });
  }

  kill(): Promise<Deno.CommandStatus> {
    return this.child.stop("SIGKILL");
  }

  /** Starts it again on the same ports (after {@link kill}). */
  restart(): void {
    this.child = this.#spawn();
  }

  stop(): Promise<Deno.CommandStatus> {
    return this.child.stop("SIGTERM");
  }
}
