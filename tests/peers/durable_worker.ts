/**
 * A worker for the durable-request tests, in its own process:
 * `deno run -A durable_worker.ts <endpoint> <service>`. It answers
 * `[prefix, body]`, and on the request `poison` it crashes (SIGKILL of
 * itself, no goodbye on the wire) unless FIXED=1, when its prefix is "fixed".
 */
import { MdpWorker } from "../../mdp/worker.ts";

const [endpoint, service] = Deno.args;
if (!endpoint || !service) throw new Error("usage: durable_worker.ts <endpoint> <service>");
const fixed = Deno.env.get("FIXED") === "1";
const decoder = new TextDecoder();

new MdpWorker(endpoint, service, (body) => {
  const request = decoder.decode(body[0]);
  if (request === "poison" && !fixed) Deno.kill(Deno.pid, "SIGKILL");
  return [fixed ? "fixed" : "ok", request];
}, { heartbeatIntervalMs: 200, heartbeatLiveness: 10, reconnectMs: 100 });
