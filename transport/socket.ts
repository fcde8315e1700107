// TEMPORARY: kept only until bench/broker.ts moves to NativeSocket; nothing in the product uses it.
/**
 * The one way this project uses a ZeroMQ socket: a wrapper that never leaves a
 * native `receive()` or `send()` pending (see fd_poller.ts for why), serialises
 * sends, and exposes received messages as frames of bytes.
 *
 * @module
 */
import type * as zmq from "zeromq";
import { type FdPoller, sharedPoller } from "./fd_poller.ts";

/** A multipart message. Frames stay bytes: identities are binary. */
export type Frames = Uint8Array[];

const ZMQ_FD = 14;

/** Raised by operations on a socket after {@link ZmqSocket.close}. */
export class SocketClosedError extends Error {
  constructor() {
    super("Socket is closed");
    this.name = "SocketClosedError";
  }
}

interface PendingSend {
  frames: Frames;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** Anything zeromq.js can read and write. */
type RawSocket = zmq.Socket & zmq.Readable & zmq.Writable;

/** Wraps a zeromq.js socket so that waits go through the {@link FdPoller}. */
export class ZmqSocket<S extends zmq.Socket = zmq.Socket> {
  /** The wrapped socket, for options, bind and connect. Never receive or send on it directly. */
  readonly raw: S;
  #poller: FdPoller;
  #fd: number;
  #queue: PendingSend[] = [];
  #sending = false;
  #flushed: Array<() => void> = [];
  #receiving = false;
  #closed = false;

  constructor(raw: S, poller: FdPoller = sharedPoller()) {
    this.raw = raw;
    this.#poller = poller;
    // getInt32Option is protected in the typings, public at run time.
    this.#fd = (raw as unknown as { getInt32Option(option: number): number }).getInt32Option(
      ZMQ_FD,
    );
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Receives one multipart message; waits without hanging and without spinning. */
  async receive(): Promise<Frames> {
    if (this.#receiving) throw new Error("Socket is busy receiving: one receive at a time");
    this.#receiving = true;
    try {
      const raw = this.raw as unknown as RawSocket;
      while (true) {
        if (this.#closed) throw new SocketClosedError();
        if (raw.readable) return await raw.receive();
        await this.#poller.wait(this.#fd);
      }
    } finally {
      this.#receiving = false;
    }
  }

  /** Reads messages until the socket closes. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Frames> {
    while (!this.#closed) {
      try {
        yield await this.receive();
      } catch (error) {
        if (error instanceof SocketClosedError || this.#closed) return;
        throw error;
      }
    }
  }

  /**
   * Queues a message and resolves once ZeroMQ has taken it. Sends are applied
   * in call order; callers need not await one before starting the next.
   */
  send(frames: Frames): Promise<void> {
    if (this.#closed) return Promise.reject(new SocketClosedError());
    return new Promise((resolve, reject) => {
      this.#queue.push({ frames, resolve, reject });
      if (!this.#sending) this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#sending = true;
    const raw = this.raw as unknown as RawSocket;
    try {
      while (this.#queue.length > 0) {
        if (this.#closed) {
          for (const p of this.#queue.splice(0)) p.reject(new SocketClosedError());
          return;
        }
        if (!raw.writable) {
          await this.#poller.wait(this.#fd);
          continue;
        }
        const pending = this.#queue.shift()!;
        try {
          await raw.send(pending.frames);
          pending.resolve();
        } catch (error) {
          pending.reject(error);
        }
        // The send processed pending commands and may have eaten the edge the
        // poll waits for: if a message is there now, hand it to the receiver.
        if (this.#poller.waiting(this.#fd) && raw.readable) this.#poller.release(this.#fd);
      }
    } finally {
      this.#sending = false;
      for (const resolve of this.#flushed.splice(0)) resolve();
    }
  }

  /** Resolves once every queued send has been handed to ZeroMQ. */
  flush(): Promise<void> {
    if (!this.#sending) return Promise.resolve();
    return new Promise((resolve) => this.#flushed.push(resolve));
  }

  /** Closes the socket; pending receives end with {@link SocketClosedError}. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#poller.forget(this.#fd);
    this.raw.close();
  }
}
