/**
 * The ZMTP heartbeat options of a component's Majordomo sockets, from its
 * `zmtp_heartbeat_*` keys (config/components.ts).
 *
 * @module
 */
import type { HeartbeatOptions } from "../transport/heartbeat.ts";

/** The `zmtp_heartbeat_*` keys a component has. */
export interface WireHeartbeatConfig {
  zmtp_heartbeat_ivl_ms: number;
  zmtp_heartbeat_timeout_ms: number;
  zmtp_heartbeat_ttl_ms: number;
}

/** Socket options from the keys (an interval of 0 leaves heartbeats off). */
export function wireHeartbeat(config: WireHeartbeatConfig): HeartbeatOptions {
  if (config.zmtp_heartbeat_ivl_ms === 0) return { heartbeatTtlMs: config.zmtp_heartbeat_ttl_ms };
  return {
    heartbeatIvlMs: config.zmtp_heartbeat_ivl_ms,
    // Spelled out: libzmq reads a timeout of 0 as "none", the key means "the interval".
    heartbeatTimeoutMs: config.zmtp_heartbeat_timeout_ms || config.zmtp_heartbeat_ivl_ms,
    heartbeatTtlMs: config.zmtp_heartbeat_ttl_ms,
  };
}
