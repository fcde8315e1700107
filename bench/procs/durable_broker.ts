/**
 * Benchmark child: the plantd-ts broker with durable services.
 * Args: endpoint, journal file, synchronous (full|normal), durable services (JSON list).
 * Prints `READY <endpoint>`.
 *
 * @module
 */
import { DurableRequests } from "../../broker/durable.ts";
import { LibsqlJournal } from "../../broker/journal_libsql.ts";
import { BrokerServer } from "../../broker/server.ts";
import { serveUntilParentExits } from "./_child.ts";

const [endpoint, journal, synchronous, services] = Deno.args;
if (!endpoint || !journal || !services) {
  throw new Error("usage: durable_broker.ts <endpoint> <journal> <full|normal> <services json>");
}
const store = await LibsqlJournal.open({
  location: journal,
  synchronous: synchronous === "normal" ? "normal" : "full",
});
const durable = await DurableRequests.open(store, {
  services: JSON.parse(services),
  timeoutMs: 30_000,
});
const server = await BrokerServer.start({ endpoint, durable });
await serveUntilParentExits(`READY ${server.endpoint}`, async () => {
  await server.close();
  await durable.close();
});
