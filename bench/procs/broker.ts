/**
 * Benchmark child: the plantd-ts broker. Args: [endpoint]. Prints `READY <endpoint>`.
 *
 * @module
 */
import { BrokerServer } from "../../broker/server.ts";
import { serveUntilParentExits } from "./_child.ts";

const server = await BrokerServer.start({ endpoint: Deno.args[0] ?? "tcp://127.0.0.1:0" });
await serveUntilParentExits(`READY ${server.endpoint}`, () => server.close());
