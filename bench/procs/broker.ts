/**
 * Benchmark child: the plantd-ts broker. Args: [endpoint] [transport: auto|libzmq].
 * Prints `READY <endpoint>`.
 *
 * @module
 */
import { BrokerServer } from "../../broker/server.ts";
import type { TransportChoice } from "../../transport/message_socket.ts";
import { serveUntilParentExits, wireHeartbeatFromEnv } from "./_child.ts";

const server = await BrokerServer.start({
  endpoint: Deno.args[0] ?? "tcp://127.0.0.1:0",
  transport: (Deno.args[1] ?? "auto") as TransportChoice,
  // BENCH_WIRE_HEARTBEAT_MS: ZMTP heartbeats (bench:broker:ab).
  ...wireHeartbeatFromEnv(),
});
await serveUntilParentExits(`READY ${server.endpoint}`, () => server.close());
