/**
 * Benchmark child: N WebSocket clients on raw TCP connections that count the
 * text frames they receive, without a WebSocket object, message event or
 * string per frame: the receiving side costs next to nothing, so the
 * benchmark measures what the server delivers rather than what one process
 * of 1,000 Deno WebSocket clients can take in (bench/procs/ws_clients.ts).
 *
 * Args as ws_clients.ts: [url, count, mode, batch_ms?]; mode `gateway`
 * subscribes each socket to bus `event`, prefix `fan` (with `batch_ms` when
 * given: frames may then be arrays of messages, docs/websocket.md) and counts
 * the messages in frames that start with `{"type":"message"` or `[` (the
 * occurrences of `{"type":"message"` in them); mode `bare` counts every text
 * frame as one message. Prints `READY <count>` once every socket is open (and
 * subscribed), then `COUNT <messages> <open sockets> <frames with messages>`
 * every 100 ms until stdin closes.
 *
 * @module
 */
import { frameAt } from "../../tests/_ws_frames.ts";
const [url, countText, mode, batchMsText] = Deno.args;
const batchMs = batchMsText ? Number(batchMsText) : undefined;
const count = Number(countText);
const target = new URL(url!);
const encoder = new TextEncoder();
const MESSAGE = encoder.encode('{"type":"message"');
const SUBSCRIBED = encoder.encode('"type":"subscribed"');
let received = 0;
let frames = 0;
const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
let open = 0;
const conns: Deno.Conn[] = [];
/**
 * A socket whose read found little waits for the next tick before reading
 * again, so it takes in many frames per read (with 1,000 sockets each gets a
 * few hundred messages a second): one timer for all sockets. A read of more
 * than SMALL_READ bytes is followed by another at once, so a fast single
 * socket is not held to a kernel receive buffer per tick. Counts are printed
 * every 100 ms as well, so a measurement of seconds is off by a tick at most.
 */
const TICK_MS = 100;
const SMALL_READ = 16 * 1024;
let tick = Promise.withResolvers<void>();
let ticking = false;
function nextTick(): Promise<void> {
  if (!ticking) {
    ticking = true;
    setInterval(() => {
      const current = tick;
      tick = Promise.withResolvers<void>();
      current.resolve();
    }, TICK_MS);
  }
  return tick.promise;
}

/** A masked client text frame (payload under 64 KiB). */
function clientFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const long = payload.length >= 126;
  const head = long ? 4 : 2;
  const frame = new Uint8Array(head + 4 + payload.length);
  frame[0] = 0x80 | opcode;
  if (long) {
    frame[1] = 0x80 | 126;
    frame[2] = payload.length >> 8;
    frame[3] = payload.length & 0xff;
  } else frame[1] = 0x80 | payload.length;
  const mask = crypto.getRandomValues(new Uint8Array(4));
  frame.set(mask, head);
  for (let i = 0; i < payload.length; i++) frame[head + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return frame;
}

function startsWith(data: Uint8Array, at: number, end: number, prefix: Uint8Array): boolean {
  if (end - at < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (data[at + i] !== prefix[i]) return false;
  return true;
}

/** The messages in a frame: occurrences of `{"type":"message"` (a `{` then the rest). */
function messagesIn(data: Uint8Array, at: number, end: number): number {
  let n = 0;
  let i = data.indexOf(OPEN_BRACE, at);
  while (i >= 0 && i < end) {
    if (startsWith(data, i, end, MESSAGE)) {
      n++;
      i += MESSAGE.length;
    } else i++;
    i = data.indexOf(OPEN_BRACE, i);
  }
  return n;
}

function includes(data: Uint8Array, at: number, end: number, needle: Uint8Array): boolean {
  outer: for (let i = at; i + needle.length <= end; i++) {
    for (let j = 0; j < needle.length; j++) if (data[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

async function client(onSubscribed: () => void): Promise<void> {
  const conn = await Deno.connect({ hostname: target.hostname, port: Number(target.port) });
  conns.push(conn);
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  await conn.write(encoder.encode(
    `GET ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  ));
  const chunk = new Uint8Array(256 * 1024);
  let data = new Uint8Array(0);
  let at = 0;
  let upgraded = false;
  let subscribed = false;
  try {
    while (true) {
      const n = await conn.read(chunk);
      if (n === null) return;
      // Append to what is left of an incomplete frame (copy only then).
      if (at < data.length) {
        const joined = new Uint8Array(data.length - at + n);
        joined.set(data.subarray(at));
        joined.set(chunk.subarray(0, n), data.length - at);
        data = joined;
      } else data = chunk.subarray(0, n);
      at = 0;
      if (!upgraded) {
        const text = new TextDecoder().decode(data);
        const end = text.indexOf("\r\n\r\n");
        if (end < 0) {
          data = data.slice();
          continue;
        }
        if (!text.startsWith("HTTP/1.1 101")) throw new Error(text.split("\r\n")[0]);
        upgraded = true;
        open++;
        at = end + 4;
        if (mode === "bare") {
          subscribed = true;
          onSubscribed();
        } else {
          await conn.write(clientFrame(
            1,
            encoder.encode(
              JSON.stringify({
                type: "subscribe",
                id: "f",
                bus: "event",
                prefix: "fan",
                ...(batchMs ? { batch_ms: batchMs } : {}),
              }),
            ),
          ));
        }
      }
      for (let frame = frameAt(data, at); frame; frame = frameAt(data, at)) {
        const { opcode, start, end } = frame;
        at = end;
        if (opcode === 1) {
          if (mode === "bare") {
            received++;
            frames++;
          } else if (data[start] === OPEN_BRACKET || startsWith(data, start, end, MESSAGE)) {
            // The payloads here are plain text: a `{` in a frame starts a message object.
            received += messagesIn(data, start, end);
            frames++;
          } else if (!subscribed && includes(data, start, end, SUBSCRIBED)) {
            subscribed = true;
            onSubscribed();
          }
        } else if (opcode === 9) {
          await conn.write(clientFrame(10, data.slice(start, end)));
        } else if (opcode === 8) return;
      }
      // Keep the incomplete tail: `chunk` is reused by the next read.
      if (at < data.length && data.buffer === chunk.buffer) {
        data = data.slice(at);
        at = 0;
      }
      if (subscribed && n < SMALL_READ) await nextTick();
    }
  } catch {
    // closed
  } finally {
    if (upgraded) open--;
  }
}

const ready: Promise<void>[] = [];
for (let i = 0; i < count; i++) {
  ready.push(
    new Promise<void>((resolve, reject) => {
      client(resolve).catch(reject);
    }),
  );
}
const slow = setTimeout(() => {
  console.error(
    `ws_raw_clients: after 10 s, ${open} of ${count} open; still waiting for subscriptions`,
  );
}, 10_000);
await Promise.all(ready);
clearTimeout(slow);
console.log(`READY ${count}`);
const timer = setInterval(() => console.log(`COUNT ${received} ${open} ${frames}`), 100);
const buffer = new Uint8Array(64);
try {
  while ((await Deno.stdin.read(buffer)) !== null) { /* wait for EOF */ }
} catch { /* parent gone */ }
clearInterval(timer);
for (const conn of conns) {
  try {
    conn.close();
  } catch { /* closed */ }
}
Deno.exit(0);
