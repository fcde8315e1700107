/**
 * The poller's thread (a `node:worker_threads` worker, see fd_poller.ts): waits
 * in `epoll_wait` on the edge-triggered ZMQ_FD descriptors the main thread
 * registers, and writes the numbers of those that signaled (int32, host byte
 * order) to its end of a socket pair, which the main thread's event loop reads
 * like any socket. -1 is the once-a-second safety re-check: everyone re-checks.
 * The control descriptor (epoll data -2) tells it to stop.
 *
 * @module
 */
import { workerData } from "node:worker_threads";

const { epollFd, notifyFd, eventBytes, dataOffset } = workerData as {
  epollFd: number;
  notifyFd: number;
  eventBytes: number;
  dataOffset: number;
};

const libc = Deno.dlopen("libc.so.6", {
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  __errno_location: { parameters: [], result: "pointer" },
}).symbols;
const EINTR = 4;
const EAGAIN = 11;

function errno(): number {
  const pointer = libc.__errno_location();
  return pointer ? new Deno.UnsafePointerView(pointer).getInt32() : 0;
}

/**
 * A safety net against a lost edge, not part of the latency path: at least
 * this often everyone re-checks, busy or not (a descriptor that keeps
 * signaling must not keep the net from firing for the others).
 */
const SAFETY_INTERVAL_MS = 1000;
const SAFETY = -1;
const STOP = -2;
const MAX_EVENTS = 256;

const events = new Uint8Array(MAX_EVENTS * eventBytes);
const view = new DataView(events.buffer);
const out = new Int32Array(MAX_EVENTS + 1);
const outBytes = new Uint8Array(out.buffer);

let running = true;
let nextSafety = performance.now() + SAFETY_INTERVAL_MS;
while (running) {
  const wait = Math.max(0, Math.ceil(nextSafety - performance.now()));
  const n = libc.epoll_wait(epollFd, events, MAX_EVENTS, wait);
  if (n < 0) continue; // EINTR
  let count = 0;
  const now = performance.now();
  if (now >= nextSafety) {
    out[count++] = SAFETY;
    nextSafety = now + SAFETY_INTERVAL_MS;
  }
  for (let i = 0; i < n; i++) {
    const fd = view.getInt32(i * eventBytes + dataOffset, true);
    if (fd === STOP) running = false;
    else out[count++] = fd;
  }
  // The main thread's end is read by its event loop; this end blocks when the
  // main thread is too busy to read, and epoll keeps the edges meanwhile.
  let sent = 0;
  const bytes = count * 4;
  while (sent < bytes) {
    const written = Number(
      libc.write(notifyFd, outBytes.subarray(sent, bytes), BigInt(bytes - sent)),
    );
    if (written >= 0) {
      sent += written;
      continue;
    }
    const code = errno();
    if (code === EINTR || code === EAGAIN) continue;
    break; // the main thread closed its end: it is stopping this thread
  }
}
