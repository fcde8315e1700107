/**
 * `tcp://host:port` endpoints as libzmq writes them, for the ZMTP sockets.
 *
 * @module
 */

/** Host and port of a `tcp://` endpoint. */
export interface TcpAddress {
  hostname: string;
  port: number;
}

/** Parses `tcp://host:port` (`*` = every IPv4 interface, `[v6]` allowed); undefined otherwise. */
export function parseTcpEndpoint(endpoint: string): TcpAddress | undefined {
  const match = /^tcp:\/\/(\[[^\]]+\]|[^:/\[\]]+):(\d+|\*)$/.exec(endpoint);
  if (!match) return undefined;
  const host = match[1]!;
  const port = match[2] === "*" ? 0 : Number(match[2]);
  if (!Number.isInteger(port) || port > 65535) return undefined;
  const hostname = host === "*" ? "0.0.0.0" : host.startsWith("[") ? host.slice(1, -1) : host;
  return { hostname, port };
}

/** The endpoint text of a listening address. */
export function formatTcpEndpoint(address: TcpAddress): string {
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  return `tcp://${host}:${address.port}`;
}
