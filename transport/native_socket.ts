/**
 * The one way this project uses a ZeroMQ socket: libzmq driven through
 * {@link libzmq} FFI bindings instead of zeromq.js's N-API layer. Every send
 * and receive is a synchronous, non-blocking call (`ZMQ_DONTWAIT`), so nothing
 * native is ever left pending (the Deno defect of denoland/deno#36317, where a
 * pending zeromq.js receive can miss messages forever, cannot occur), and
 * waits go through the {@link FdPoller} on the socket's `ZMQ_FD`.
 *
 * Every socket of the broker, clients, workers and buses is one of these. Received frames are
 * views into 64 KiB slabs: one allocation per slab rather than per frame, so a
 * frame that is kept keeps its slab alive (copy it with `slice()` to let go).
 *
 * @module
 */
import { SocketClosedError } from "./closed.ts";
import { BindError } from "./bind.ts";
import { checkKey, type CurveClientKeys, curveKeyPair, curvePublicKey } from "./curve.ts";
import { type FdPoller, sharedPoller } from "./fd_poller.ts";
import {
  cString,
  EAGAIN,
  EINTR,
  lastErrno,
  libcMemcpy,
  libzmq,
  nativeContext,
  strerror,
  ZMQ_CURVE_PUBLICKEY,
  ZMQ_CURVE_SECRETKEY,
  ZMQ_CURVE_SERVER,
  ZMQ_CURVE_SERVERKEY,
  ZMQ_DONTWAIT,
  ZMQ_EVENTS,
  ZMQ_FD,
  ZMQ_HEARTBEAT_IVL,
  ZMQ_HEARTBEAT_TIMEOUT,
  ZMQ_HEARTBEAT_TTL,
  ZMQ_IMMEDIATE,
  ZMQ_IN_BATCH_SIZE,
  ZMQ_LAST_ENDPOINT,
  ZMQ_LINGER,
  ZMQ_MAXMSGSIZE,
  ZMQ_MSG_T_SIZE,
  ZMQ_NOTIFY_DISCONNECT,
  ZMQ_OUT_BATCH_SIZE,
  ZMQ_POLLIN,
  ZMQ_POLLOUT,
  ZMQ_RCVHWM,
  ZMQ_ROUTER_HANDOVER,
  ZMQ_ROUTER_NOTIFY,
  ZMQ_ROUTING_ID,
  ZMQ_SNDHWM,
  ZMQ_SNDMORE,
  ZMQ_SUBSCRIBE,
  ZMQ_UNSUBSCRIBE,
  ZMQ_ZAP_DOMAIN,
  ZmqError,
} from "./libzmq.ts";
import type { Frames } from "./frames.ts";
import type { HeartbeatOptions } from "./heartbeat.ts";
import type { SendOptions } from "./send_options.ts";

/** Whether an endpoint is bound or connected. */
export type AttachMode = "bind" | "connect";

/**
 * Splits czmq's prefixes off an endpoint: `@` binds, `>` connects, no prefix
 * means `fallback`.
 */
export function splitEndpoint(
  endpoint: string,
  fallback: AttachMode,
): { mode: AttachMode; address: string } {
  if (endpoint.startsWith("@")) return { mode: "bind", address: endpoint.slice(1) };
  if (endpoint.startsWith(">")) return { mode: "connect", address: endpoint.slice(1) };
  return { mode: fallback, address: endpoint };
}

