/**
 * A DEALER socket in TypeScript connected to one `tcp://` endpoint over
 * ZMTP 3.1, NULL mechanism (see router.ts for why not libzmq's). As libzmq's
 * DEALER: it connects in the background and reconnects after a lost
 * connection (every `reconnectMs`), and messages sent while it is not
 * connected wait, up to the high-water mark, and go out once it is. A
 * message already written to a connection that then dies is lost, as with
 * libzmq.
 *
 * @module
 */
import type { Frames } from "../frames.ts";
import type { SendOptions } from "../send_options.ts";
import { encodeMessageInto, messageBytes } from "./codec.ts";
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  ZmtpConnection,
  type ZmtpConnectionEvents,
} from "./connection.ts";
import { parseTcpEndpoint, type TcpAddress } from "./endpoint.ts";
import { type HeartbeatOptions, heartbeatOptions } from "../heartbeat.ts";
import { Inbox } from "./inbox.ts";
import { RoomWaiters, ZmtpSocketClosedError } from "./room.ts";
import { waitAtMost } from "../../support/wait_at_most.ts";

/** Options of a {@link ZmtpDealer}. */
export interface ZmtpDealerOptions extends HeartbeatOptions {
  /** The Identity sent to the ROUTER. @default none (the ROUTER makes one) */
  routingId?: string | Uint8Array;
  /** Messages waiting for a connection beyond which trySend refuses. 0: no limit. @default 1000 */
  sendHighWaterMark?: number;
  /**
   * ZMQ_IMMEDIATE: messages go only to a connection that completed its
   * handshake; while there is none, trySend refuses and send waits (nothing
   * is kept to go out later). @default false
   */
  immediate?: boolean;
  /** Bytes queued on a connection beyond which trySend refuses. @default 64 MiB */
  sendBufferBytes?: number;
  /**
   * A peer sending a larger frame is disconnected (checked on the frame's
   * header, before anything is allocated for it); a larger message of
   * smaller frames is discarded. @default {@link DEALER_MAX_MESSAGE_BYTES}
   */
  maxMessageSize?: number;
  /** Milliseconds queued output gets to be written at close. @default 0 */
  linger?: number;
  /** Wait between connection attempts. @default 100 (libzmq's) */
  reconnectMs?: number;
  /** Messages kept while nothing drains the socket. @default 100000 */
  receiveQueue?: number;
}

/** Default largest message a DEALER takes (see {@link DEFAULT_MAX_MESSAGE_BYTES}). */
export const DEALER_MAX_MESSAGE_BYTES = DEFAULT_MAX_MESSAGE_BYTES;

/** A connecting DEALER; see the module documentation. */
export class ZmtpDealer {
  #options: ZmtpDealerOptions;
  #identity: Uint8Array | undefined;
  #address: TcpAddress | undefined;
  #connection: ZmtpConnection | undefined;
  /** Messages encoded while no connection is ready, in order. */
  #waiting: Uint8Array[] = [];
  #inbox: Inbox;
  #closed = false;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #connecting: Promise<void> | undefined;
  /** Aborts a connect in progress at close (else close would wait for the kernel to give up). */
  #dialAbort = new AbortController();
  #room = new RoomWaiters();
  #whenReady: (() => void) | undefined;
  #handshakes = 0;

