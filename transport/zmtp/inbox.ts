/**
 * Hands a socket's incoming messages to the one `drain` handler, with the
 * same contract as {@link NativeSocket.drain}: the handler is called for every
 * message until the socket closes; a throw from it ends that drain with the
 * error, and messages arriving while no handler is set wait (up to a limit).
 *
 * @module
 */
import type { Frames } from "../frames.ts";

export class Inbox {
  #handler: ((frames: Frames) => void) | undefined;
  #queue: Frames[] = [];
  #limit: number;
  #settle: { resolve: () => void; reject: (error: unknown) => void } | undefined;
  #closed = false;

  #borrowed: boolean;

  /** `borrowed`: frames are views valid only during delivery, so a queued message is copied. */
  constructor(limit: number, borrowed = false) {
    this.#limit = limit;
    this.#borrowed = borrowed;
  }

  deliver(frames: Frames): void {
    if (this.#closed) return;
    const handler = this.#handler;
    if (!handler) {
      // Beyond the limit a message is dropped, as libzmq does past its receive high-water mark.
      if (this.#queue.length < this.#limit) {
        this.#queue.push(this.#borrowed ? frames.map((frame) => frame.slice()) : frames);
      }
      return;
    }
    try {
      handler(frames);
    } catch (error) {
      this.#handler = undefined;
      const settle = this.#settle;
      this.#settle = undefined;
      settle?.reject(error);
    }
  }

  drain(onMessage: (frames: Frames) => void): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#handler) return Promise.reject(new Error("the socket is already being drained"));
    const done = new Promise<void>((resolve, reject) => this.#settle = { resolve, reject });
    this.#handler = onMessage;
    const queued = this.#queue;
    this.#queue = [];
    // Should the handler throw, deliver() queues the rest again for the next drain.
    for (const frames of queued) this.deliver(frames);
    return done;
  }

  /** Drops queued messages that `match` (those of a connection that closed). */
  discard(match: (frames: Frames) => boolean): void {
    if (this.#queue.length > 0) this.#queue = this.#queue.filter((frames) => !match(frames));
  }

  close(): void {
    this.#closed = true;
    this.#handler = undefined;
    this.#queue = [];
    const settle = this.#settle;
    this.#settle = undefined;
    settle?.resolve();
  }
}
