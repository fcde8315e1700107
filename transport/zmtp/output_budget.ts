/**
 * Bytes of output queued across all the connections of one socket, against
 * a limit: one slow reader may fill its own queue (`sendBufferBytes`), but
 * all of them together may not hold more than this.
 *
 * @module
 */

/** A shared count of queued output bytes; see the module documentation. */
export class OutputBudget {
  /** Bytes queued now. */
  used = 0;
  /** Messages refused because they would have gone over the limit. */
  refused = 0;

  constructor(readonly limit: number) {}

  /** Counts `n` more bytes; false (nothing counted, a refusal counted) when over the limit. */
  take(n: number): boolean {
    if (this.used + n > this.limit) {
      this.refused++;
      return false;
    }
    this.used += n;
    return true;
  }

  /** Counts bytes that must go out whatever the limit (handshake, PONG, ERROR). */
  force(n: number): void {
    this.used += n;
  }

  /** Bytes written or dropped with their connection. */
  give(n: number): void {
    this.used -= n;
  }
}
