/**
 * Helpers for tests of a secured system: a shared HS256 secret, tokens with
 * exactly the permissions a test wants, and a system with authentication on
 * in the gateway and the state worker.
 */
import { TokenIssuer } from "../auth/tokens.ts";
import type { BrokerConfig, GatewayConfig, StateConfig } from "../config/components.ts";
import { startSystem, type System } from "./_system.ts";

export const SECRET = "secret-for-tests-only-32-bytes-long!";
const issuer = new TokenIssuer({ secret: SECRET, issuer: "plantd", audience: "plantd" });

/** A token of `sub` holding exactly `perms`, valid for `ttlSeconds`. */
export async function tokenWith(
  perms: string[],
  options: { sub?: string; ttlSeconds?: number; roles?: string[] } = {},
): Promise<string> {
  const sub = options.sub ?? `user:t-${crypto.randomUUID().slice(0, 8)}`;
  return (await issuer.issue(
    { sub, name: sub, roles: options.roles ?? [], perms },
    options.ttlSeconds ?? 300,
  )).token;
}

/** Authorization header of a token. */
export function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

/** The whole system with authentication on (the state worker checks tokens too). */
export async function withSecuredSystem(
  body: (system: System) => Promise<void>,
  overrides: {
    broker?: Partial<BrokerConfig>;
    gateway?: Partial<GatewayConfig>;
    state?: Partial<StateConfig>;
  } = {},
): Promise<void> {
  const system = await startSystem({
    ...(overrides.broker ? { broker: overrides.broker } : {}),
    gateway: { jwt_secret: SECRET, ...overrides.gateway },
    state: { jwt_secret: SECRET, ...overrides.state },
  });
  try {
    await body(system);
  } finally {
    await system.stop();
  }
}

/** An HTTP reply with its JSON body (undefined when empty). */
export interface Reply {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
  headers: Headers;
}

/** `method path` on `url` with a JSON `body`, the reply's body parsed as JSON. */
export async function call(
  url: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const response = await fetch(url + path, {
    method,
    headers: { ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await response.text();
  return {
    status: response.status,
    body: text ? JSON.parse(text) : undefined,
    headers: response.headers,
  };
}
