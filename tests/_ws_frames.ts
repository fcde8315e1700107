/**
 * Reading server WebSocket frames off raw bytes (RFC 6455 5.2), for the
 * tests and benchmarks that talk to the gateway over a bare TCP connection.
 * Server frames are never masked.
 */

/** Where one frame lies in a buffer. */
export interface FrameAt {
  opcode: number;
  /** Payload start and end offsets in the buffer. */
  start: number;
  end: number;
}

/** The frame that begins at `at` in `data`, or undefined while it is incomplete. */
export function frameAt(data: Uint8Array, at: number): FrameAt | undefined {
  if (data.length - at < 2) return undefined;
  let length = data[at + 1]! & 0x7f;
  let head = 2;
  if (length === 126) {
    if (data.length - at < 4) return undefined;
    length = (data[at + 2]! << 8) | data[at + 3]!;
    head = 4;
  } else if (length === 127) {
    if (data.length - at < 10) return undefined;
    length = Number(new DataView(data.buffer, data.byteOffset + at + 2, 8).getBigUint64(0));
    head = 10;
  }
  if (data.length - at < head + length) return undefined;
  return { opcode: data[at]! & 0x0f, start: at + head, end: at + head + length };
}
