/**
 * Benchmark child: raw ZeroMQ ROUTER echo server, no broker, on the project's
 * transport ({@link NativeSocket}). Every message `identity | frames…` goes
 * back unchanged. Prints `READY <endpoint>`.
 *
 * @module
 */
import { NativeSocket } from "../../transport/native_socket.ts";
import { serveUntilParentExits } from "./_child.ts";

/** libzmq's socket type number (stable ABI). */
const ZMQ_ROUTER = 6;

const socket = new NativeSocket(ZMQ_ROUTER, {
  linger: 0,
  sendHighWaterMark: 100_000,
  receiveHighWaterMark: 100_000,
});
const endpoint = socket.bind(Deno.args[0] ?? "tcp://127.0.0.1:0", "zmq-echo");
const loop = (async () => {
  for await (const message of socket) socket.send(message).catch(() => {});
})();
await serveUntilParentExits(`READY ${endpoint}`, async () => {
  socket.close();
  await loop;
});
