/**
 * Benchmark child: the `org.plantd.module.Echo` worker. Args: endpoint, concurrency, capacity,
 * transport (auto|libzmq).
 * Prints `READY` once its connections are opened (the bench then asks the broker
 * through `mmi.workers` until all of them are registered).
 *
 * @module
 */
import type { TransportChoice } from "../../transport/message_socket.ts";
import { startEchoWorker } from "../../workers/echo.ts";
import { serveUntilParentExits, wireHeartbeatFromEnv } from "./_child.ts";

const endpoint = Deno.args[0];
if (!endpoint) throw new Error("usage: echo_worker.ts <endpoint> [concurrency]");
const concurrency = Number(Deno.args[1] ?? "1");
const capacity = Number(Deno.args[2] ?? "1");
const transport = (Deno.args[3] ?? "auto") as TransportChoice;
const worker = startEchoWorker(endpoint, {
  concurrency,
  capacity,
  transport,
  // BENCH_WIRE_HEARTBEAT_MS: ZMTP heartbeats (bench:broker:ab).
  ...wireHeartbeatFromEnv(),
});
await serveUntilParentExits("READY", () => worker.close());
