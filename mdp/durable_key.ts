/**
 * Extension: a durable request's journal key, as an envelope frame of the
 * client's stack, after its request id and before its deadline frame
 * (protocol.ts): 21 bytes, the marker `ff 6b 79 01` ("ky", version 1), a
 * flags byte (bit 0: this is the same request asked again, after a
 * reconnection) and 16 random bytes that name the request for good.
 *
 * A plantd-ts broker journaling the service takes it off the stack and files
 * the request, its reply and any dead letter under it: a client that asks
 * again with the same key after a broker crash is attached to the pending
 * request or handed the stored reply, and the worker does not run it again
 * for that. A service that is not durable, or a broker that does not know the
 * frame, returns it with the stack like any other frame, which the client
 * ignores (docs/durability.md).
 *
 * @module
 */

/** Length of a key frame. */
export const KEY_FRAME_BYTES = 21;
/** Length of the key itself. */
export const KEY_BYTES = 16;
const MARKER = [0xff, 0x6b, 0x79, 0x01] as const;
const REASK = 0x01;

/** A fresh random key. */
export function newDurableKey(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(KEY_BYTES));
}

/** The key frame for `key`, first asked or asked again. */
export function durableKeyFrame(key: Uint8Array, reask = false): Uint8Array {
  const out = new Uint8Array(KEY_FRAME_BYTES);
  out.set(MARKER);
  out[4] = reask ? REASK : 0;
  out.set(key.subarray(0, KEY_BYTES), 5);
  return out;
}

/** Marks a frame made by {@link durableKeyFrame} as asked again. */
export function markReask(frame: Uint8Array): void {
  frame[4] = frame[4]! | REASK;
}

/** The key in a key frame and whether it is asked again; undefined when `f` is not one. */
export function readDurableKey(
  f: Uint8Array | undefined,
): { key: Uint8Array; reask: boolean } | undefined {
  if (!f || f.length !== KEY_FRAME_BYTES) return undefined;
  for (let i = 0; i < MARKER.length; i++) if (f[i] !== MARKER[i]) return undefined;
  return { key: f.slice(5), reask: (f[4]! & REASK) !== 0 };
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** A key as 32 lowercase hex digits (how the journal, the API and the CLI name it). */
export function keyHex(key: Uint8Array): string {
  let out = "";
  for (const b of key) out += HEX[b];
  return out;
}

/** The bytes of a key in hex; undefined when `hex` is not 32 hex digits. */
export function keyBytes(hex: string): Uint8Array | undefined {
  if (!/^[0-9a-f]{32}$/.test(hex)) return undefined;
  const out = new Uint8Array(KEY_BYTES);
  for (let i = 0; i < KEY_BYTES; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
