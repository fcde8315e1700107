/**
 * What stands in front of a listening socket (the broker's ROUTER, a bus
 * frontend or backend): CURVE with a ZAP allow-list when keys are configured,
 * and a monitor that reports refused handshakes and ended connections so they
 * can be counted. The message size limit is the socket's own ZMQ_MAXMSGSIZE
 * ({@link NativeSocketOptions.maxMessageSize}): libzmq drops the connection of
 * a peer that sends a larger frame, which shows here only as a disconnect.
 *
 * @module
 */
import type { CurveServerKeys } from "./curve.ts";
import {
  ZMQ_EVENT_DISCONNECTED,
  ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL,
  ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL,
} from "./libzmq.ts";
import { type MonitorEvent, SocketMonitor } from "./monitor.ts";
import type { NativeSocket } from "./native_socket.ts";
import { registerZapDomain, type ZapRegistration } from "./zap.ts";

/** libzmq's protocol error codes (zmq.h) that name a CURVE refusal. */
const ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC = 0x11000001;
const ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH = 0x11000002;

/** Something the guard of a listening socket reports. */
export type ListenerEvent =
  | {
    type: "refused";
    /** Label of the endpoint, e.g. "broker", "bus:metric:frontend". */
    endpoint: string;
    reason: string;
    /** Peer address (ZAP refusals) or the local endpoint (handshake failures). */
    address?: string;
    /** The refused client key, when ZAP saw one. */
    key?: string;
  }
  | {
    type: "disconnected";
    endpoint: string;
    /**
     * Why the endpoint dropped the peer, when it did so itself for breaking
     * the protocol (the ZMTP sockets of transport/zmtp/ know; libzmq does not say).
     */
    reason?: string;
    address?: string;
  };

/** Options of {@link ListenerGuard.apply}. */
export interface ListenerSecurity {
  /** Label of the endpoint in events and metrics (keep the set small: it is a label). */
  endpoint: string;
  /** CURVE server keys and allow-list; absent: plaintext (NULL mechanism). */
  curve?: CurveServerKeys;
  /** Receives refusals and disconnects; without it no monitor runs. */
  onEvent?: (event: ListenerEvent) => void;
}

/** Why a handshake failed, from a protocol error code. */
export function handshakeFailure(code: number): string {
  switch (code) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
      return "no CURVE (plaintext or other mechanism)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
      return "bad CURVE handshake (wrong server key?)";
    default:
      return `handshake protocol error 0x${code.toString(16)}`;
  }
}

/** CURVE, ZAP and monitoring of one listening socket. */
export class ListenerGuard {
  #zap?: ZapRegistration;
  #monitor?: SocketMonitor;

  private constructor(zap?: ZapRegistration, monitor?: SocketMonitor) {
    if (zap) this.#zap = zap;
    if (monitor) this.#monitor = monitor;
  }

  /**
   * Configures `socket` (before it binds, before another thread uses it):
   * makes it a CURVE server whose clients the ZAP handler checks, and starts
   * its monitor. Close the guard after the socket.
   */
  static apply(socket: NativeSocket, options: ListenerSecurity): ListenerGuard {
    const { endpoint, curve, onEvent } = options;
    let zap: ZapRegistration | undefined;
    let monitor: SocketMonitor | undefined;
    try {
      if (curve) {
        zap = registerZapDomain({
          endpoint,
          allowedKeys: curve.allowedKeys ?? [],
          ...(onEvent
            ? {
              onRefused: (refusal) =>
                onEvent({
                  type: "refused",
                  endpoint,
                  reason: refusal.reason,
                  address: refusal.address,
                  ...(refusal.key ? { key: refusal.key } : {}),
                }),
            }
            : {}),
        });
        socket.setCurveServer({ secretKey: curve.secretKey, zapDomain: zap.domain });
      }
      if (onEvent) {
        const events = ZMQ_EVENT_DISCONNECTED |
          (curve ? ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL : 0);
        monitor = new SocketMonitor(socket, events, (event: MonitorEvent) => {
          if (event.event === ZMQ_EVENT_DISCONNECTED) {
            onEvent({ type: "disconnected", endpoint });
          } else if (event.event === ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
            onEvent({
              type: "refused",
              endpoint,
              reason: handshakeFailure(event.value),
              address: event.endpoint,
            });
          } else if (event.event === ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            onEvent({
              type: "refused",
              endpoint,
              reason: "handshake not completed",
              address: event.endpoint,
            });
          }
        });
      }
    } catch (error) {
      void zap?.release();
      void monitor?.close();
      throw error;
    }
    return new ListenerGuard(zap, monitor);
  }

  /**
   * Stops the socket's monitor: call while the socket is open and owned by
   * this thread, right before closing it (see monitor.ts for why).
   */
  detach(): void {
    this.#monitor?.stop();
  }

  /**
   * Releases the ZAP domain and stops reading events: call after
   * {@link detach} and after the socket is closed (releasing first would let
   * clients in unchecked while no ZAP handler is bound).
   */
  async close(): Promise<void> {
    await this.#monitor?.close();
    await this.#zap?.release();
  }
}
