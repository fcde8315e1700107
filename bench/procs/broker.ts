/**
 * Benchmark child: the plantd-ts broker. Args: [endpoint] [transport: auto|libzmq].
 * Prints `READY <endpoint>`.
 *
 * @module
 */
import { BrokerServer } from "../../broker/server.ts";
import type { TransportChoice } from "../../transport/message_socket.ts";
import { serveUntilParentExits } from "./_child.ts";

const server = await BrokerServer.start({
  endpoint: Deno.args[0] ?? "tcp://127.0.0.1:0",
  transport: (Deno.args[1] ?? "auto") as TransportChoice,
});
await serveUntilParentExits(`READY ${server.endpoint}`, () => server.close());
