/**
 * Benchmark child: the plantd-ts broker. Args: [endpoint] [transport: auto|libzmq].
 * Prints `READY <endpoint>`.
 *
 * @module
 */
import { BrokerServer } from "../../broker/server.ts";
import type { TransportChoice } from "../../transport/message_socket.ts";
import { serveUntilParentExits } from "./_child.ts";

// BENCH_WIRE_HEARTBEAT_MS: ZMTP heartbeats at that interval (timeout and TTL 3x, as the config's).
const ivl = Number(Deno.env.get("BENCH_WIRE_HEARTBEAT_MS") ?? "0");
const server = await BrokerServer.start({
  endpoint: Deno.args[0] ?? "tcp://127.0.0.1:0",
  transport: (Deno.args[1] ?? "auto") as TransportChoice,
  ...(ivl > 0
    ? {
      wireHeartbeat: { heartbeatIvlMs: ivl, heartbeatTimeoutMs: 3 * ivl, heartbeatTtlMs: 3 * ivl },
    }
    : {}),
});
await serveUntilParentExits(`READY ${server.endpoint}`, () => server.close());
