/**
 * Benchmark child: N WebSocket clients that count what they receive.
 * Args: [url, count, mode]; mode `gateway` subscribes each socket to bus
 * `event`, prefix `fan` (docs/websocket.md), mode `bare` just listens.
 * Prints `READY <count>` once every socket is open (and subscribed), then
 * `COUNT <messages> <open sockets>` every 100 ms until stdin closes.
 *
 * @module
 */
const [url, countText, mode] = Deno.args;
const count = Number(countText);
let received = 0;
let open = 0;
const sockets: WebSocket[] = [];
const ready: Promise<void>[] = [];

for (let i = 0; i < count; i++) {
  const socket = new WebSocket(url!);
  sockets.push(socket);
  ready.push(
    new Promise<void>((resolve, reject) => {
      socket.onerror = () => reject(new Error("socket failed"));
      socket.onclose = () => open--;
      socket.onopen = () => {
        open++;
        if (mode === "bare") resolve();
        else {socket.send(
            JSON.stringify({ type: "subscribe", id: "f", bus: "event", prefix: "fan" }),
          );}
      };
      socket.onmessage = (event) => {
        const data = event.data as string;
        if (mode === "bare") {
          received++;
          return;
        }
        // Cheap check: the gateway's bus messages start with {"type":"message"
        if (data.startsWith('{"type":"message"')) received++;
        else if (data.includes('"subscribed"')) resolve();
      };
    }),
  );
}
const slow = setTimeout(() => {
  console.error(
    `ws_clients: after 10 s, ${open} of ${count} open; still waiting for subscriptions`,
  );
}, 10_000);
await Promise.all(ready);
clearTimeout(slow);
console.log(`READY ${count}`);
const timer = setInterval(() => console.log(`COUNT ${received} ${open}`), 100);
const buffer = new Uint8Array(64);
try {
  while ((await Deno.stdin.read(buffer)) !== null) { /* wait for EOF */ }
} catch { /* parent gone */ }
clearInterval(timer);
for (const socket of sockets) socket.close();
Deno.exit(0);
