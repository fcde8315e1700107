/**
 * Senders waiting for room in a socket's output: each waits for the next
 * wake (a connection drained, one closed, the socket closed), then tries again.
 *
 * @module
 */
import { SocketClosedError } from "../closed.ts";
import type { SendOptions } from "../send_options.ts";

/** Thrown by a ZMTP socket's `send` once the socket is closed. */
export class ZmtpSocketClosedError extends SocketClosedError {
  constructor() {
    super("socket closed");
    this.name = "ZmtpSocketClosedError";
  }
}

export class RoomWaiters {
  #waiters = new Set<() => void>();

  /** Resolves at the next {@link wakeAll}, or when `signal` aborts. */
  next(signal?: AbortSignal): Promise<void> {
    if (!signal) return new Promise<void>((resolve) => this.#waiters.add(resolve));
    return new Promise<void>((resolve) => {
      const wake = () => {
        this.#waiters.delete(wake);
        signal.removeEventListener("abort", wake);
        resolve();
      };
      this.#waiters.add(wake);
      signal.addEventListener("abort", wake, { once: true });
    });
  }

  /**
   * Calls `attempt` until it takes the message, waiting for a wake between
   * tries; ends with {@link ZmtpSocketClosedError} once `closed()` says so,
   * and with the signal's reason once `options.signal` aborts (the message
   * was then never taken).
   */
  async retry(
    attempt: () => boolean,
    closed: () => boolean,
    options: SendOptions = {},
  ): Promise<void> {
    const { signal, beforeTry } = options;
    while (true) {
      beforeTry?.();
      signal?.throwIfAborted();
      if (attempt()) return;
      if (closed()) throw new ZmtpSocketClosedError();
      await this.next(signal);
    }
  }

  wakeAll(): void {
    if (this.#waiters.size === 0) return;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }
}
