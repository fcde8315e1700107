/**
 * Heartbeat options of a message socket, the same for the ZMTP sockets and
 * libzmq's (ZMQ_HEARTBEAT_IVL, ZMQ_HEARTBEAT_TIMEOUT, ZMQ_HEARTBEAT_TTL).
 *
 * @module
 */

/** Heartbeats of a socket's connections, in milliseconds. */
export interface HeartbeatOptions {
  /** ZMQ_HEARTBEAT_IVL: a PING this often. @default 0 (none) */
  heartbeatIvlMs?: number;
  /** ZMQ_HEARTBEAT_TIMEOUT: with PINGs on, a peer silent this long is closed. @default the interval */
  heartbeatTimeoutMs?: number;
  /** ZMQ_HEARTBEAT_TTL: in our PINGs, how long the peer should wait for traffic. @default 0 (none) */
  heartbeatTtlMs?: number;
}

/** Those of `options` that are set (for exactOptionalPropertyTypes). */
export function heartbeatOptions(options: HeartbeatOptions): HeartbeatOptions {
  const out: HeartbeatOptions = {};
  if (options.heartbeatIvlMs !== undefined) out.heartbeatIvlMs = options.heartbeatIvlMs;
  if (options.heartbeatTimeoutMs !== undefined) out.heartbeatTimeoutMs = options.heartbeatTimeoutMs;
  if (options.heartbeatTtlMs !== undefined) out.heartbeatTtlMs = options.heartbeatTtlMs;
  return out;
}