  constructor(options: ZmtpDealerOptions = {}) {
    this.#options = options;
    const id = options.routingId;
    if (id !== undefined) {
      this.#identity = typeof id === "string" ? new TextEncoder().encode(id) : id;
    }
    this.#inbox = new Inbox(options.receiveQueue ?? 100_000);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Whether a connection has completed its handshake. */
  get connected(): boolean {
    return this.#connection?.ready === true;
  }

  /** Handshakes completed so far: a change means a new connection (see MessageSocket). */
  get handshakes(): number {
    return this.#handshakes;
  }

  /** Starts connecting to `tcp://host:port` (the peer need not be there yet). */
  connect(endpoint: string): void {
    if (this.#address) throw new Error("a ZMTP DEALER connects to one endpoint");
    const address = parseTcpEndpoint(endpoint);
    // `*` and port 0 mean something only to bind (libzmq refuses them too).
    if (!address || address.port === 0 || /^tcp:\/\/\*:/.test(endpoint)) {
      throw new Error(`invalid endpoint ${endpoint}`);
    }
    this.#address = address;
    this.#connecting = this.#dial();
  }

  async #dial(): Promise<void> {
    const address = this.#address!;
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({
        hostname: address.hostname,
        port: address.port,
        signal: this.#dialAbort.signal,
      });
    } catch {
      this.#scheduleRetry();
      return;
    }
    if (this.#closed) {
      conn.close();
      return;
    }
    this.#connection = new ZmtpConnection(conn, {
      socketType: "DEALER",
      ...(this.#identity ? { identity: this.#identity } : {}),
      ...(this.#options.sendBufferBytes !== undefined
        ? { sendBufferBytes: this.#options.sendBufferBytes }
        : {}),
      maxMessageBytes: this.#options.maxMessageSize ?? DEALER_MAX_MESSAGE_BYTES,
      ...heartbeatOptions(this.#options),
    }, this.#events);
  }

  #scheduleRetry(): void {
    if (this.#closed) return;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      if (!this.#closed) this.#connecting = this.#dial();
    }, this.#options.reconnectMs ?? 100);
  }

  #events: ZmtpConnectionEvents = {
    ready: (connection) => {
      this.#handshakes++;
      for (const bytes of this.#waiting) connection.sendEncoded(bytes);
      this.#waiting = [];
      this.#room.wakeAll();
      this.#whenReady?.();
      return undefined;
    },
    // Nothing is handed over once close() began.
    message: (frames) => {
      if (!this.#closed) this.#inbox.deliver(frames);
    },
    drained: () => this.#room.wakeAll(),
    closed: (connection) => {
      if (this.#connection !== connection) return;
      this.#connection = undefined;
      // Writers blocked on the dead connection's buffer queue for the next one instead.
      this.#room.wakeAll();
      this.#scheduleRetry();
    },
  };

  /** Sends without waiting; false when the socket cannot take the message now. */
  trySend(frames: Frames): boolean {
    return this.#trySend(frames, undefined);
  }

  /** {@link trySend} of `[head, ...frames]` without building that array. */
  trySendAfter(head: Uint8Array, frames: Frames): boolean {
    return this.#trySend(frames, head);
  }

  #trySend(frames: Frames, head: Uint8Array | undefined): boolean {
    if (this.#closed) throw new ZmtpSocketClosedError();
    const connection = this.#connection;
    if (connection?.ready) return connection.send(frames, head);
    if (this.#options.immediate) return false;
    const limit = this.#options.sendHighWaterMark ?? 1000;
    if (limit > 0 && this.#waiting.length >= limit) return false;
    // Encoded now: the caller may reuse its buffers once this returns.
    const bytes = new Uint8Array(messageBytes(frames, head));
    encodeMessageInto(bytes, 0, frames, head);
    this.#waiting.push(bytes);
    return true;
  }

  /** Sends, waiting while the socket is full (or, `immediate`, not connected). */
  send(frames: Frames, options?: SendOptions): Promise<void> {
    return this.#room.retry(() => this.trySend(frames), () => this.#closed, options);
  }

  /** See {@link Inbox.drain}. */
  drain(onMessage: (frames: Frames) => void): Promise<void> {
    return this.#inbox.drain(onMessage);
  }

  /**
   * Closes; output already queued on the connection gets the socket's linger
   * (or `linger`) ms to go out. {@link drain} resolves once it is closed.
   */
  close(linger?: number): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#dialAbort.abort();
    this.#room.wakeAll();
    const connection = this.#connection;
    this.#connection = undefined;
    const lingerMs = linger ?? this.#options.linger ?? 0;
    const closing = (async () => {
      await this.#connecting;
      if (connection && !connection.ready && this.#waiting.length > 0 && lingerMs > 0) {
        // Mid-handshake with messages waiting (a worker's last DISCONNECT): as libzmq
        // does within linger, let the handshake finish so they go out.
        await waitAtMost(new Promise<void>((resolve) => this.#whenReady = resolve), lingerMs);
      }
      await connection?.close(lingerMs);
    })();
    void closing.then(() => this.#inbox.close());
  }
}
