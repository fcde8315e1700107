/**
 * Benchmark child: the ceiling of the gateway benchmark. A bare Hono app on
 * Deno.serve with a constant answer on GET / and GET /api/state/:scope/:key
 * (and on GET /api the same with the gateway's API response headers, on GET
 * /api/with-auth-header also reading the Authorization header), and a bare
 * WebSocket server:
 * GET /ws upgrades, and every message of topic prefix `fan` read from the
 * bus backend given (a plain bus Subscriber at its defaults) goes to every
 * open socket as one text frame shaped as the gateway's (docs/websocket.md),
 * so both servers are fed by the same publisher and counted by the same
 * clients. Args: port, bus backend endpoint. Prints `READY <port>`.
 *
 * @module
 */
import { Hono } from "hono";
import { SecureHeaders } from "../../gateway/secure_headers.ts";
import { Subscriber } from "../../bus/subscriber.ts";
import { serveUntilParentExits } from "./_child.ts";

const [portText, backend] = Deno.args;
const sockets = new Set<WebSocket>();
const app = new Hono();
app.get("/", (c) => c.text("ok"));
// The same constant on the gateway's state paths, so a row can drive it with the same wrk
// script (a random key per request) as the gateway's random-key rows.
app.get("/api/state/:scope/:key", (c) => c.text("ok"));
// The same constant with what every cached state read of the gateway carries:
// a JSON body and the gateway's API headers (content type, ETag and the
// security set of gateway/secure_headers.ts), so a row shows what those cost.
const apiHeaders = new SecureHeaders(false).apiHeaders({
  "content-type": "application/json",
  etag: '"1"',
});
const apiBody = JSON.stringify({
  scope: "bench",
  key: "key",
  value: "v",
  revision: 1,
  updated_at: 0,
});
app.get("/api", () => new Response(apiBody, { status: 200, headers: apiHeaders }));
// What Deno and Hono alone cost a cached authenticated read: the Authorization header read (Deno
// then finishes the response on a promise and copies the request's headers) and a copy of a
// reply built once with those headers, as the gateway serves its cached entries.
const apiTemplate = new Response(apiBody, { status: 200, headers: apiHeaders });
app.get("/api/with-auth-header", (c) => {
  c.req.header("authorization");
  return apiTemplate.clone();
});
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
