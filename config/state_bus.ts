/**
 * Resolution of the state bus key (keys `state_bus_secret`,
 * `state_bus_secret_file`, else derived from `jwt_secret`) shared by the
 * state service, which signs change events, and the gateway, which verifies
 * them (state/changes.ts).
 *
 * @module
 */
import { createHmac } from "node:crypto";
import { ConfigError } from "./load.ts";

/** What the state bus key is derived from a JWT secret with. */
export const STATE_BUS_KEY_CONTEXT = "plantd state bus v1";

/**
 * The state bus key of a one-secret setup: HMAC-SHA256(jwt_secret, context),
 * so a captured change event says nothing usable about the JWT secret.
 */
export function deriveStateBusKey(jwtSecret: string): Uint8Array {
  return new Uint8Array(createHmac("sha256", jwtSecret).update(STATE_BUS_KEY_CONTEXT).digest());
}

/** The keys a component's configuration may give it from. */
export interface StateBusKeyConfig {
  state_bus_secret?: string | undefined;
  state_bus_secret_file?: string | undefined;
  jwt_secret?: string | undefined;
}

/** Where the key came from, for the start-up log. */
export type StateBusKeySource = "state_bus_secret" | "state_bus_secret_file" | "jwt_secret";

/** The state bus key of `component`, or undefined when nothing gives one. */
export function stateBusKey(
  component: string,
  config: StateBusKeyConfig,
  read: (path: string) => string = Deno.readTextFileSync,
): { key: Uint8Array; source: StateBusKeySource } | undefined {
  const { state_bus_secret: direct, state_bus_secret_file: file } = config;
  if (direct !== undefined && file !== undefined) {
    throw new ConfigError(
      `${component} config: set 'state_bus_secret' or 'state_bus_secret_file', not both`,
    );
  }
  if (file !== undefined) {
    let secret: string;
    try {
      secret = read(file).trim();
    } catch (error) {
      throw new ConfigError(
        `${component} config: cannot read 'state_bus_secret_file' ${file}: ${error}`,
      );
    }
    if (secret.length < 32) {
      throw new ConfigError(
        `${component} config: 'state_bus_secret_file' ${file} must hold at least 32 characters`,
      );
    }
    return { key: new TextEncoder().encode(secret), source: "state_bus_secret_file" };
  }
  if (direct !== undefined) {
    return { key: new TextEncoder().encode(direct), source: "state_bus_secret" };
  }
  if (config.jwt_secret !== undefined) {
    return { key: deriveStateBusKey(config.jwt_secret), source: "jwt_secret" };
  }
  return undefined;
}
