/**
 * Senders waiting for room in a socket's output: each waits for the next
 * wake (a connection drained, one closed, the socket closed), then tries again.
 *
 * @module
 */
export class RoomWaiters {
  #waiters = new Set<() => void>();

  /** Resolves at the next {@link wakeAll}. */
  next(): Promise<void> {
    return new Promise<void>((resolve) => this.#waiters.add(resolve));
  }

  wakeAll(): void {
    if (this.#waiters.size === 0) return;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }
}
