/**
 * Direct bindings to libzmq through Deno FFI, for the hot paths where
 * zeromq.js's per-message N-API cost is the bottleneck (pub/sub, the native
 * bus proxy).
 *
 * There is no second copy of libzmq: zeromq.js links libzmq 4.3.5 statically
 * into its addon, which exports every `zmq_*` symbol. Importing zeromq loads
 * the addon; its path is then read from `/proc/self/maps` and opened again
 * with `Deno.dlopen`, which returns the same, already loaded library.
 *
 * Measured on this project's 2-core machine (Deno 2.9.6): a zeromq.js send
 * costs ~2.3 µs and a receive ~4 µs; the same through these bindings ~0.3 µs
 * each. Integers of type `usize` are passed as bigint: Deno's fast FFI path
 * takes them as bigint and falls back to a path 3x slower for numbers.
 *
 * Sockets made here live in one process-wide native context of their own
 * ({@link nativeContext}), separate from zeromq.js's: `inproc://` endpoints
 * connect native sockets with each other, never with zeromq.js sockets.
 *
 * @module
 */
import "zeromq";

/** Socket types (zmq.h). */
export const ZMQ_PAIR = 0;
export const ZMQ_PUB = 1;
export const ZMQ_SUB = 2;
export const ZMQ_DEALER = 5;
export const ZMQ_ROUTER = 6;
export const ZMQ_PULL = 7;
export const ZMQ_PUSH = 8;
export const ZMQ_XPUB = 9;
export const ZMQ_XSUB = 10;

/** Socket options (zmq.h). */
export const ZMQ_ROUTING_ID = 5;
export const ZMQ_SUBSCRIBE = 6;
export const ZMQ_UNSUBSCRIBE = 7;
export const ZMQ_RCVMORE = 13;
export const ZMQ_FD = 14;
export const ZMQ_EVENTS = 15;
export const ZMQ_LINGER = 17;
export const ZMQ_MAXMSGSIZE = 22;
export const ZMQ_ROUTER_HANDOVER = 56;
export const ZMQ_HEARTBEAT_IVL = 75;
export const ZMQ_HEARTBEAT_TTL = 76;
export const ZMQ_HEARTBEAT_TIMEOUT = 77;
export const ZMQ_SNDHWM = 23;
export const ZMQ_RCVHWM = 24;
export const ZMQ_LAST_ENDPOINT = 32;
export const ZMQ_IMMEDIATE = 39;
export const ZMQ_CURVE_SERVER = 47;
export const ZMQ_CURVE_PUBLICKEY = 48;
export const ZMQ_CURVE_SECRETKEY = 49;
export const ZMQ_CURVE_SERVERKEY = 50;
export const ZMQ_ZAP_DOMAIN = 55;
export const ZMQ_HANDSHAKE_IVL = 66;
/** Draft (4.3.2+): a ROUTER delivers an empty message from a peer on connect/disconnect. */
export const ZMQ_ROUTER_NOTIFY = 97;
export const ZMQ_NOTIFY_DISCONNECT = 2;
/** libzmq's draft options (4.3.3+, built into the library we load): bytes read or written per batch. */
export const ZMQ_IN_BATCH_SIZE = 101;
export const ZMQ_OUT_BATCH_SIZE = 102;

/** Socket monitor events (zmq.h, stable since libzmq 4.3). */
export const ZMQ_EVENT_DISCONNECTED = 0x0200;
export const ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL = 0x0800;
export const ZMQ_EVENT_HANDSHAKE_SUCCEEDED = 0x1000;
export const ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL = 0x2000;
export const ZMQ_EVENT_HANDSHAKE_FAILED_AUTH = 0x4000;

/** Send/receive flags and event bits. */
export const ZMQ_DONTWAIT = 1;
export const ZMQ_SNDMORE = 2;
export const ZMQ_POLLIN = 1;
export const ZMQ_POLLOUT = 2;

/** Context options. */
export const ZMQ_IO_THREADS = 1;

/** errno values that callers act on (Linux). */
export const EAGAIN = 11;
export const EINTR = 4;
/** ZMQ_HAUSNUMERO + 53. */
export const ETERM = 156384712 + 53;

const ERRNO_CODES: Record<number, string> = {
  2: "ENOENT",
  4: "EINTR",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  19: "ENODEV",
  22: "EINVAL",
  88: "ENOTSOCK",
  24: "EMFILE",
  93: "EPROTONOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  95: "ENOTSUP",
  111: "ECONNREFUSED",
  156384763: "EFSM",
  156384764: "ENOCOMPATPROTO",
  156384765: "ETERM",
  156384766: "EMTHREAD",
};

/** Size of `zmq_msg_t` (64 bytes in zmq.h). */
export const ZMQ_MSG_T_SIZE = 64;

