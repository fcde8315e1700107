/**
 * ZMTP 3.1 (rfc.zeromq.org/spec/37) bytes on the wire for the NULL mechanism:
 * the greeting, the READY/ERROR/PING/PONG commands and message frames. No
 * I/O here; {@link ZmtpConnection} drives it.
 *
 * @module
 */
import { readUint32, writeUint32 } from "../frames.ts";

/** Bytes of a ZMTP 3 greeting. */
export const GREETING_BYTES = 64;

/** Frame flag bits. */
const FLAG_MORE = 1;
const FLAG_LONG = 2;
const FLAG_COMMAND = 4;

/** Largest size of a short frame. */
const SHORT_MAX = 255;

const latin1 = new TextDecoder("latin1");
const utf8 = new TextEncoder();

/** Our greeting: ZMTP 3.1, NULL mechanism, as-server 0. */
export function greeting(): Uint8Array {
  const bytes = new Uint8Array(GREETING_BYTES);
  bytes[0] = 0xff;
  // Padding as libzmq writes it (a ZMTP 1.0 peer reads it as an identity length of 0).
  bytes[8] = 1;
  bytes[9] = 0x7f;
  bytes[10] = 3;
  bytes[11] = 1;
  bytes.set(utf8.encode("NULL"), 12);
  return bytes;
}

/** What a peer's greeting says, or why it is not one we can talk to. */
export type GreetingCheck = { ok: true; minor: number } | { ok: false; reason: string };

/** Checks a peer's 64-byte greeting. */
export function checkGreeting(bytes: Uint8Array): GreetingCheck {
  if (bytes[0] !== 0xff || bytes[9] !== 0x7f) {
    return { ok: false, reason: "not a ZMTP 3 peer (bad greeting signature)" };
  }
  if (bytes[10]! < 3) {
    return { ok: false, reason: `ZMTP ${bytes[10]}.x peer (3.0 or later needed)` };
  }
  const mechanism = latin1.decode(bytes.subarray(12, 32)).replace(/\0+$/, "");
  if (mechanism !== "NULL") {
    return { ok: false, reason: `mechanism ${mechanism || "(none)"} (plaintext NULL expected)` };
  }
  // RFC 37: with NULL the as-server field MUST be zero (libzmq does not check it).
  if (bytes[32] !== 0) return { ok: false, reason: "as-server set with the NULL mechanism" };
  return { ok: true, minor: bytes[11]! };
}

/** Length of a frame header for a body of `size` bytes. */
export function headerBytes(size: number): number {
  return size <= SHORT_MAX ? 2 : 9;
}

/**
 * Writes a frame header at `offset` of `out` and returns the offset after it.
 * `out` must have {@link headerBytes} of room.
 */
export function writeHeader(
  out: Uint8Array,
  offset: number,
  size: number,
  more: boolean,
  command = false,
): number {
  const flags = (more ? FLAG_MORE : 0) | (command ? FLAG_COMMAND : 0);
  if (size <= SHORT_MAX) {
    out[offset] = flags;
    out[offset + 1] = size;
    return offset + 2;
  }
  out[offset] = flags | FLAG_LONG;
  // Sizes stay far below 2^53: the high half is the quotient, the low half the remainder.
  writeUint32(out, offset + 1, Math.floor(size / 0x1_0000_0000));
  writeUint32(out, offset + 5, size >>> 0);
  return offset + 9;
}

/** A command frame (header included) with `name` and `body`. */
export function command(name: string, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const size = 1 + name.length + body.length;
  const out = new Uint8Array(headerBytes(size) + size);
  let at = writeHeader(out, 0, size, false, true);
  out[at++] = name.length;
  out.set(utf8.encode(name), at);
  out.set(body, at + name.length);
  return out;
}

/** A READY command with the given metadata properties. */
export function readyCommand(properties: Record<string, Uint8Array>): Uint8Array {
  const parts: number[] = [];
  for (const [name, value] of Object.entries(properties)) {
    parts.push(name.length, ...utf8.encode(name));
    const length = new Uint8Array(4);
    writeUint32(length, 0, value.length);
    parts.push(...length, ...value);
  }
  return command("READY", Uint8Array.from(parts));
}

/** An ERROR command: the peer logs `reason` and does not reconnect at once. */
export function errorCommand(reason: string): Uint8Array {
  // Cut in bytes: the length is one byte, and a reason may echo a peer's UTF-8.
  const text = utf8.encode(reason).subarray(0, 255);
  const body = new Uint8Array(1 + text.length);
  body[0] = text.length;
  body.set(text, 1);
  return command("ERROR", body);
}

/** A command received: its name and the bytes after the name. */
export interface Command {
  name: string;
  body: Uint8Array;
}

