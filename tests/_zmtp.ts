/**
 * Test helpers for the TypeScript ZMTP sockets: collecting what a socket
 * drains, and raw TCP peers that write ZMTP bytes by hand.
 */
import type { Frames } from "../transport/frames.ts";
import { parseTcpEndpoint } from "../transport/zmtp/endpoint.ts";
import { waitAtMost } from "../support/wait_at_most.ts";

/** Collects a socket's messages (copied); `next()` waits (bounded) for the next one. */
export class Collector {
  #queue: Frames[] = [];
  #waiter: (() => void) | undefined;
  readonly done: Promise<void>;
  constructor(socket: { drain(onMessage: (frames: Frames) => void): Promise<void> }) {
    this.done = socket.drain((frames) => {
      this.#queue.push(frames.map((f) => f.slice()));
      this.#waiter?.();
    });
  }
  async next(ms = 5000): Promise<Frames> {
    const deadline = Date.now() + ms;
    while (this.#queue.length === 0) {
      if (Date.now() > deadline) throw new Error(`no message within ${ms} ms`);
      await waitAtMost(new Promise<void>((resolve) => this.#waiter = resolve), 50);
      this.#waiter = undefined;
    }
    return this.#queue.shift()!;
  }
  get size(): number {
    return this.#queue.length;
  }
}

/** Connects a raw TCP peer to a `tcp://host:port` endpoint. */
export function rawConnect(endpoint: string): Promise<Deno.TcpConn> {
  const address = parseTcpEndpoint(endpoint);
  if (!address) throw new Error(`not a tcp endpoint: ${endpoint}`);
  return Deno.connect(address);
}

export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) {
    written += await conn.write(bytes.subarray(written));
  }
}

/**
 * Reads until `want` bytes are in, the peer closes, or `ms` pass; returns
 * what came and whether the peer closed (EOF or reset).
 */
export async function readFor(
  conn: Deno.Conn,
  want: number,
  ms: number,
): Promise<{ bytes: Uint8Array; closed: boolean }> {
  const out = new Uint8Array(want);
  let got = 0;
  const deadline = Date.now() + ms;
  const buffer = new Uint8Array(64 * 1024);
  while (got < want) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) =>
      timer = setTimeout(resolve, left, "timeout")
    );
    const reading = conn.read(buffer).catch(() => null);
    const n = await Promise.race([reading, timeout]);
    clearTimeout(timer);
    if (n === "timeout") {
      // The read stays pending on the connection: the caller closes it after.
      break;
    }
    if (n === null) return { bytes: out.subarray(0, got), closed: true };
    const take = Math.min(n, want - got);
    out.set(buffer.subarray(0, take), got);
    got += take;
  }
  return { bytes: out.subarray(0, got), closed: false };
}

/**
 * Resolves once the peer closes `conn` (EOF or reset; data read meanwhile is
 * discarded); throws if it has not within `ms` (and closes it then).
 */
export async function untilClosed(conn: Deno.Conn, ms = 5000): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    conn.close();
  }, ms);
  try {
    while ((await conn.read(buffer)) !== null) {
      // discard
    }
  } catch {
    // reset (or closed by the timer)
  } finally {
    clearTimeout(timer);
  }
  if (late) throw new Error(`the peer did not close the connection within ${ms} ms`);
}

/** Open file descriptors of this process (Linux). */
export function openFds(): number {
  let n = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
  return n;
}

/**
 * Whether this machine has a TCP socket from `localPort` to `remotePort` on
 * 127.0.0.1 still held by a process (a socket closed by its owner keeps only
 * kernel states with no inode): the server's end of one connection, released
 * or not. Linux, IPv4.
 */
export function tcpSocketHeld(localPort: number, remotePort: number): boolean {
  const local = `0100007F:${localPort.toString(16).toUpperCase().padStart(4, "0")}`;
  const remote = `0100007F:${remotePort.toString(16).toUpperCase().padStart(4, "0")}`;
  for (const line of Deno.readTextFileSync("/proc/net/tcp").split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[1] === local && fields[2] === remote && fields[9] !== "0") return true;
  }
  return false;
}
