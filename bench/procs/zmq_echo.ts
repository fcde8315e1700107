/**
 * Benchmark child: raw ZeroMQ ROUTER echo server, no broker. Every message
 * `identity | frames…` goes back unchanged. Prints `READY <endpoint>`.
 *
 * @module
 */
import * as zmq from "zeromq";
import { ZmqSocket } from "../../transport/socket.ts";
import { serveUntilParentExits } from "./_child.ts";

const socket = new ZmqSocket(
  new zmq.Router({ linger: 0, sendHighWaterMark: 100_000, receiveHighWaterMark: 100_000 }),
);
await socket.raw.bind(Deno.args[0] ?? "tcp://127.0.0.1:0");
const loop = (async () => {
  for await (const message of socket) socket.send(message).catch(() => {});
})();
await serveUntilParentExits(`READY ${socket.raw.lastEndpoint}`, async () => {
  socket.close();
  await loop;
});
