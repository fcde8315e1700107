/**
 * A libzmq DEALER that knows whether its connection is up, as a ZMTP DEALER
 * does: libzmq's socket monitor reports each completed handshake and each
 * disconnect (including a ZMTP heartbeat timeout). One monitor per socket,
 * so only for sockets that ask (the Majordomo client's).
 *
 * @module
 */
import type { Frames } from "./frames.ts";
import { ZMQ_EVENT_DISCONNECTED, ZMQ_EVENT_HANDSHAKE_SUCCEEDED } from "./libzmq.ts";
import type { MessageSocket } from "./message_socket.ts";
import { SocketMonitor } from "./monitor.ts";
import type { NativeSocket } from "./native_socket.ts";
import type { SendOptions } from "./send_options.ts";

/** A connected-state-aware wrapper of a libzmq DEALER with one endpoint. */
export class WatchedDealer implements MessageSocket {
  #socket: NativeSocket;
  #monitor: SocketMonitor;
  #connected = false;
  #handshakes = 0;

  /** Starts watching `socket`: call before it connects, so no event is missed. */
  constructor(socket: NativeSocket) {
    this.#socket = socket;
    this.#monitor = new SocketMonitor(
      socket,
      ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED,
      (event) => {
        this.#connected = event.event === ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
        if (this.#connected) this.#handshakes++;
      },
    );
  }

  get closed(): boolean {
    return this.#socket.closed;
  }

  /** Whether the connection completed its handshake and has not ended since. */
  get connected(): boolean {
    return this.#connected && !this.#socket.closed;
  }

  /** Handshakes completed so far (see MessageSocket). */
  get handshakes(): number {
    return this.#handshakes;
  }

  trySend(frames: Frames): boolean {
    return this.#socket.trySend(frames);
  }

  trySendAfter(head: Uint8Array, frames: Frames): boolean {
    return this.#socket.trySendAfter(head, frames);
  }

  send(frames: Frames, options?: SendOptions): Promise<void> {
    return this.#socket.send(frames, options);
  }

  drain(onMessage: (frames: Frames) => void): Promise<void> {
    return this.#socket.drain(onMessage);
  }

  close(linger?: number): void {
    if (this.#socket.closed) return;
    // libzmq's side of the monitor stops while the socket is open (monitor.ts).
    this.#monitor.stop();
    this.#socket.close(linger);
    void this.#monitor.close();
  }
}
