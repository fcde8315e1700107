/**
 * Binds the state operations to an `org.plantd.State` Majordomo worker.
 *
 * @module
 */
import { frame } from "../mdp/protocol.ts";
import { MdpWorker, type WorkerEvent, type WorkerOptions } from "../mdp/worker.ts";
import { STATE_SERVICE, type StateOperations } from "./operations.ts";

/**
 * Starts the worker. `concurrency` connections serve requests in parallel, so
 * concurrent writes reach the store together and share a commit.
 */
export function startStateWorker(
  endpoint: string | readonly string[],
  operations: StateOperations,
  options: WorkerOptions = {},
  onEvent?: (event: WorkerEvent) => void,
): MdpWorker {
  return new MdpWorker(
    endpoint,
    STATE_SERVICE,
    async (body, context) => [frame(await operations.handle(body, context.client))],
    { concurrency: 4, capacity: 64, ...options },
    onEvent,
  );
}
