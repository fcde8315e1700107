/** A multipart message. Frames stay bytes: identities are binary. */
export type Frames = Uint8Array[];

/** The big-endian 32-bit unsigned integer at `at` of `bytes` (ids, ZMTP sizes). */
export function readUint32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>>
    0;
}

/** Writes `value` (0 to 2^32 - 1) big-endian at `at` of `bytes`. */
export function writeUint32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = (value >>> 16) & 0xff;
  bytes[at + 2] = (value >>> 8) & 0xff;
  bytes[at + 3] = value & 0xff;
}
