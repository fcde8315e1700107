/**
 * Whether an address only accepts connections from this machine: the one
 * test behind "loopback unless secured" for HTTP hosts and ZeroMQ endpoints.
 *
 * @module
 */

/**
 * Whether `host` only accepts connections from this machine: `localhost`,
 * `::1` or 127.0.0.0/8. Anything else (a wildcard, another address, a
 * hostname, an interface name) may be reachable from the network.
 */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "");
  return bare === "localhost" || bare === "::1" || /^127\.\d+\.\d+\.\d+$/.test(bare);
}

/**
 * Whether a ZeroMQ endpoint that is bound (czmq's `@` prefix allowed) is
 * reachable only from this machine: ipc:// and inproc:// always, tcp:// on
 * a loopback host. A connected (`>`) endpoint listens nowhere: also local.
 */
export function isLocalEndpoint(endpoint: string): boolean {
  if (endpoint.startsWith(">")) return true;
  const bare = endpoint.replace(/^@/, "");
  if (/^(ipc|inproc):\/\//.test(bare)) return true;
  const tcp = /^tcp:\/\/(.+):[^:\]]+$/.exec(bare);
  // Anything unparsed is treated as reachable: refusing is the safe mistake.
  return tcp !== null && isLoopback(tcp[1]!);
}
