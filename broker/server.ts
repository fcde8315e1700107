/**
 * Runs a {@link Broker} on a bound ROUTER socket.
 *
 * @module
 */
import type { CurveServerKeys } from "../transport/curve.ts";
import { type ListenerEvent, ListenerGuard } from "../transport/guard.ts";
import type { HeartbeatOptions } from "../transport/heartbeat.ts";
import { ZMQ_ROUTER } from "../transport/libzmq.ts";
import { type MessageSocket, type TransportChoice, usesZmtp } from "../transport/message_socket.ts";
import { NativeSocket, splitEndpoint } from "../transport/native_socket.ts";
import { ZmtpRouter } from "../transport/zmtp/router.ts";
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
  #guard: ListenerGuard | undefined;
  #timer: ReturnType<typeof setInterval>;
  #loop: Promise<void>;
  #onError: (error: unknown) => void;
  #loopEnded = false;

  private constructor(
    socket: MessageSocket,
    guard: ListenerGuard | undefined,
    endpoint: string,
    broker: Broker,
    tickMs: number,
    onError: (error: unknown) => void,
  ) {
    this.#socket = socket;
    this.#guard = guard;
    this.#onError = onError;
    this.broker = broker;
    this.endpoint = endpoint;
    this.transport = socket instanceof ZmtpRouter ? "zmtp" : "libzmq";
    this.#timer = setInterval(() => broker.tick(), tickMs);
    this.#loop = this.#run();
  }

  /** Whether the endpoint's socket is open and read (false once it closed, for any reason). */
  get serving(): boolean {
    return !this.#socket.closed && !this.#loopEnded;
  }

  /** Binds and starts serving. Throws a BindError when the endpoint is taken or invalid. */
  static start(
    options: BrokerServerOptions = {},
    observer: BrokerObserver = {},
  ): Promise<BrokerServer> {
    const maxBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
    if (options.servicePolicy && !options.curve) {
      // Plaintext peers carry no key a policy could name.
      return Promise.reject(new Error("a service policy needs CURVE on the broker endpoint"));
    }
    const servicePolicy = options.curve ? options.servicePolicy ?? new ServicePolicy() : undefined;
    const requested = options.endpoint ?? "tcp://127.0.0.1:9797";
    const { mode, address } = splitEndpoint(requested, "bind");
    let socket: MessageSocket;
    let endpoint: string;
    let guard: ListenerGuard | undefined;
    if (mode === "bind" && usesZmtp(address, options.curve, options.transport)) {
      const onEvent = options.onListenerEvent;
      const router = ZmtpRouter.bind(address, "broker", {
        linger: 200,
        ...options.wireHeartbeat,
        ...(options.handover ? { handover: true } : {}),
        maxMessageSize: maxBytes,
        // The same count as a large message the broker itself sees (libzmq delivers those).
        onOversized: () => observer.drop?.("message too large"),
        maxConnections: options.maxConnections ?? 10_000,
        maxBufferedOutputBytes: options.maxBufferedOutputBytes ?? 256 * 1024 * 1024,
        ...(options.onLimit ? { onLimit: options.onLimit } : {}),
        ...(onEvent
          ? {
            // Counted as disconnects, as libzmq's monitor reported them; the reason is logged.
            onConnectionEnd: (end) =>
              onEvent({
                type: "disconnected",
                endpoint: "broker",
                ...(end.refused ? { reason: end.reason, address: end.address } : {}),
              }),
          }
          : {}),
      });
      socket = router;
      endpoint = router.endpoint;
    } else {
      const native = new NativeSocket(ZMQ_ROUTER, {
        linger: 200,
        // libzmq drops the connection of a peer that sends a larger frame.
        maxMessageSize: maxBytes,
        sendHighWaterMark: 100_000,
        receiveHighWaterMark: 100_000,
        notifyPeerGone: true,
        ...options.wireHeartbeat,
        ...(options.handover ? { handover: true } : {}),
      });
      try {
        guard = ListenerGuard.apply(native, {
          endpoint: "broker",
          ...(options.curve ? { curve: options.curve } : {}),
          ...(options.onListenerEvent ? { onEvent: options.onListenerEvent } : {}),
        });
        endpoint = native.attach(requested, "bind", "broker");
      } catch (error) {
        guard?.detach();
        native.close();
        return (guard?.close() ?? Promise.resolve()).then(() => Promise.reject(error));
      }
      socket = native;
    }
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
    return Promise.resolve(
      new BrokerServer(socket, guard, endpoint, broker, options.tickMs ?? 250, onError),
    );
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
    this.#guard?.detach();
    this.#socket.close();
    await this.#loop;
    await this.#guard?.close();
  }
}
