/**
 * The publish/subscribe sockets of the buses, as the buses use them: frames
 * written one at a time from a scratch buffer and read without copying
 * (bus/publisher.ts, bus/subscriber.ts, bus/capture.ts). libzmq implements
 * them (the ZMTP sockets of zmtp/ speak only DEALER and ROUTER); this module
 * is where that is decided, so nothing above transport/ names it.
 *
 * @module
 */
import type { Frames } from "./frames.ts";
import { addonPath, nativeContext, ZMQ_PUB, ZMQ_SUB, ZMQ_XPUB } from "./libzmq.ts";
import {
  type AttachMode,
  type MessageSummary,
  NativeSocket,
  type NativeSocketOptions,
  type RawFrame,
} from "./native_socket.ts";

export type { AttachMode, MessageSummary, RawFrame };

/** Options of {@link openPub} and {@link openSub}. */
export type PubSubOptions = Pick<
  NativeSocketOptions,
  "sendHighWaterMark" | "receiveHighWaterMark" | "linger" | "batchBytes" | "curveClient"
>;

/** What a socket of either side has. */
interface PubSubSocket {
  readonly closed: boolean;
  /** Binds (`@endpoint`) or connects (`>endpoint`, or `fallback`); returns the endpoint attached. */
  attach(endpoint: string, fallback: AttachMode, component: string): string;
  /** Closes; queued output gets `linger` ms (else the socket's own). */
  close(linger?: number): void;
}

/** A PUB: frames of a message written in order, `more` on all but the last. */
export interface PubSocket extends PubSubSocket {
  /** Writes `data[0, length)` as one frame; false when the message was dropped (HWM). */
  sendFrame(data: Uint8Array, more: boolean, length?: number): boolean;
}

/** A SUB: prefix subscriptions, frames read in place, a wait for the next message. */
export interface SubSocket extends PubSubSocket {
  connect(endpoint: string): void;
  subscribe(prefix: Uint8Array): void;
  unsubscribe(prefix: Uint8Array): void;
  /** The next frame, valid until the next read; undefined when none is waiting. */
  tryReceiveFrame(): RawFrame | undefined;
  /** Reads a whole message, copying its first frame's start into `head`. */
  tryReceiveSummary(head: Uint8Array): MessageSummary | undefined;
  /** Resolves once a message may be read; rejects with SocketClosedError once closed. */
  waitReadable(): Promise<void>;
}

/** A new PUB socket. */
export function openPub(options: PubSubOptions = {}): PubSocket {
  return new NativeSocket(ZMQ_PUB, options);
}

/** A new SUB socket. */
export function openSub(options: PubSubOptions = {}): SubSocket {
  return new NativeSocket(ZMQ_SUB, options);
}

/**
 * An XPUB: a publisher that also reads the subscriptions coming upstream
 * (`[1, ...prefix]` to subscribe, `[0, ...prefix]` to unsubscribe), so it can
 * wait until some subscriber wants a topic before sending it.
 */
export interface XPubSocket extends PubSubSocket {
  /** The next subscription message, if one is waiting. */
  tryReceive(): Frames | undefined;
  /** Resolves once a subscription message may be read. */
  waitReadable(): Promise<void>;
  /** Sends a message, waiting while the socket is full. */
  send(frames: Frames): Promise<void>;
}

/** A new XPUB socket. */
export function openXPub(options: PubSubOptions = {}): XPubSocket {
  return new NativeSocket(ZMQ_XPUB, options);
}

/**
 * Waits until the pub/sub sockets this process closed have written what they
 * still queued (or their linger ran out): a process that exits right after a
 * send would otherwise lose the message. Only for a process that is done with
 * them: it ends libzmq's context.
 */
export async function flushClosedSockets(): Promise<void> {
  const lib = Deno.dlopen(addonPath(), {
    zmq_ctx_term: { parameters: ["pointer"], result: "i32", nonblocking: true },
  });
  try {
    await lib.symbols.zmq_ctx_term(nativeContext());
  } finally {
    lib.close();
  }
}
