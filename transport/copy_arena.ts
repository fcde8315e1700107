/**
 * Message frames copied out of a connection's read slab as they are parsed:
 * the slab is reused for the next read, and a receiver that keeps a 60-byte
 * request must not keep the 64 KiB slab it arrived in (issue #17: 4,000 such
 * requests held 273 MB of slabs).
 *
 * Small frames are cut from 4 KiB arenas rather than allocated one by one
 * (an ArrayBuffer per message cost the broker 40% of its throughput at 256
 * requests in flight). A kept frame keeps its arena: at most
 * {@link ARENA_BYTES} for the smallest message kept, and frames kept
 * together share one.
 *
 * @module
 */

/** Size of one arena. */
export const ARENA_BYTES = 4 * 1024;
/** Frames larger than this get a buffer of their own. */
const OWN_BUFFER_BYTES = ARENA_BYTES / 4;
/** Below this a byte loop beats making a view to copy from. */
const LOOP_COPY_BYTES = 32;

/** Where the frame copies of one connection are cut from. */
export class CopyArena {
  #arena = new Uint8Array(0);
  #at = 0;

  /** A copy of `source[start, start + n)`. */
  copy(source: Uint8Array, start: number, n: number): Uint8Array {
    if (n > OWN_BUFFER_BYTES) return source.slice(start, start + n);
    if (this.#at + n > this.#arena.length) {
      this.#arena = new Uint8Array(ARENA_BYTES);
      this.#at = 0;
    }
    const arena = this.#arena;
    const at = this.#at;
    if (n <= LOOP_COPY_BYTES) {
      for (let k = 0; k < n; k++) arena[at + k] = source[start + k]!;
    } else {
      arena.set(source.subarray(start, start + n), at);
    }
    this.#at = at + n;
    return arena.subarray(at, at + n);
  }
}
