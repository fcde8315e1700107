/**
 * Benchmark child: NATS responder that echoes every request on a subject.
 * Args: server, subject. Prints `READY` once the subscription reached the server.
 *
 * @module
 */
import { connect } from "@nats-io/transport-node";
import { serveUntilParentExits } from "./_child.ts";

const [servers, subject] = Deno.args;
if (!servers || !subject) throw new Error("usage: nats_responder.ts <server> <subject>");
const nc = await connect({ servers, timeout: 2000 });
nc.subscribe(subject, {
  callback: (error, msg) => {
    if (!error) msg.respond(msg.data);
  },
});
await nc.flush();
await serveUntilParentExits("READY", () => nc.close());
