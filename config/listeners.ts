/**
 * "Loopback unless secured" for the ZeroMQ endpoints a component binds: a
 * plaintext endpoint reachable from the network lets anyone who reaches it
 * act as a client, a worker or a publisher, so it is refused unless CURVE
 * is on or the operator opted out with `allow_plaintext_network`.
 *
 * @module
 */
import { z } from "zod";
import { isLocalEndpoint } from "../transport/loopback.ts";
import type { BusConfig } from "./components.ts";
import { ConfigError } from "./load.ts";

/** The opt-out key of components that bind ZeroMQ endpoints (broker, bus). */
export const plaintextNetworkShape = {
  /**
   * Bind plaintext (no CURVE) endpoints beyond loopback anyway: anyone who
   * reaches them is trusted. Logged at every start and shown on /healthz.
   */
  allow_plaintext_network: z.boolean().default(false),
};

/** A bound endpoint with the configuration key that set it (for messages). */
export interface BoundEndpoint {
  key: string;
  endpoint: string;
}

/** The bound endpoints of configured buses (`>`-prefixed ones connect and are left out). */
export function busEndpoints(buses: readonly BusConfig[]): BoundEndpoint[] {
  return buses.flatMap((bus, i) =>
    (["frontend", "backend", "capture"] as const)
      .filter((side) => bus[side] !== undefined && !bus[side]!.startsWith(">"))
      .map((side) => ({ key: `buses[${i}].${side}`, endpoint: bus[side]! }))
  );
}

/**
 * The endpoints served in plaintext beyond loopback: none when `secured`
 * (CURVE keys set). Without the opt-out any such endpoint is a ConfigError
 * naming the key to set; with it they are returned, for the warning and
 * the health check.
 */
export function plaintextNetworkEndpoints(
  component: { name: string; envPrefix: string },
  endpoints: readonly BoundEndpoint[],
  secured: boolean,
  allowPlaintextNetwork: boolean,
): string[] {
  if (secured) return [];
  const exposed = endpoints.filter(({ endpoint }) => !isLocalEndpoint(endpoint));
  const [first] = exposed;
  if (first && !allowPlaintextNetwork) {
    const { name, envPrefix } = component;
    throw new ConfigError(
      `${name}: ${first.key} ${first.endpoint} is reachable beyond loopback and has no CURVE keys: ` +
        `set curve_secret_key (${envPrefix}_CURVE_SECRET_KEY) or curve_secret_key_file ` +
        `(\`deno task keygen\`), bind 127.0.0.1, or accept plaintext on the network with ` +
        `allow_plaintext_network: true (${envPrefix}_ALLOW_PLAINTEXT_NETWORK)`,
    );
  }
  return exposed.map(({ endpoint }) => endpoint);
}
