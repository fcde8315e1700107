/**
 * A ROUTER on a listening endpoint (the broker's, the state channel of a
 * broker pair), and the one place that picks its implementation: the
 * TypeScript ZMTP ROUTER on a plaintext `tcp://` endpoint it binds, libzmq's
 * otherwise (CURVE, `ipc://`, a `>` endpoint it connects, or asked for),
 * behind a {@link ListenerGuard} (CURVE with a ZAP allow-list, monitor).
 *
 * @module
 */
import type { CurveServerKeys } from "./curve.ts";
import { type ListenerEvent, ListenerGuard } from "./guard.ts";
import type { HeartbeatOptions } from "./heartbeat.ts";
import { ZMQ_ROUTER } from "./libzmq.ts";
import { type MessageSocket, type TransportChoice, usesZmtp } from "./message_socket.ts";
import { NativeSocket, splitEndpoint } from "./native_socket.ts";
import { ZmtpRouter } from "./zmtp/router.ts";

/** Options of {@link listenRouter}. */
export interface RouterListenerOptions {
  /** Label of the endpoint in errors, events and metrics, e.g. "broker". */
  label: string;
  /** CURVE server keys; absent: plaintext. */
  curve?: CurveServerKeys;
  /** "libzmq" keeps libzmq's ROUTER on a plaintext tcp:// endpoint. @default "auto" */
  transport?: TransportChoice;
  /** Refused peers and ended connections. */
  onListenerEvent?: (event: ListenerEvent) => void;
  /** ZMTP heartbeats on every connection. */
  wireHeartbeat?: HeartbeatOptions;
  /** ZMQ_ROUTER_HANDOVER. @default false */
  handover?: boolean;
  /** Largest message; a larger frame closes its connection. */
  maxMessageSize: number;
  /** Milliseconds queued output gets at close. @default 200 */
  linger?: number;
  /** libzmq: messages queued per peer each way. @default 100000 */
  highWaterMark?: number;
  /** ZMTP: a message over `maxMessageSize` made of smaller frames was discarded. */
  onOversized?: () => void;
  /** ZMTP: connections held at once. @default no limit */
  maxConnections?: number;
  /** ZMTP: output queued for all peers. @default no limit */
  maxBufferedOutputBytes?: number;
  /** ZMTP: a connection or message refused at one of the two limits above. */
  onLimit?: (limit: "connections" | "output") => void;
  /**
   * Frames given to `drain`'s handler may be views valid only while it runs
   * (the ZMTP router lends them; libzmq's are copies anyway): a handler that
   * keeps a frame copies it. @default false
   */
  borrowFrames?: boolean;
}

/** A listening ROUTER. */
export interface RouterListener {
  readonly socket: MessageSocket;
  /** The endpoint actually bound (port resolved when `*` or 0 was asked). */
  readonly endpoint: string;
  readonly transport: "zmtp" | "libzmq";
  /**
   * Closes the socket (its queued output gets the linger); resolves once the
   * guard (ZAP domain, monitor) is released, after the socket closed.
   */
  close(): Promise<void>;
}

/** Binds (or, `>`-prefixed, connects) a ROUTER. Rejects with a BindError when the endpoint is taken or invalid. */
export async function listenRouter(
  requested: string,
  options: RouterListenerOptions,
): Promise<RouterListener> {
  const { mode, address } = splitEndpoint(requested, "bind");
  const linger = options.linger ?? 200;
  if (mode === "bind" && usesZmtp(address, options.curve, options.transport)) {
    const onEvent = options.onListenerEvent;
    const router = ZmtpRouter.bind(address, options.label, {
      linger,
      ...options.wireHeartbeat,
      ...(options.handover ? { handover: true } : {}),
      ...(options.borrowFrames ? { borrowFrames: true } : {}),
      maxMessageSize: options.maxMessageSize,
      ...(options.onOversized ? { onOversized: options.onOversized } : {}),
      ...(options.maxConnections !== undefined ? { maxConnections: options.maxConnections } : {}),
      ...(options.maxBufferedOutputBytes !== undefined
        ? { maxBufferedOutputBytes: options.maxBufferedOutputBytes }
        : {}),
      ...(options.onLimit ? { onLimit: options.onLimit } : {}),
      ...(onEvent
        ? {
          // Counted as disconnects, as libzmq's monitor reports them; the reason is logged.
          onConnectionEnd: (end) =>
            onEvent({
              type: "disconnected",
              endpoint: options.label,
              ...(end.refused ? { reason: end.reason, address: end.address } : {}),
            }),
        }
        : {}),
    });
    return {
      socket: router,
      endpoint: router.endpoint,
      transport: "zmtp",
      close() {
        router.close();
        return Promise.resolve();
      },
    };
  }
  const highWaterMark = options.highWaterMark ?? 100_000;
  const native = new NativeSocket(ZMQ_ROUTER, {
    linger,
    // libzmq drops the connection of a peer that sends a larger frame.
    maxMessageSize: options.maxMessageSize,
    sendHighWaterMark: highWaterMark,
    receiveHighWaterMark: highWaterMark,
    notifyPeerGone: true,
    ...options.wireHeartbeat,
    ...(options.handover ? { handover: true } : {}),
  });
  let guard: ListenerGuard | undefined;
  let endpoint: string;
  try {
    guard = ListenerGuard.apply(native, {
      endpoint: options.label,
      ...(options.curve ? { curve: options.curve } : {}),
      ...(options.onListenerEvent ? { onEvent: options.onListenerEvent } : {}),
    });
    endpoint = native.attach(requested, "bind", options.label);
  } catch (error) {
    guard?.detach();
    native.close();
    await guard?.close();
    throw error;
  }
  const held = guard;
  let closing: Promise<void> | undefined;
  return {
    socket: native,
    endpoint,
    transport: "libzmq",
    close() {
      // The monitor stops while the socket is still open (monitor.ts), then the socket closes.
      closing ??= (() => {
        held.detach();
        native.close();
        return held.close();
      })();
      return closing;
    },
  };
}
