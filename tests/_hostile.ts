/**
 * Helpers of the hostile-input tests: raw HTTP and WebSocket clients that can
 * send what fetch and WebSocket refuse to (broken request lines, lying
 * lengths, unmasked or oversized frames), a Prometheus sample reader, and a
 * ledger of acknowledged writes.
 *
 * @module
 */
import { waitFor } from "./_helpers.ts";
import { frameAt } from "./_ws_frames.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A response read off a raw connection. */
export interface RawResponse {
  /** Status code; 0 when the server closed without answering. */
  status: number;
  headers: Headers;
  body: string;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array, from = 0): number {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

const CRLF2 = encoder.encode("\r\n\r\n");

/** Host and port of a base URL such as `http://127.0.0.1:8080`. */
export function hostPort(url: string): { hostname: string; port: number } {
  const parsed = new URL(url);
  return { hostname: parsed.hostname, port: Number(parsed.port) };
}

/**
 * Parses the first HTTP response in `data`, or returns undefined when it is
 * not complete yet (`eof`: the server closed, so whatever came is all).
 */
function parseResponse(data: Uint8Array, eof: boolean): RawResponse | undefined {
  const end = indexOf(data, CRLF2);
  if (end < 0) return eof ? { status: 0, headers: new Headers(), body: "" } : undefined;
  const head = decoder.decode(data.subarray(0, end)).split("\r\n");
  const status = Number(head[0]!.split(" ")[1]);
  const headers = new Headers();
  for (const line of head.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  const rest = data.subarray(end + 4);
  const length = headers.get("content-length");
  if (length !== null) {
    if (rest.length < Number(length)) return eof ? { status, headers, body: "" } : undefined;
    return { status, headers, body: decoder.decode(rest.subarray(0, Number(length))) };
  }
  if (headers.get("transfer-encoding")?.includes("chunked")) {
    let at = 0;
    let body = "";
    while (true) {
      const line = indexOf(rest, encoder.encode("\r\n"), at);
      if (line < 0) return eof ? { status, headers, body } : undefined;
      const size = parseInt(decoder.decode(rest.subarray(at, line)), 16);
      if (size === 0) return { status, headers, body };
      if (rest.length < line + 2 + size + 2) return eof ? { status, headers, body } : undefined;
      body += decoder.decode(rest.subarray(line + 2, line + 2 + size));
      at = line + 2 + size + 2;
    }
  }
  return eof ? { status, headers, body: decoder.decode(rest) } : undefined;
}

/**
 * Sends raw bytes on a new connection and reads the first response (status 0
 * when the server closes without one). The connection is always closed.
 */
export async function rawRequest(
  url: string,
  request: string | Uint8Array | Array<string | Uint8Array>,
  options: { timeoutMs?: number } = {},
): Promise<RawResponse> {
  const conn = await Deno.connect(hostPort(url));
  // A bound for a server that never answers; generous, as a loaded machine is slow.
  const timer = setTimeout(() => conn.close(), options.timeoutMs ?? 60_000);
  try {
    const parts = Array.isArray(request) ? request : [request];
    try {
      for (const part of parts) {
        await conn.write(typeof part === "string" ? encoder.encode(part) : part);
      }
    } catch {
      // The server may answer and close before reading everything: read what it said.
    }
    let data: Uint8Array = new Uint8Array(0);
    const chunk = new Uint8Array(64 * 1024);
    while (true) {
      let n: number | null;
      try {
        n = await conn.read(chunk);
      } catch {
        n = null;
      }
      if (n !== null) data = concat(data, chunk.subarray(0, n));
      const response = parseResponse(data, n === null);
      if (response) return response;
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // closed by the timer
    }
  }
}

/** A request head with `Connection: close`, for {@link rawRequest}. */
export function head(
  method: string,
  path: string,
  url: string,
  headers: Record<string, string> = {},
): string {
  const lines = [`${method} ${path} HTTP/1.1`, `Host: ${new URL(url).host}`, "Connection: close"];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  return lines.join("\r\n") + "\r\n\r\n";
}

/** Reads one sample of a Prometheus metric (`name` or `name{labels}`), 0 when absent. */
export async function metricValue(url: string, series: string): Promise<number> {
  const text = await (await fetch(url + "/metrics")).text();
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return 0;
}

/** Waits until a metric reads `expected`. */
export async function untilMetric(
  url: string,
  series: string,
  expected: number | ((value: number) => boolean),
  what = series,
): Promise<void> {
  let last = NaN;
  const ok = typeof expected === "number" ? (v: number) => v === expected : expected;
  await waitFor(async () => ok(last = await metricValue(url, series)), {
    timeoutMs: 20_000,
    intervalMs: 50,
    what: `${what} (last ${last})`,
  }).catch((error) => {
    throw new Error(`${(error as Error).message}; last value ${last}`);
  });
}

// ------------------------------------------------------------------ WebSocket

/** A WebSocket client frame; clients mask unless `masked` is false. */
export function wsFrame(
  opcode: number,
  payload: string | Uint8Array,
  options: { masked?: boolean; fin?: boolean } = {},
): Uint8Array {
  const data = typeof payload === "string" ? encoder.encode(payload) : payload;
  const masked = options.masked ?? true;
  const first = ((options.fin ?? true) ? 0x80 : 0) | opcode;
  const maskBit = masked ? 0x80 : 0;
  let header: number[];
  if (data.length < 126) header = [first, maskBit | data.length];
  else if (data.length < 65536) {
    header = [first, maskBit | 126, data.length >> 8, data.length & 0xff];
  } else {
    header = [first, maskBit | 127, 0, 0, 0, 0];
    const n = data.length;
    header.push((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  }
  const mask = masked ? [0x12, 0x34, 0x56, 0x78] : [];
  const out = new Uint8Array(header.length + mask.length + data.length);
  out.set(header);
  out.set(mask, header.length);
  const at = header.length + mask.length;
  for (let i = 0; i < data.length; i++) out[at + i] = masked ? data[i]! ^ mask[i % 4]! : data[i]!;
  return out;
}

/** A raw WebSocket connection: handshake done, frames written and read by hand. */
export class RawWs {
  #buffer: Uint8Array = new Uint8Array(0);
  #chunk = new Uint8Array(64 * 1024);

  private constructor(readonly conn: Deno.Conn) {}

  /** Connects and completes the opening handshake. */
  static async open(url: string): Promise<RawWs> {
    const conn = await Deno.connect(hostPort(url));
    const ws = new RawWs(conn);
    const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    await conn.write(encoder.encode(
      `GET /ws HTTP/1.1\r\nHost: ${new URL(url).host}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    ));
    while (indexOf(ws.#buffer, CRLF2) < 0) {
      if (!(await ws.#fill())) throw new Error("closed during the WebSocket handshake");
    }
    const end = indexOf(ws.#buffer, CRLF2);
    const status = decoder.decode(ws.#buffer.subarray(0, end)).split(" ")[1];
    if (status !== "101") throw new Error(`WebSocket handshake answered ${status}`);
    ws.#buffer = ws.#buffer.subarray(end + 4);
    return ws;
  }

  async #fill(): Promise<boolean> {
    let n: number | null;
    try {
      n = await this.conn.read(this.#chunk);
    } catch {
      n = null;
    }
    if (n === null) return false;
    this.#buffer = concat(this.#buffer, this.#chunk.subarray(0, n));
    return true;
  }

  /** Writes bytes; false when the server has closed the connection. */
  async write(bytes: Uint8Array): Promise<boolean> {
    try {
      await this.conn.write(bytes);
      return true;
    } catch {
      return false;
    }
  }

  /** Sends a text message. */
  send(text: string): Promise<boolean> {
    return this.write(wsFrame(0x1, text));
  }

  /** The next frame, or undefined at end of stream. */
  async frame(): Promise<{ opcode: number; payload: Uint8Array } | undefined> {
    while (true) {
      const b = this.#buffer;
      const found = frameAt(b, 0);
      if (found) {
        this.#buffer = b.subarray(found.end);
        return { opcode: found.opcode, payload: b.slice(found.start, found.end) };
      }
      if (!(await this.#fill())) return undefined;
    }
  }

  /** The next text message, parsed; undefined at a close frame or end of stream. */
  async message(): Promise<Record<string, unknown> | undefined> {
    while (true) {
      const frame = await this.frame();
      if (!frame || frame.opcode === 0x8) return undefined;
      if (frame.opcode === 0x1) return JSON.parse(decoder.decode(frame.payload));
    }
  }

  /** Reads until the close frame and returns its code (undefined: closed without one). */
  async closeCode(): Promise<number | undefined> {
    while (true) {
      const frame = await this.frame();
      if (!frame) return undefined;
      if (frame.opcode === 0x8) {
        return frame.payload.length >= 2 ? (frame.payload[0]! << 8) | frame.payload[1]! : 1005;
      }
    }
  }

  /** Drops the TCP connection without a closing handshake. */
  drop(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/**
 * How many of the server's sockets for these client ports are still open
 * (`/proc/net/tcp{,6}`; TIME_WAIT holds no descriptor and is not counted).
 * Precise even while other tests run in the same process.
 */
export function serverSocketsFor(serverPort: number, clientPorts: Iterable<number>): number {
  const clients = new Set(clientPorts);
  let open = 0;
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = Deno.readTextFileSync(file);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 4) continue;
      const local = parseInt(fields[1]!.split(":").pop()!, 16);
      const remote = parseInt(fields[2]!.split(":").pop()!, 16);
      const state = fields[3]!;
      if (local === serverPort && clients.has(remote) && state !== "06" && state !== "0A") open++;
    }
  }
  return open;
}
