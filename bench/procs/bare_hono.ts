/**
 * Benchmark child: the ceiling of the gateway benchmark. A bare Hono app on
 * Deno.serve with a constant answer on GET /, and a bare WebSocket broadcast:
 * GET /ws upgrades; POST /broadcast?count=N&bytes=B sends N messages of B
 * bytes to every open socket. Args: [port]. Prints `READY <port>`.
 *
 * @module
 */
import { Hono } from "hono";
import { serveUntilParentExits } from "./_child.ts";

const sockets = new Set<WebSocket>();
const app = new Hono();
app.get("/", (c) => c.text("ok"));
app.get("/ws", (c) => {
  const { socket, response } = Deno.upgradeWebSocket(c.req.raw);
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  return response;
});
app.post("/broadcast", (c) => {
  const count = Number(c.req.query("count") ?? "1");
  const message = "x".repeat(Number(c.req.query("bytes") ?? "16"));
  for (let i = 0; i < count; i++) for (const socket of sockets) socket.send(message);
  return c.text(String(sockets.size));
});

const server = Deno.serve(
  { hostname: "127.0.0.1", port: Number(Deno.args[0] ?? 0), onListen() {} },
  app.fetch,
);
await serveUntilParentExits(`READY ${server.addr.port}`, () => server.shutdown());