/** Splits a command frame's body into name and data; undefined when malformed. */
export function parseCommand(frame: Uint8Array): Command | undefined {
  const length = frame[0];
  if (length === undefined || length === 0 || 1 + length > frame.length) return undefined;
  return { name: latin1.decode(frame.subarray(1, 1 + length)), body: frame.subarray(1 + length) };
}

/**
 * The properties of a READY command's body (names lower-cased: ZMTP says they
 * are case-insensitive); undefined when malformed.
 */
export function parseProperties(body: Uint8Array): Map<string, Uint8Array> | undefined {
  const properties = new Map<string, Uint8Array>();
  let at = 0;
  while (at < body.length) {
    const nameLength = body[at]!;
    if (nameLength === 0 || at + 1 + nameLength + 4 > body.length) return undefined;
    const name = latin1.decode(body.subarray(at + 1, at + 1 + nameLength)).toLowerCase();
    at += 1 + nameLength;
    const valueLength = readUint32(body, at);
    at += 4;
    if (at + valueLength > body.length) return undefined;
    properties.set(name, body.subarray(at, at + valueLength));
    at += valueLength;
  }
  return properties;
}

/** Flag bits RFC 37 reserves: they MUST be zero (libzmq ignores them). */
export const RESERVED_FLAGS = 0xf8;

/**
 * A PING: our TTL in deciseconds as RFC 37 puts it on the wire (rounded up,
 * at most 0xffff), then `context` (at most 16 bytes, echoed in the PONG).
 */
export function pingCommand(ttlMs: number, context: Uint8Array): Uint8Array {
  const body = new Uint8Array(2 + Math.min(context.length, 16));
  const ttl = Math.min(0xffff, Math.ceil(ttlMs / 100));
  body[0] = ttl >> 8;
  body[1] = ttl & 0xff;
  body.set(context.subarray(0, 16), 2);
  return command("PING", body);
}

/** The TTL of a PING's body in milliseconds (0: none, or a body too short to hold one). */
export function pingTtlMs(pingBody: Uint8Array): number {
  if (pingBody.length < 2) return 0;
  return ((pingBody[0]! << 8) | pingBody[1]!) * 100;
}

/** The PONG that answers a PING's body (TTL, then up to 16 bytes of context). */
export function pongFor(pingBody: Uint8Array): Uint8Array {
  return command("PONG", pingBody.subarray(2, 18));
}

/** The socket types that may talk to `ours` (ZMTP's compatibility table, the MDP part). */
export function compatible(ours: string, theirs: string): boolean {
  switch (ours) {
    case "ROUTER":
      return theirs === "DEALER" || theirs === "REQ" || theirs === "ROUTER";
    case "DEALER":
      return theirs === "ROUTER" || theirs === "REP" || theirs === "DEALER";
    default:
      return false;
  }
}

/** Bytes that {@link encodeMessageInto} needs for `[head?, ...frames]`. */
export function messageBytes(frames: readonly Uint8Array[], head?: Uint8Array): number {
  let n = head ? headerBytes(head.length) + head.length : 0;
  for (let i = 0; i < frames.length; i++) {
    const size = frames[i]!.length;
    n += headerBytes(size) + size;
  }
  return n;
}

/**
 * Encodes `[head?, ...frames]` as message frames at `offset` of `out` and
 * returns the offset after them; `out` must have {@link messageBytes} of room.
 */
export function encodeMessageInto(
  out: Uint8Array,
  offset: number,
  frames: readonly Uint8Array[],
  head?: Uint8Array,
): number {
  const last = frames.length - 1;
  let at = offset;
  if (head) {
    at = writeHeader(out, at, head.length, last >= 0);
    out.set(head, at);
    at += head.length;
  }
  for (let i = 0; i <= last; i++) {
    const frame = frames[i]!;
    at = writeHeader(out, at, frame.length, i < last);
    out.set(frame, at);
    at += frame.length;
  }
  return at;
}

/** A frame header read by {@link readFrameHead}: the body is `[start, start + size)`. */
export interface FrameHead {
  more: boolean;
  command: boolean;
  start: number;
  size: number;
}

/**
 * Reads the frame header at `offset` of `bytes` (valid up to `end`);
 * undefined while the header is incomplete. The body may not have arrived
 * yet: the caller compares `start + size` with `end`, and can refuse an
 * oversized frame before its body comes in.
 */
export function readFrameHead(
  bytes: Uint8Array,
  offset: number,
  end: number,
): FrameHead | undefined {
  if (end - offset < 2) return undefined;
  const flags = bytes[offset]!;
  const more = (flags & FLAG_MORE) !== 0;
  const command = (flags & FLAG_COMMAND) !== 0;
  if ((flags & FLAG_LONG) === 0) {
    return { more, command, start: offset + 2, size: bytes[offset + 1]! };
  }
  if (end - offset < 9) return undefined;
  const size = readUint32(bytes, offset + 1) * 0x1_0000_0000 + readUint32(bytes, offset + 5);
  return { more, command, start: offset + 9, size };
}
