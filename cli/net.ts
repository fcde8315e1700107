/**
 * ZeroMQ endpoints for the command line: checking that a TCP peer listens
 * before talking to it (ZeroMQ's connect never fails, it waits forever), and
 * the default bus endpoints on a host.
 *
 * @module
 */
import { DEFAULT_BUSES } from "../config/components.ts";
import { CliError, EXIT, unreachable } from "./errors.ts";

/** Host and port of a `tcp://host:port` endpoint (`*` and 0.0.0.0 read as loopback). */
export function tcpAddress(endpoint: string): { hostname: string; port: number } | undefined {
  const match = /^[@>]?tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)$/.exec(endpoint);
  if (!match) return undefined;
  let hostname = match[1]!.replace(/^\[|\]$/g, "");
  if (hostname === "*" || hostname === "0.0.0.0") hostname = "127.0.0.1";
  return { hostname, port: Number(match[2]) };
}

/** Checks a ZeroMQ endpoint's syntax; a usage error otherwise. */
export function checkEndpoint(endpoint: string, flag: string): string {
  if (!/^(tcp|ipc|inproc):\/\/.+$/.test(endpoint)) {
    throw new CliError(
      `bad ${flag} '${endpoint}': expected a ZeroMQ endpoint such as tcp://127.0.0.1:9797`,
      "USAGE",
      EXIT.USAGE,
    );
  }
  return endpoint;
}

/**
 * Fails fast with UNREACHABLE when nothing accepts TCP connections at a
 * `tcp://` endpoint. Other transports are not checked.
 */
export async function probe(endpoint: string, what: string, timeoutMs: number): Promise<void> {
  const address = tcpAddress(endpoint);
  if (!address) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const connection = await Promise.race([
      Deno.connect(address),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    connection.close();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const reason = /refused/i.test(message)
      ? "connection refused"
      : /lookup|dns|not known/i.test(message)
      ? "unknown host"
      : message.split("\n")[0]!;
    throw unreachable(what, endpoint, reason);
  } finally {
    clearTimeout(timer);
  }
}

/** The well-known endpoint of a default bus (state, event, metric) on `host`. */
export function defaultBusEndpoint(
  bus: string,
  side: "frontend" | "backend",
  host: string,
): string | undefined {
  const known = DEFAULT_BUSES.find((b) => b.name === bus);
  if (!known) return undefined;
  const port = tcpAddress(known[side])!.port;
  return `tcp://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** The host of the broker endpoint, where the default buses are looked for. */
export function hostOf(endpoint: string | undefined): string {
  return (endpoint && tcpAddress(endpoint)?.hostname) || "127.0.0.1";
}
