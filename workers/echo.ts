/**
 * `org.plantd.module.Echo`: body `["echo", part…]` comes back as the parts.
 *
 * @module
 */
import { cachedText, frame } from "../mdp/protocol.ts";
import { type Handler, MdpWorker, type WorkerEvent, type WorkerOptions } from "../mdp/worker.ts";

export const ECHO_SERVICE = "org.plantd.module.Echo";

/** The echo handler; any other operation gets an error frame, not empty frames as in Go. */
export const echoHandler: Handler = (body) => {
  const operation = body[0] ? cachedText(body[0]) : "";
  if (operation === "echo") return body.slice(1);
  return [
    frame(JSON.stringify({ success: false, error: `Invalid operation '${operation}'` })),
  ];
};

/** Starts an echo worker against `endpoint`. */
export function startEchoWorker(
  endpoint: string | readonly string[],
  options: WorkerOptions = {},
  onEvent?: (event: WorkerEvent) => void,
): MdpWorker {
  return new MdpWorker(endpoint, ECHO_SERVICE, echoHandler, options, onEvent);
}
