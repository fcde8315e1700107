/**
 * Runs a {@link Broker} on a bound ROUTER socket.
 *
 * @module
 */
import * as zmq from "zeromq";
import { bindOrExplain } from "../transport/bind.ts";
import { ZmqSocket } from "../transport/socket.ts";
import { Broker, type BrokerObserver, type BrokerOptions } from "./broker.ts";

/** Options of {@link BrokerServer.start}. */
export interface BrokerServerOptions extends BrokerOptions {
  /** Where to bind. @default "tcp://*:9797" */
  endpoint?: string;
  /** How often heartbeats, purge and request expiry run. @default 250 */
  tickMs?: number;
}

/** A broker bound to its endpoint. */
export class BrokerServer {
  readonly broker: Broker;
  /** The endpoint actually bound (port resolved when `*` or 0 was asked). */
  readonly endpoint: string;
  #socket: ZmqSocket<zmq.Router>;
  #timer: ReturnType<typeof setInterval>;
  #loop: Promise<void>;

  private constructor(socket: ZmqSocket<zmq.Router>, broker: Broker, tickMs: number) {
    this.#socket = socket;
    this.broker = broker;
    this.endpoint = socket.raw.lastEndpoint ?? "";
    this.#timer = setInterval(() => broker.tick(), tickMs);
    this.#loop = this.#run();
  }

  /** Binds and starts serving. Throws a clear error when the endpoint is taken. */
  static async start(
    options: BrokerServerOptions = {},
    observer: BrokerObserver = {},
  ): Promise<BrokerServer> {
    const maxBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
    const raw = new zmq.Router({
      linger: 200,
      maxMessageSize: maxBytes,
      sendHighWaterMark: 100_000,
      receiveHighWaterMark: 100_000,
    });
    const socket = new ZmqSocket(raw);
    await bindOrExplain(raw, options.endpoint ?? "tcp://*:9797", "broker");
    const broker = new Broker(
      (identity, frames) => {
        socket.send([identity, ...frames]).catch(() => observer.drop?.("send failed"));
      },
      { ...options, maxMessageBytes: maxBytes },
      observer,
    );
    return new BrokerServer(socket, broker, options.tickMs ?? 250);
  }

  async #run(): Promise<void> {
    for await (const message of this.#socket) this.broker.handle(message);
  }

  /** Sends DISCONNECT to every worker, fails queued requests, closes the socket. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.broker.shutdown();
    // Let the queued DISCONNECTs and error replies reach ZeroMQ before closing.
    await this.#socket.flush();
    this.#socket.close();
    await this.#loop;
  }
}