/** Options applied when a {@link NativeSocket} is created. */
export interface NativeSocketOptions extends HeartbeatOptions {
  /** ZMQ_SNDHWM; 0 means no limit. @default 1000 (libzmq's) */
  sendHighWaterMark?: number;
  /** ZMQ_RCVHWM; 0 means no limit. @default 1000 (libzmq's) */
  receiveHighWaterMark?: number;
  /** ZMQ_LINGER in ms, applied at close. @default 0 */
  linger?: number;
  /**
   * ZMQ_IMMEDIATE: messages are queued only to connections that completed
   * their handshake; with none, a send would block (trySend refuses). @default false
   */
  immediate?: boolean;
  /** ZMQ_ROUTING_ID: the identity a ROUTER peer sees (libzmq makes a 5-byte one otherwise). */
  routingId?: string | Uint8Array;
  /** ZMQ_MAXMSGSIZE: a peer sending a larger frame is disconnected. @default no limit */
  maxMessageSize?: number;
  /**
   * ZMQ_IN_BATCH_SIZE and ZMQ_OUT_BATCH_SIZE: how many bytes libzmq reads
   * and writes per system call on each connection (each connection keeps a
   * buffer of this size both ways). @default 8192 (libzmq's)
   */
  batchBytes?: number;
  /** ZMQ_ROUTER_HANDOVER (ROUTER only): a peer with an Identity in use takes it over. */
  handover?: boolean;
  /** CURVE client: every connection of the socket is encrypted to this server key. */
  curveClient?: CurveClientKeys;
  /** CURVE server: connections must complete a CURVE handshake and pass ZAP (zap.ts). */
  curveServer?: CurveServerSocketOptions;
  /**
   * A ROUTER: ZMQ_ROUTER_NOTIFY (a draft option, built into the libzmq we
   * load) for disconnects, so {@link NativeSocket.onPeerGone} hears of each
   * peer whose connection ended after its handshake.
   */
  notifyPeerGone?: boolean;
}

/** The CURVE server options of one socket. */
export interface CurveServerSocketOptions {
  secretKey: string;
  /** ZMQ_ZAP_DOMAIN sent in ZAP requests; the ZAP handler picks the allow-list by it. */
  zapDomain?: string;
}

const SLAB_BYTES = 64 * 1024;

/** The metadata property holding the user id ZAP gave a peer: a CURVE client's Z85 public key. */
const USER_ID = cString("User-Id");

/** Messages {@link NativeSocket.drain} handles before yielding to other microtasks. */
const DRAIN_BATCH = 256;

/**
 * Where libzmq 4.3.5 keeps a message's type, flags and (for "very small
 * messages", at most 33 bytes) its bytes inside `zmq_msg_t` (msg.hpp). Reading
 * them from JavaScript saves three FFI calls per small frame. The layout is
 * verified once at run time ({@link msgLayoutVerified}); if it differs, the
 * FFI calls are used.
 */
const MSG_VSM_DATA = 8;
const MSG_VSM_MAX = 33;
const MSG_TYPE = 42;
const MSG_FLAGS = 43;
const MSG_TYPE_VSM = 101;
const MSG_FLAG_MORE = 1;

let layoutVerified: boolean | undefined;

/**
 * Whether `zmq_msg_t` is laid out as {@link MSG_TYPE} and friends say: checked
 * once by sending a small and a large frame over an inproc pair.
 */
export function msgLayoutVerified(): boolean {
  if (layoutVerified !== undefined) return layoutVerified;
  layoutVerified = false;
  const zmq = libzmq();
  const context = nativeContext();
  const endpoint = cString(`inproc://plantd-msg-layout-${Deno.pid}`);
  const a = zmq.zmq_socket(context, 0);
  const b = zmq.zmq_socket(context, 0);
  const msg = new Uint8Array(new ArrayBuffer(ZMQ_MSG_T_SIZE));
  try {
    if (!a || !b || zmq.zmq_bind(a, endpoint) !== 0 || zmq.zmq_connect(b, endpoint) !== 0) {
      return false;
    }
    const small = Uint8Array.of(7, 8, 9);
    const large = new Uint8Array(100).fill(5);
    if (zmq.zmq_send(b, small, 3n, ZMQ_DONTWAIT | ZMQ_SNDMORE) !== 3) return false;
    if (zmq.zmq_send(b, large, 100n, ZMQ_DONTWAIT) !== 100) return false;
    zmq.zmq_msg_init(msg);
    if (zmq.zmq_msg_recv(msg, a, ZMQ_DONTWAIT) !== 3) return false;
    const smallOk = msg[MSG_TYPE] === MSG_TYPE_VSM && (msg[MSG_FLAGS]! & MSG_FLAG_MORE) === 1 &&
      msg[MSG_VSM_DATA] === 7 && msg[MSG_VSM_DATA + 2] === 9 && zmq.zmq_msg_more(msg) === 1;
    if (zmq.zmq_msg_recv(msg, a, ZMQ_DONTWAIT) !== 100) return false;
    const largeOk = msg[MSG_TYPE] !== MSG_TYPE_VSM && (msg[MSG_FLAGS]! & MSG_FLAG_MORE) === 0 &&
      zmq.zmq_msg_more(msg) === 0;
    layoutVerified = smallOk && largeOk;
    return layoutVerified;
  } finally {
    zmq.zmq_msg_close(msg);
    if (a) zmq.zmq_close(a);
    if (b) zmq.zmq_close(b);
  }
}

