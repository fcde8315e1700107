/**
 * Benchmark child: an echo worker for any service name.
 * Args: endpoint, service, concurrency, capacity. Prints `READY`.
 *
 * @module
 */
import { MdpWorker } from "../../mdp/worker.ts";
import { serveUntilParentExits } from "./_child.ts";

const [endpoint, service, concurrency = "1", capacity = "1"] = Deno.args;
if (!endpoint || !service) {
  throw new Error("usage: service_worker.ts <endpoint> <service> [concurrency] [capacity]");
}
const worker = new MdpWorker(endpoint, service, (body) => body, {
  concurrency: Number(concurrency),
  capacity: Number(capacity),
});
await serveUntilParentExits("READY", () => worker.close());
