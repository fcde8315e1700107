/**
 * Senders waiting for room in a socket's output: each waits for the next
 * wake (a connection drained, one closed, the socket closed), then tries again.
 *
 * @module
 */

/** Thrown by a ZMTP socket's `send` once the socket is closed. */
export class ZmtpSocketClosedError extends Error {
  constructor() {
    super("socket closed");
    this.name = "ZmtpSocketClosedError";
  }
}

export class RoomWaiters {
  #waiters = new Set<() => void>();

  /** Resolves at the next {@link wakeAll}. */
  next(): Promise<void> {
    return new Promise<void>((resolve) => this.#waiters.add(resolve));
  }

  /**
   * Calls `attempt` until it takes the message, waiting for a wake between
   * tries; ends with {@link ZmtpSocketClosedError} once `closed()` says so.
   */
  async retry(attempt: () => boolean, closed: () => boolean): Promise<void> {
    while (!attempt()) {
      if (closed()) throw new ZmtpSocketClosedError();
      await this.next();
    }
  }

  wakeAll(): void {
    if (this.#waiters.size === 0) return;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }
}
