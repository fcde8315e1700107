/**
 * libzmq's socket monitor read from JavaScript: `zmq_socket_monitor` makes
 * libzmq publish a socket's connection events on an inproc PAIR, which a PAIR
 * of ours reads through the poller. Events are rare (connects, handshakes,
 * disconnects), never per message.
 *
 * Each event is two frames: six bytes (event number u16, value u32, little
 * endian on x86) and the endpoint.
 *
 * libzmq sends events with a blocking send from its I/O thread: with no reader
 * connected, or the reader's queue full, that thread stalls and every socket
 * of the context with it. So the reader takes an unbounded queue (events are
 * few) and the monitor is stopped ({@link SocketMonitor.stop}) while the
 * monitored socket is still open, before the reader closes.
 *
 * @module
 */
import { ZMQ_PAIR } from "./libzmq.ts";
import { NativeSocket } from "./native_socket.ts";

/** One monitor event. */
export interface MonitorEvent {
  /** ZMQ_EVENT_* bit. */
  event: number;
  /** Its value: an fd, an errno, a protocol error code or a ZAP status, per event. */
  value: number;
  /** The endpoint the event is about. */
  endpoint: string;
}

let instances = 0;
const decoder = new TextDecoder();

/** Reads the monitor events of one socket until closed. */
export class SocketMonitor {
  #socket: NativeSocket;
  #reader: NativeSocket;
  #loop: Promise<void>;
  #stopped = false;

  /**
   * Starts monitoring `socket` for `events` (ZMQ_EVENT_* bits). Call before
   * the socket is handed to another thread (zmq_proxy): the call is not
   * thread-safe, the events are.
   */
  constructor(socket: NativeSocket, events: number, onEvent: (event: MonitorEvent) => void) {
    const endpoint = `inproc://plantd-monitor-${Deno.pid}-${++instances}`;
    this.#socket = socket;
    socket.monitor(endpoint, events);
    // RCVHWM 0: the inproc pipe from libzmq's monitor socket has no limit, so its send never blocks.
    this.#reader = new NativeSocket(ZMQ_PAIR, { linger: 0, receiveHighWaterMark: 0 });
    try {
      this.#reader.connect(endpoint);
    } catch (error) {
      this.stop();
      this.#reader.close();
      throw error;
    }
    this.#loop = this.#run(onEvent);
  }

  /**
   * Stops libzmq's side. Call while the monitored socket is open and no other
   * thread uses it (after a zmq_proxy has returned), before closing it.
   */
  stop(): void {
    if (this.#stopped || this.#socket.closed) return;
    this.#stopped = true;
    this.#socket.stopMonitor();
  }

  async #run(onEvent: (event: MonitorEvent) => void): Promise<void> {
    for await (const [head, address] of this.#reader) {
      if (!head || head.length < 6) continue;
      const view = new DataView(head.buffer, head.byteOffset, head.length);
      onEvent({
        event: view.getUint16(0, true),
        value: view.getUint32(2, true),
        endpoint: address ? decoder.decode(address) : "",
      });
    }
  }

  /** Stops libzmq's side if still running (see {@link stop}), then the reader. */
  async close(): Promise<void> {
    this.stop();
    this.#reader.close();
    await this.#loop;
  }
}