/** Frame lengths as bigint (the FFI fast path wants bigint), cached for small sizes. */
const LENGTHS: bigint[] = [];
const CACHED_LENGTHS = 4096;

function bigLength(n: number): bigint {
  if (n >= CACHED_LENGTHS) return BigInt(n);
  return LENGTHS[n] ??= BigInt(n);
}

/** Raised by operations on a socket after {@link NativeSocket.close}. */
export class NativeSocketClosedError extends SocketClosedError {
  constructor() {
    super("Native socket is closed");
    this.name = "NativeSocketClosedError";
  }
}

function bindReason(error: ZmqError): string {
  switch (error.code) {
    case "EADDRINUSE":
      return "address already in use";
    case "EINVAL":
    case "EPROTONOSUPPORT":
    case "ENODEV":
      return "invalid endpoint";
    case "EADDRNOTAVAIL":
      return "address not available on this host";
    default:
      return strerror(error.errno);
  }
}

/** One libzmq socket in the {@link nativeContext}, used from the main thread only. */
export class NativeSocket {
  readonly type: number;
  #socket: NonNullable<Deno.PointerValue>;
  #fd: number;
  #poller: FdPoller;
  #linger: number;
  #closed = false;
  /** A zmq_msg_t, off the V8 heap so it never moves. */
  #msg = new Uint8Array(new ArrayBuffer(ZMQ_MSG_T_SIZE));
  #slab = new Uint8Array(SLAB_BYTES);
  #slabUsed = 0;
  #int = new Int32Array(2);
  #intBytes = new Uint8Array(this.#int.buffer);
  #size = new BigUint64Array(1);
  #sizeBytes = new Uint8Array(this.#size.buffer);
  #summary: MessageSummary = { frames: 0, bytes: 0, headLength: 0, firstFrameBytes: 0 };
  /** Small frames are read from zmq_msg_t directly (see msgLayoutVerified). */
  #inline = msgLayoutVerified();
  /** Ends the wait in progress, if any (see #operated). */
  #kick: (() => void) | undefined;
  /** A CURVE server: {@link drain} reports each message's peer key (see #peerKey). */
  #peerKeys = false;
  /** ZMQ_ROUTER_NOTIFY is on: a lone empty frame after the routing id is libzmq's notice. */
  #notifies = false;
  #onPeerGone: ((routingId: Uint8Array) => void) | undefined;

