/**
 * The message sockets of Majordomo (the broker's ROUTER, the DEALER of every
 * client and worker) and the one place that picks their implementation:
 * plaintext `tcp://` endpoints use the TypeScript ZMTP sockets of zmtp/
 * (reads and writes on Deno's event loop, no libzmq I/O thread in the path);
 * CURVE and every other transport (`ipc://`, `inproc://`) use libzmq through
 * {@link NativeSocket}. Both speak the same ZMTP 3 on the wire, so either end
 * may be libzmq (a Go client, pyzmq) or this project.
 *
 * @module
 */
import type { CurveClientKeys } from "./curve.ts";
import type { Frames } from "./frames.ts";
import type { HeartbeatOptions } from "./heartbeat.ts";
import type { SendOptions } from "./send_options.ts";
import { ZMQ_DEALER } from "./libzmq.ts";
import { NativeSocket } from "./native_socket.ts";
import { DEALER_MAX_MESSAGE_BYTES, ZmtpDealer } from "./zmtp/dealer.ts";
import { parseTcpEndpoint } from "./zmtp/endpoint.ts";
import { WatchedDealer } from "./watched_dealer.ts";

/** What Majordomo needs of a socket; {@link NativeSocket} and the zmtp/ sockets have it. */
export interface MessageSocket {
  readonly closed: boolean;
  /** Sends without waiting; false when the socket cannot take the message now. */
  trySend(frames: Frames): boolean;
  /** {@link trySend} of `[head, ...frames]`. */
  trySendAfter(head: Uint8Array, frames: Frames): boolean;
  /** Sends, waiting while the socket is full; `options.signal` withdraws a message still waiting. */
  send(frames: Frames, options?: SendOptions): Promise<void>;
  /**
   * A DEALER: whether its connection has completed its handshake (false from
   * the moment it closes, or its heartbeats time out). Undefined where the
   * socket cannot tell (a libzmq DEALER made without `watchConnection`).
   */
  readonly connected?: boolean;
  /**
   * A DEALER: how many connections have completed their handshake so far. A
   * change tells that the connection was replaced (the peer may have
   * restarted), even when it happened between two looks at `connected`.
   * Undefined where `connected` is.
   */
  readonly handshakes?: number;
  /**
   * Calls `onMessage` for every message until the socket closes (see
   * NativeSocket.drain). `peerKey` is the sender's authenticated CURVE public
   * key (Z85) on a CURVE server socket; a plaintext peer has none.
   */
  drain(onMessage: (frames: Frames, peerKey?: string) => void): Promise<void>;
  /** Closes; queued output gets `linger` ms (else the socket's own linger). */
  close(linger?: number): void;
  /**
   * A ROUTER: calls `listener` from within {@link drain}, in order with the
   * peer's messages, with the routing id of each peer whose connection ended.
   * Both implementations can (a libzmq ROUTER when made with
   * `notifyPeerGone`); a half-open connection is not noticed here, only by
   * its silence.
   */
  onPeerGone?(listener: (routingId: Uint8Array) => void): void;
  /**
   * A ROUTER: the address of the peer `routingId` names, where the
   * implementation knows it (the ZMTP one does; libzmq's does not say).
   */
  peerAddress?(routingId: Uint8Array): string | undefined;
}

/** Which implementation a socket uses; "auto" is ZMTP where it can be. */
export type TransportChoice = "auto" | "libzmq";

/** Options of {@link connectDealer}. */
export interface DealerOptions extends HeartbeatOptions {
  linger?: number;
  sendHighWaterMark?: number;
  /** libzmq only (a ZMTP socket hands messages over as they arrive). */
  receiveHighWaterMark?: number;
  routingId?: string | Uint8Array;
  /**
   * ZMQ_IMMEDIATE: nothing is queued while no connection is up; trySend
   * refuses and send waits (withdrawable) instead. @default false
   */
  immediate?: boolean;
  /**
   * libzmq's DEALER: keep `connected` up to date through a socket monitor
   * (ZMTP DEALERs always know it). @default false
   */
  watchConnection?: boolean;
  /**
   * A peer sending a larger frame is disconnected, before a buffer for it is
   * allocated (ZMQ_MAXMSGSIZE). @default DEALER_MAX_MESSAGE_BYTES (64 MiB)
   */
  maxMessageSize?: number;
  curveClient?: CurveClientKeys;
  transport?: TransportChoice;
}

/** Whether `endpoint` gets a TypeScript ZMTP socket rather than libzmq. */
export function usesZmtp(endpoint: string, curve: unknown, transport?: TransportChoice): boolean {
  return transport !== "libzmq" && curve === undefined && parseTcpEndpoint(endpoint) !== undefined;
}

/** A DEALER connected (in the background) to `endpoint`. */
export function connectDealer(endpoint: string, options: DealerOptions = {}): MessageSocket {
  const { curveClient, transport, receiveHighWaterMark, watchConnection: _, ...given } = options;
  const rest = { ...given, maxMessageSize: given.maxMessageSize ?? DEALER_MAX_MESSAGE_BYTES };
  if (usesZmtp(endpoint, curveClient, transport)) {
    const dealer = new ZmtpDealer(rest);
    dealer.connect(endpoint);
    return dealer;
  }
  const socket = new NativeSocket(ZMQ_DEALER, {
    ...rest,
    ...(receiveHighWaterMark !== undefined ? { receiveHighWaterMark } : {}),
    ...(curveClient ? { curveClient } : {}),
  });
  // Watched before it connects, so the first handshake is not missed.
  const watched = options.watchConnection ? new WatchedDealer(socket) : undefined;
  socket.connect(endpoint);
  return watched ?? socket;
}
