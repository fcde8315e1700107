/**
 * Runs a {@link Broker} on a bound ROUTER socket.
 *
 * @module
 */
import type { CurveServerKeys } from "../transport/curve.ts";
import type { ListenerEvent } from "../transport/guard.ts";
import type { HeartbeatOptions } from "../transport/heartbeat.ts";
import type { MessageSocket, TransportChoice } from "../transport/message_socket.ts";
import { listenRouter, type RouterListener } from "../transport/router_listener.ts";
import { Broker, type BrokerObserver, type BrokerOptions } from "./broker.ts";
import { ServicePolicy } from "./service_policy.ts";

/** Options of {@link BrokerServer.start}. */
export interface BrokerServerOptions extends BrokerOptions {
  /** Where to bind (czmq's `@` prefix accepted). @default "tcp://127.0.0.1:9797" */
  endpoint?: string;
  /** How often heartbeats, purge and request expiry run. @default 250 */
  tickMs?: number;
  /**
   * CURVE: the broker's secret key and the client keys it accepts. With it,
   * workers are held to `servicePolicy` (none given: an empty one, so no key
   * serves an `org.plantd.*` service). @default plaintext
   */
  curve?: CurveServerKeys;
  /** Refused peers and ended connections of the endpoint (labelled "broker"). */
  onListenerEvent?: (event: ListenerEvent) => void;
  /** "libzmq" keeps libzmq's ROUTER on a plaintext tcp:// endpoint. @default "auto" */
  transport?: TransportChoice;
  /** ZMTP heartbeats on every peer connection (either ROUTER). @default none */
  wireHeartbeat?: HeartbeatOptions;
  /** ZMQ_ROUTER_HANDOVER: a peer with a routing id in use takes it over. @default false */
  handover?: boolean;
  /** ZMTP ROUTER: connections held at once; more are closed at accept. @default 10000 */
  maxConnections?: number;
  /** ZMTP ROUTER: output queued for all peers; beyond it messages are dropped. @default 256 MiB */
  maxBufferedOutputBytes?: number;
  /** ZMTP ROUTER: a connection refused or a message dropped at one of the two limits above. */
  onLimit?: (limit: "connections" | "output") => void;
}

/** A broker bound to its endpoint. */
export class BrokerServer {
  readonly broker: Broker;
  /** The endpoint actually bound (port resolved when `*` or 0 was asked). */
  readonly endpoint: string;
  /** Which ROUTER serves the endpoint: TypeScript ZMTP or libzmq's (CURVE, ipc, or asked for). */
  readonly transport: "zmtp" | "libzmq";
  #socket: MessageSocket;
  #listener: RouterListener;
  #timer: ReturnType<typeof setInterval>;
  #loop: Promise<void>;
  #onError: (error: unknown) => void;
  #loopEnded = false;

  private constructor(
    listener: RouterListener,
    broker: Broker,
    tickMs: number,
    onError: (error: unknown) => void,
  ) {
    this.#listener = listener;
    this.#socket = listener.socket;
    this.#onError = onError;
    this.broker = broker;
    this.endpoint = listener.endpoint;
    this.transport = listener.transport;
    this.#timer = setInterval(() => broker.tick(), tickMs);
    this.#loop = this.#run();
  }

  /** Whether the endpoint's socket is open and read (false once it closed, for any reason). */
  get serving(): boolean {
    return !this.#socket.closed && !this.#loopEnded;
  }

  /** Binds and starts serving. Throws a BindError when the endpoint is taken or invalid. */
  static async start(
    options: BrokerServerOptions = {},
    observer: BrokerObserver = {},
  ): Promise<BrokerServer> {
    const maxBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
    if (options.servicePolicy && !options.curve) {
      // Plaintext peers carry no key a policy could name.
      throw new Error("a service policy needs CURVE on the broker endpoint");
    }
    const servicePolicy = options.curve ? options.servicePolicy ?? new ServicePolicy() : undefined;
    const listener = await listenRouter(options.endpoint ?? "tcp://127.0.0.1:9797", {
      label: "broker",
      ...(options.curve ? { curve: options.curve } : {}),
      ...(options.transport ? { transport: options.transport } : {}),
      ...(options.onListenerEvent ? { onListenerEvent: options.onListenerEvent } : {}),
      ...(options.wireHeartbeat ? { wireHeartbeat: options.wireHeartbeat } : {}),
      ...(options.handover ? { handover: true } : {}),
      // The broker forwards or drops most of what it reads; Broker.handle copies what it keeps.
      borrowFrames: true,
      maxMessageSize: maxBytes,
      // The same count as a large message the broker itself sees (libzmq delivers those).
      onOversized: () => observer.drop?.("message too large"),
      maxConnections: options.maxConnections ?? 10_000,
      maxBufferedOutputBytes: options.maxBufferedOutputBytes ?? 256 * 1024 * 1024,
      ...(options.onLimit ? { onLimit: options.onLimit } : {}),
    });
    const socket = listener.socket;
    const broker = new Broker(
      (identity, frames) => {
        // A ROUTER never blocks: a message to a peer that is gone or full is dropped.
        if (!socket.closed && !socket.trySendAfter(identity, frames)) {
          observer.drop?.("send failed");
        }
      },
      { ...options, maxMessageBytes: maxBytes, ...(servicePolicy ? { servicePolicy } : {}) },
      {
        ...observer,
        // The peer's address, looked up while its connection (and the message) is at hand.
        drop: (reason, from) => {
          const address = from && socket.peerAddress?.(from.id);
          observer.drop?.(reason, address ? { ...from, address } : from);
        },
      },
    );
    // A closed connection ends its worker at once, not when heartbeats run out.
    socket.onPeerGone?.((routingId) => broker.peerGone(routingId));
    const onError = (error: unknown) =>
      observer.drop?.(`socket error: ${(error as Error).message}`);
    return new BrokerServer(listener, broker, options.tickMs ?? 250, onError);
  }

  async #run(): Promise<void> {
    while (!this.#socket.closed) {
      try {
        await this.#socket.drain((message, peerKey) => this.broker.handle(message, peerKey));
      } catch (error) {
        // A socket error must not take the broker down: report it and read on.
        this.#onError(error);
      }
    }
    this.#loopEnded = true;
  }

  /** Sends DISCONNECT to every worker, fails queued requests, closes the socket. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.broker.shutdown();
    // Linger (200 ms) lets the DISCONNECTs and error replies already queued go out.
    const closed = this.#listener.close();
    await this.#loop;
    await closed;
  }
}