  constructor(type: number, options: NativeSocketOptions = {}, poller: FdPoller = sharedPoller()) {
    const zmq = libzmq();
    const socket = zmq.zmq_socket(nativeContext(), type);
    if (!socket) throw new ZmqError("zmq_socket", lastErrno());
    this.type = type;
    this.#socket = socket;
    this.#poller = poller;
    this.#linger = options.linger ?? 0;
    if (options.sendHighWaterMark !== undefined) {
      this.setInt(ZMQ_SNDHWM, options.sendHighWaterMark);
    }
    if (options.receiveHighWaterMark !== undefined) {
      this.setInt(ZMQ_RCVHWM, options.receiveHighWaterMark);
    }
    this.setInt(ZMQ_LINGER, this.#linger);
    if (options.batchBytes !== undefined) {
      this.setInt(ZMQ_IN_BATCH_SIZE, options.batchBytes);
      this.setInt(ZMQ_OUT_BATCH_SIZE, options.batchBytes);
    }
    if (options.routingId !== undefined) {
      const id = options.routingId;
      this.#setBytes(ZMQ_ROUTING_ID, typeof id === "string" ? new TextEncoder().encode(id) : id);
    }
    if (options.notifyPeerGone) {
      this.setInt(ZMQ_ROUTER_NOTIFY, ZMQ_NOTIFY_DISCONNECT);
      this.#notifies = true;
    }
    // libzmq has the same heartbeats as the ZMTP sockets (ms; TTL rounded to 100 ms by libzmq).
    if (options.heartbeatIvlMs !== undefined) {
      this.setInt(ZMQ_HEARTBEAT_IVL, options.heartbeatIvlMs);
    }
    if (options.heartbeatTimeoutMs !== undefined) {
      this.setInt(ZMQ_HEARTBEAT_TIMEOUT, options.heartbeatTimeoutMs);
    }
    if (options.heartbeatTtlMs !== undefined) {
      this.setInt(ZMQ_HEARTBEAT_TTL, options.heartbeatTtlMs);
    }
    if (options.handover) this.setInt(ZMQ_ROUTER_HANDOVER, 1);
    if (options.immediate) this.setInt(ZMQ_IMMEDIATE, 1);
    if (options.maxMessageSize !== undefined) {
      const value = new BigInt64Array([BigInt(options.maxMessageSize)]);
      if (zmq.zmq_setsockopt(socket, ZMQ_MAXMSGSIZE, new Uint8Array(value.buffer), 8n) !== 0) {
        throw new ZmqError("zmq_setsockopt(ZMQ_MAXMSGSIZE)", lastErrno());
      }
    }
    try {
      if (options.curveClient) this.setCurveClient(options.curveClient);
      if (options.curveServer) this.setCurveServer(options.curveServer);
    } catch (error) {
      zmq.zmq_close(socket);
      throw error;
    }
    this.#fd = this.getInt(ZMQ_FD);
    zmq.zmq_msg_init(this.#msg);
  }

  /**
   * Makes the socket a CURVE client of the server whose public key is
   * `keys.serverKey` (a fresh key pair when `keys.secretKey` is absent).
   * Applies to connections made after the call.
   */
  setCurveClient(keys: CurveClientKeys): void {
    const serverKey = checkKey(keys.serverKey, "CURVE server key");
    const pair = keys.secretKey
      ? {
        secretKey: checkKey(keys.secretKey, "CURVE secret key"),
        publicKey: keys.publicKey ?? curvePublicKey(keys.secretKey),
      }
      : curveKeyPair();
    this.#setBytes(ZMQ_CURVE_SERVERKEY, cString(serverKey));
    this.#setBytes(ZMQ_CURVE_PUBLICKEY, cString(checkKey(pair.publicKey, "CURVE public key")));
    this.#setBytes(ZMQ_CURVE_SECRETKEY, cString(pair.secretKey));
  }

  /**
   * Makes the socket a CURVE server: peers must speak CURVE to its public key,
   * and, when a ZAP handler is bound in the native context, pass it. Applies
   * to connections accepted after the call: call it before bind.
   */
  setCurveServer(options: CurveServerSocketOptions): void {
    const secretKey = checkKey(options.secretKey, "CURVE secret key");
    if (options.zapDomain !== undefined) {
      this.#setBytes(ZMQ_ZAP_DOMAIN, new TextEncoder().encode(options.zapDomain));
    }
    this.setInt(ZMQ_CURVE_SERVER, 1);
    this.#setBytes(ZMQ_CURVE_SECRETKEY, cString(secretKey));
    this.#peerKeys = true;
  }

  /**
   * The authenticated key of the peer that sent the message just received:
   * the "User-Id" libzmq attaches to every frame of a connection that passed
   * ZAP (zap.ts answers with the client's Z85 public key). Undefined for a
   * peer without one. Reads the last frame received, so call it before the
   * next receive.
   */
  #peerKey(): string | undefined {
    const value = libzmq().zmq_msg_gets(this.#msg, USER_ID);
    if (value === null) return undefined;
    const text = Deno.UnsafePointerView.getCString(value);
    return text === "" ? undefined : text;
  }

  /**
   * Starts libzmq's monitor of this socket: a PAIR socket bound at `endpoint`
   * (an `inproc://` address in the native context) gets the `events` asked for.
   */
  monitor(endpoint: string, events: number): void {
    this.#check();
    if (libzmq().zmq_socket_monitor(this.#socket, cString(endpoint), events) !== 0) {
      throw new ZmqError(`zmq_socket_monitor(${endpoint})`, lastErrno());
    }
  }

  /**
   * Stops the monitor started by {@link monitor}. Call it before closing the
   * socket and before closing the monitor's reader: libzmq sends monitor
   * events with a blocking send, so events of a socket whose reader is gone
   * would stall its I/O thread.
   */
  stopMonitor(): void {
    this.#check();
    if (libzmq().zmq_socket_monitor(this.#socket, null, 0) !== 0) {
      throw new ZmqError("zmq_socket_monitor(stop)", lastErrno());
    }
  }

  /** The libzmq socket, for zmq_proxy; nothing else may use it meanwhile. */
  get pointer(): NonNullable<Deno.PointerValue> {
    return this.#socket;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #check(): void {
    if (this.#closed) throw new NativeSocketClosedError();
  }

  /** Sets an integer option. */
  setInt(option: number, value: number): void {
    this.#check();
    this.#int[0] = value;
    // libzmq returns EINTR when a signal lands mid-call (a profiler, SIGCHLD): retry.
    while (libzmq().zmq_setsockopt(this.#socket, option, this.#intBytes, 4n) !== 0) {
      const errno = lastErrno();
      if (errno !== EINTR) throw new ZmqError(`zmq_setsockopt(${option})`, errno);
    }
  }

  /** Reads an integer option. */
  getInt(option: number): number {
    this.#check();
    this.#size[0] = 4n;
    // ZMQ_EVENTS processes pending commands and can be interrupted by a signal: retry.
    while (libzmq().zmq_getsockopt(this.#socket, option, this.#intBytes, this.#sizeBytes) !== 0) {
      const errno = lastErrno();
      if (errno !== EINTR) throw new ZmqError(`zmq_getsockopt(${option})`, errno);
      this.#size[0] = 4n;
    }
    return this.#int[0]!;
  }

  /** The endpoint last bound, with the real port when `*` or 0 was asked for. */
  get lastEndpoint(): string {
    this.#check();
    const buffer = new Uint8Array(512);
    this.#size[0] = BigInt(buffer.length);
    if (libzmq().zmq_getsockopt(this.#socket, ZMQ_LAST_ENDPOINT, buffer, this.#sizeBytes) !== 0) {
      throw new ZmqError("zmq_getsockopt(ZMQ_LAST_ENDPOINT)", lastErrno());
    }
    const end = buffer.indexOf(0);
    return new TextDecoder().decode(buffer.subarray(0, end < 0 ? Number(this.#size[0]) : end));
  }

  /** Binds; a failure is a {@link BindError} naming `component` and the endpoint. */
  bind(address: string, component: string): string {
    this.#check();
    if (libzmq().zmq_bind(this.#socket, cString(address)) !== 0) {
      const error = new ZmqError(`zmq_bind(${address})`, lastErrno());
      throw new BindError(component, address, bindReason(error), { cause: error });
    }
    return this.lastEndpoint;
  }

  /** Unbinds an endpoint; an `inproc://` one is free again when this returns. */
  unbind(address: string): void {
    this.#check();
    if (libzmq().zmq_unbind(this.#socket, cString(address)) !== 0) {
      throw new ZmqError(`zmq_unbind(${address})`, lastErrno());
    }
  }

  /** Connects (the peer need not be there yet). */
  connect(address: string): void {
    this.#check();
    if (libzmq().zmq_connect(this.#socket, cString(address)) !== 0) {
      throw new ZmqError(`zmq_connect(${address})`, lastErrno());
    }
  }

  /**
   * Binds or connects per the endpoint's `@`/`>` prefix, else `fallback`.
   * Returns the endpoint as bound (real port) or as connected.
   */
  attach(endpoint: string, fallback: AttachMode, component: string): string {
    const { mode, address } = splitEndpoint(endpoint, fallback);
    if (mode === "bind") return this.bind(address, component);
    this.connect(address);
    return address;
  }

  /** Adds a SUB prefix filter. */
  subscribe(prefix: Uint8Array): void {
    this.#setBytes(ZMQ_SUBSCRIBE, prefix);
  }

  /** Removes a SUB prefix filter. */
  unsubscribe(prefix: Uint8Array): void {
    this.#setBytes(ZMQ_UNSUBSCRIBE, prefix);
  }

  #setBytes(option: number, value: Uint8Array): void {
    this.#check();
    while (libzmq().zmq_setsockopt(this.#socket, option, value, BigInt(value.length)) !== 0) {
      const errno = lastErrno();
      if (errno !== EINTR) throw new ZmqError(`zmq_setsockopt(${option})`, errno);
    }
    this.#operated();
  }

  /** ZMQ_EVENTS: bit 1 readable, bit 2 writable. */
  get events(): number {
    return this.getInt(ZMQ_EVENTS);
  }

  /**
   * Sends one frame without waiting. Returns false when the socket cannot
   * take it now (EAGAIN). PUB and XPUB sockets never refuse: at their
   * high-water mark they drop the message. Only the first `length` bytes of
   * `data` are sent.
   */
  sendFrame(data: Uint8Array, more: boolean, length: number = data.length): boolean {
    this.#check();
    return this.#sendOne(data, more ? ZMQ_DONTWAIT | ZMQ_SNDMORE : ZMQ_DONTWAIT, length);
  }

  #sendOne(data: Uint8Array, flags: number, length: number): boolean {
    const zmq = libzmq();
    while (true) {
      if (zmq.zmq_send(this.#socket, data, bigLength(length), flags) >= 0) return true;
      const errno = lastErrno();
      if (errno === EAGAIN) return false;
      if (errno !== EINTR) throw new ZmqError("zmq_send", errno);
    }
  }

  /**
   * Sends a multipart message without waiting; false when the socket could
   * not take its first frame. Once the first frame is taken libzmq takes the
   * rest (messages are atomic).
   */
  trySend(frames: Frames): boolean {
    this.#check();
    const last = frames.length - 1;
    for (let i = 0; i <= last; i++) {
      const f = frames[i]!;
      if (!this.#sendOne(f, i < last ? ZMQ_DONTWAIT | ZMQ_SNDMORE : ZMQ_DONTWAIT, f.length)) {
        if (i === 0) return false;
        throw new ZmqError("zmq_send (later frame)", EAGAIN);
      }
    }
    this.#operated();
    return true;
  }

  /**
   * {@link trySend} of `[head, ...frames]` without building that array (a
   * ROUTER's identity frame before a message).
   */
  trySendAfter(head: Uint8Array, frames: Frames): boolean {
    this.#check();
    const n = frames.length;
    if (!this.#sendOne(head, n > 0 ? ZMQ_DONTWAIT | ZMQ_SNDMORE : ZMQ_DONTWAIT, head.length)) {
      return false;
    }
    for (let i = 0; i < n; i++) {
      const f = frames[i]!;
      if (!this.#sendOne(f, i < n - 1 ? ZMQ_DONTWAIT | ZMQ_SNDMORE : ZMQ_DONTWAIT, f.length)) {
        throw new ZmqError("zmq_send (later frame)", EAGAIN);
      }
    }
    this.#operated();
    return true;
  }

  /**
   * Sends a multipart message, waiting while the socket is full. Aborting
   * `options.signal` ends the wait without sending.
   */
  async send(frames: Frames, options: SendOptions = {}): Promise<void> {
    const { signal, beforeTry } = options;
    while (true) {
      beforeTry?.();
      signal?.throwIfAborted();
      if (this.trySend(frames)) return;
      await this.#waitFor(ZMQ_POLLOUT, signal);
    }
  }

  /** Receives one message if one is queued, else undefined. Never waits. */
  tryReceive(): Frames | undefined {
    this.#check();
    const zmq = libzmq();
    const frames: Frames = [];
    while (true) {
      const size = zmq.zmq_msg_recv(this.#msg, this.#socket, ZMQ_DONTWAIT);
      if (size < 0) {
        const errno = lastErrno();
        if (errno === EINTR) continue;
        if (errno === EAGAIN && frames.length === 0) return undefined;
        throw new ZmqError("zmq_msg_recv", errno);
      }
      frames.push(this.#copyOut(size));
      if (!this.#more()) return frames;
    }
  }

  /** Whether the frame just received has more after it. */
  #more(): boolean {
    return this.#inline
      ? (this.#msg[MSG_FLAGS]! & MSG_FLAG_MORE) !== 0
      : libzmq().zmq_msg_more(this.#msg) !== 0;
  }

  /**
   * Receives the next frame (the first of a message, or the next one of the
   * message being read) without waiting and without allocating per frame: its
   * bytes are copied into a slab and described by the returned object, which
   * the next call reuses. Undefined when nothing is queued. Once a message's
   * first frame has been received, its other frames are always there.
   */
  tryReceiveFrame(): RawFrame | undefined {
    this.#check();
    while (true) {
      const size = libzmq().zmq_msg_recv(this.#msg, this.#socket, ZMQ_DONTWAIT);
      if (size < 0) {
        const errno = lastErrno();
        if (errno === EINTR) continue;
        if (errno === EAGAIN) return undefined;
        throw new ZmqError("zmq_msg_recv", errno);
      }
      const frame = this.#frame;
      if (size > SLAB_BYTES / 4) {
        frame.bytes = new Uint8Array(size);
        frame.offset = 0;
      } else {
        if (SLAB_BYTES - this.#slabUsed < size) {
          this.#slab = new Uint8Array(SLAB_BYTES);
          this.#slabUsed = 0;
        }
        frame.bytes = this.#slab;
        frame.offset = this.#slabUsed;
        this.#slabUsed += size;
      }
      frame.length = size;
      if (size > 0) this.#copyInto(frame.bytes, size, frame.offset);
      frame.more = this.#more();
      return frame;
    }
  }

  #frame: RawFrame = { bytes: new Uint8Array(0), offset: 0, length: 0, more: false };

  /**
   * Receives one message if one is queued and reports only its shape: frame
   * count, total bytes, and the first `head.length` bytes of its first frame
   * copied into `head`. Nothing is allocated. Returns undefined when nothing is
   * queued. The returned object is reused by the next call.
   */
  tryReceiveSummary(head: Uint8Array): MessageSummary | undefined {
    this.#check();
    const zmq = libzmq();
    const summary = this.#summary;
    summary.frames = 0;
    summary.bytes = 0;
    summary.headLength = 0;
    summary.firstFrameBytes = 0;
    while (true) {
      const size = zmq.zmq_msg_recv(this.#msg, this.#socket, ZMQ_DONTWAIT);
      if (size < 0) {
        const errno = lastErrno();
        if (errno === EINTR) continue;
        if (errno === EAGAIN && summary.frames === 0) return undefined;
        throw new ZmqError("zmq_msg_recv", errno);
      }
      if (summary.frames === 0) {
        summary.firstFrameBytes = size;
        const n = Math.min(size, head.length);
        if (n > 0) this.#copyInto(head, n);
        summary.headLength = n;
      }
      summary.frames++;
      summary.bytes += size;
      if (!this.#more()) return summary;
    }
  }

  #copyOut(size: number): Uint8Array {
    let frame: Uint8Array;
    if (size > SLAB_BYTES / 4) {
      // Large frames get their own buffer rather than pinning a slab.
      frame = new Uint8Array(size);
    } else {
      if (SLAB_BYTES - this.#slabUsed < size) {
        this.#slab = new Uint8Array(SLAB_BYTES);
        this.#slabUsed = 0;
      }
      frame = this.#slab.subarray(this.#slabUsed, this.#slabUsed + size);
      this.#slabUsed += size;
    }
    if (size > 0) this.#copyInto(frame, size);
    return frame;
  }

  /** Copies the first `n` bytes of the frame just received into `target` at `offset`. */
  #copyInto(target: Uint8Array, n: number, offset = 0): void {
    const msg = this.#msg;
    if (this.#inline && n <= MSG_VSM_MAX && msg[MSG_TYPE] === MSG_TYPE_VSM) {
      for (let i = 0; i < n; i++) target[offset + i] = msg[MSG_VSM_DATA + i]!;
    } else {
      const into = offset === 0 ? target : target.subarray(offset, offset + n);
      libcMemcpy().memcpy(into, libzmq().zmq_msg_data(msg) as bigint, bigLength(n));
    }
  }

  /** Receives one message, waiting without a pending native call. */
  async receive(): Promise<Frames> {
    while (true) {
      const frames = this.tryReceive();
      if (frames) return frames;
      await this.#waitAfterEmpty();
    }
  }

  /**
   * Calls `onMessage` for every message until the socket closes, without a
   * promise per message: whatever is queued is handled in one go (at most
   * {@link DRAIN_BATCH} messages before other microtasks get a turn), then the
   * socket waits in the poller. A throw from `onMessage` or a socket error
   * ends the loop with that error; closing the socket ends it normally. On a
   * CURVE server socket `peerKey` is the sender's authenticated public key.
   */
  async drain(onMessage: (frames: Frames, peerKey?: string) => void): Promise<void> {
    while (!this.#closed) {
      for (let n = 0; n < DRAIN_BATCH; n++) {
        let frames: Frames | undefined;
        try {
          frames = this.tryReceive();
        } catch (error) {
          if (error instanceof NativeSocketClosedError || this.#closed) return;
          throw error;
        }
        if (!frames) {
          await this.#waitAfterEmpty();
          break;
        }
        if (this.#notifies && frames.length === 2 && frames[1]!.length === 0) {
          // libzmq's disconnect notice; a peer sending one empty frame looks the
          // same, and can only end its own registration by it.
          this.#onPeerGone?.(frames[0]!);
        } else if (this.#peerKeys) onMessage(frames, this.#peerKey());
        else onMessage(frames);
        if (this.#closed) return;
      }
      // A full batch: let the microtasks it queued (resolved requests) run first.
      await Promise.resolve();
    }
  }

  /**
   * Waits in the poller right after a receive found nothing. That receive
   * already processed the socket's pending commands (libzmq does so before
   * answering EAGAIN), so ZMQ_FD signals the next arrival: no ZMQ_EVENTS
   * check (two system calls in libzmq) is needed first. A send on this socket
   * meanwhile kicks the wait (see #operated).
   */
  async #waitAfterEmpty(): Promise<void> {
    this.#check();
    await new Promise<void>((resolve) => {
      this.#kick = resolve;
      this.#poller.wait(this.#fd).then(resolve);
    });
    this.#kick = undefined;
  }

  /**
   * With `notifyPeerGone`: calls `listener` from within {@link drain} with
   * the routing id of every peer whose connection ended, in order with that
   * peer's messages. Without it the socket cannot tell, and never calls it.
   */
  onPeerGone(listener: (routingId: Uint8Array) => void): void {
    this.#onPeerGone = listener;
  }

  /** Messages until the socket closes. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Frames> {
    while (!this.#closed) {
      try {
        yield await this.receive();
      } catch (error) {
        if (error instanceof NativeSocketClosedError || this.#closed) return;
        throw error;
      }
    }
  }

  /** Resolves once a message may be read (re-check with {@link tryReceive}). */
  waitReadable(): Promise<void> {
    return this.#waitFor(ZMQ_POLLIN);
  }

  /** Waits until `event` is set, or `signal` aborts (a withdrawn send must not keep waiting). */
  async #waitFor(event: number, signal?: AbortSignal): Promise<void> {
    while (true) {
      this.#check();
      if ((this.events & event) !== 0 || signal?.aborted) return;
      await new Promise<void>((resolve) => {
        this.#kick = resolve;
        this.#poller.wait(this.#fd).then(resolve);
        signal?.addEventListener("abort", () => resolve(), { once: true });
      });
      this.#kick = undefined;
    }
  }

  /**
   * After an operation on this socket: a wait in progress may have lost
   * ZeroMQ's edge signal to it (libzmq processes pending commands on send),
   * so it re-checks now rather than on the poller's safety timeout.
   */
  #operated(): void {
    const kick = this.#kick;
    if (kick) {
      this.#kick = undefined;
      kick();
    }
  }

  /** Closes the socket; waits in progress end with {@link NativeSocketClosedError}. */
  close(linger?: number): void {
    if (this.#closed) return;
    if (linger !== undefined && linger !== this.#linger) this.setInt(ZMQ_LINGER, linger);
    this.#closed = true;
    this.#poller.forget(this.#fd);
    const zmq = libzmq();
    zmq.zmq_msg_close(this.#msg);
    zmq.zmq_close(this.#socket);
  }
}

/** A frame received by {@link NativeSocket.tryReceiveFrame}: `bytes[offset, offset + length)`. */
export interface RawFrame {
  bytes: Uint8Array;
  offset: number;
  length: number;
  /** Another frame of the same message follows. */
  more: boolean;
}

/** What {@link NativeSocket.tryReceiveSummary} reports about a message. */
export interface MessageSummary {
  frames: number;
  bytes: number;
  /** Bytes of the first frame copied into the caller's head buffer. */
  headLength: number;
  firstFrameBytes: number;
}
