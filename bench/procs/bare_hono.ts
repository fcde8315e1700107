/**
 * Benchmark child: the ceiling of the gateway benchmark. A bare Hono app on
 * Deno.serve with a constant answer on GET /, and a bare WebSocket server:
 * GET /ws upgrades, and every message of topic prefix `fan` read from the
 * bus backend given (a plain bus Subscriber at its defaults) goes to every
 * open socket as one text frame shaped as the gateway's (docs/websocket.md),
 * so both servers are fed by the same publisher and counted by the same
 * clients. Args: port, bus backend endpoint. Prints `READY <port>`.
 *
 * @module
 */
import { Hono } from "hono";
import { Subscriber } from "../../bus/subscriber.ts";
import { serveUntilParentExits } from "./_child.ts";

const [portText, backend] = Deno.args;
const sockets = new Set<WebSocket>();
const app = new Hono();
app.get("/", (c) => c.text("ok"));
app.get("/ws", (c) => {
  const { socket, response } = Deno.upgradeWebSocket(c.req.raw);
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  return response;
});

const decoder = new TextDecoder();
let subscriber: Subscriber | undefined;
let loop: Promise<void> | undefined;
if (backend) {
  subscriber = new Subscriber(backend, { bus: "event", topics: ["fan"] });
  const feed = subscriber;
  loop = (async () => {
    let n = 0;
    try {
      for await (const message of feed) {
        const frame = JSON.stringify({
          type: "message",
          id: "f",
          offset: `bare:${n++}`,
          bus: "event",
          topic: message.topic,
          form: "frames",
          payload: decoder.decode(message.payload),
          encoding: "text",
        });
        for (const socket of sockets) socket.send(frame);
      }
    } catch {
      // closed
    }
  })();
}

const server = Deno.serve(
  { hostname: "127.0.0.1", port: Number(portText ?? 0), onListen() {} },
  app.fetch,
);
await serveUntilParentExits(`READY ${server.addr.port}`, async () => {
  await subscriber?.close();
  await loop;
  await server.shutdown();
});