const symbols = {
  zmq_version: { parameters: ["buffer", "buffer", "buffer"], result: "void" },
  zmq_ctx_new: { parameters: [], result: "pointer" },
  zmq_ctx_set: { parameters: ["pointer", "i32", "i32"], result: "i32" },
  zmq_socket: { parameters: ["pointer", "i32"], result: "pointer" },
  zmq_close: { parameters: ["pointer"], result: "i32" },
  zmq_bind: { parameters: ["pointer", "buffer"], result: "i32" },
  zmq_connect: { parameters: ["pointer", "buffer"], result: "i32" },
  zmq_unbind: { parameters: ["pointer", "buffer"], result: "i32" },
  zmq_setsockopt: { parameters: ["pointer", "i32", "buffer", "usize"], result: "i32" },
  zmq_getsockopt: { parameters: ["pointer", "i32", "buffer", "buffer"], result: "i32" },
  zmq_send: { parameters: ["pointer", "buffer", "usize", "i32"], result: "i32" },
  zmq_msg_init: { parameters: ["buffer"], result: "i32" },
  zmq_msg_recv: { parameters: ["buffer", "pointer", "i32"], result: "i32" },
  zmq_msg_data: { parameters: ["buffer"], result: "usize" },
  zmq_msg_more: { parameters: ["buffer"], result: "i32" },
  zmq_msg_close: { parameters: ["buffer"], result: "i32" },
  /** A metadata property of a received message ("User-Id": the ZAP user id). */
  zmq_msg_gets: { parameters: ["buffer", "buffer"], result: "pointer" },
  /** Runs until TERMINATE on the control socket: on a helper thread, off the event loop. */
  zmq_proxy_steerable: {
    parameters: ["pointer", "pointer", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  zmq_socket_monitor: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  zmq_has: { parameters: ["buffer"], result: "i32" },
  zmq_curve_keypair: { parameters: ["buffer", "buffer"], result: "i32" },
  zmq_curve_public: { parameters: ["buffer", "buffer"], result: "i32" },
  zmq_errno: { parameters: [], result: "i32" },
  zmq_strerror: { parameters: ["i32"], result: "pointer" },
} as const;

const libcSymbols = {
  memcpy: { parameters: ["buffer", "usize", "usize"], result: "void" },
} as const;

/** The libzmq functions bound here. */
export type Libzmq = Deno.DynamicLibrary<typeof symbols>["symbols"];
/** The libc functions bound here. */
export type Libc = Deno.DynamicLibrary<typeof libcSymbols>["symbols"];

/** Raised when libzmq cannot be located or opened. */
export class LibzmqLoadError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LibzmqLoadError";
  }
}

/** A failed libzmq call, with its errno and symbolic code. */
export class ZmqError extends Error {
  readonly errno: number;
  readonly code: string;
  constructor(operation: string, errno: number, options?: ErrorOptions) {
    super(`${operation} failed: ${strerror(errno)} (${codeOf(errno)})`, options);
    this.name = "ZmqError";
    this.errno = errno;
    this.code = codeOf(errno);
  }
}

let lib: Libzmq | undefined;
let libc: Libc | undefined;

/** Path of zeromq.js's addon as mapped into this process. */
export function addonPath(): string {
  let maps: string;
  try {
    maps = Deno.readTextFileSync("/proc/self/maps");
  } catch (error) {
    throw new LibzmqLoadError(
      "cannot read /proc/self/maps to locate zeromq's addon (Linux only)",
      { cause: error },
    );
  }
  for (const line of maps.split("\n")) {
    const path = line.split(/\s+/)[5];
    if (path?.endsWith("addon.node") && path.includes("zeromq")) return path;
  }
  throw new LibzmqLoadError(
    "zeromq's addon is not loaded in this process: the npm package 'zeromq' must be importable",
  );
}

/** The libzmq bindings, opened on first use. */
export function libzmq(): Libzmq {
  if (lib) return lib;
  const path = addonPath();
  try {
    lib = Deno.dlopen(path, symbols).symbols;
  } catch (error) {
    throw new LibzmqLoadError(`cannot bind libzmq symbols in ${path}: ${error}`, {
      cause: error,
    });
  }
  return lib;
}

/** libc's memcpy, to copy a received message out of libzmq's memory. */
export function libcMemcpy(): Libc {
  libc ??= Deno.dlopen("libc.so.6", libcSymbols).symbols;
  return libc;
}

/** The libzmq version, e.g. "4.3.5". */
export function zmqVersion(): string {
  const parts = [new Int32Array(1), new Int32Array(1), new Int32Array(1)];
  libzmq().zmq_version(parts[0]!, parts[1]!, parts[2]!);
  return parts.map((p) => p[0]).join(".");
}

/** The symbolic name of an errno value, e.g. "EADDRINUSE". */
export function codeOf(errno: number): string {
  return ERRNO_CODES[errno] ?? `errno ${errno}`;
}

/** libzmq's description of an errno value. */
export function strerror(errno: number): string {
  const pointer = libzmq().zmq_strerror(errno);
  return pointer ? Deno.UnsafePointerView.getCString(pointer) : `errno ${errno}`;
}

/** The errno of the last failed libzmq call on this thread. */
export function lastErrno(): number {
  return libzmq().zmq_errno();
}

let context: Deno.PointerValue | undefined;

/**
 * The process-wide native context, created on first use with one I/O thread
 * (call {@link configureNativeContext} before that to change it). It is never
 * terminated: its threads end with the process.
 */
export function nativeContext(): NonNullable<Deno.PointerValue> {
  if (!context) {
    context = libzmq().zmq_ctx_new();
    if (!context) throw new ZmqError("zmq_ctx_new", lastErrno());
    if (pendingIoThreads !== undefined) {
      libzmq().zmq_ctx_set(context, ZMQ_IO_THREADS, pendingIoThreads);
    }
  }
  return context;
}

let pendingIoThreads: number | undefined;

/** Sets the native context's I/O threads; only before its first socket. */
export function configureNativeContext(options: { ioThreads?: number }): void {
  if (context) throw new Error("The native ZeroMQ context is already in use");
  pendingIoThreads = options.ioThreads;
}

const encoder = new TextEncoder();

/** A NUL-terminated C string. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(text + "\0");
}
