/**
 * Readiness waits for the ZMQ_FD descriptors of every socket of the process:
 * one thread (fd_poller_thread.ts) waits in `epoll_wait` on all of them,
 * edge-triggered, and writes the descriptors that signaled to a socket pair
 * whose other end this thread's event loop reads through `node:net`.
 *
 * Why: zeromq.js waits through libuv's `uv_poll`, and Deno's emulation stops
 * after its first callback (denoland/deno#36317), so a pending `receive()` can
 * wait forever. Polling the descriptors ourselves avoids that shim, wakes on
 * the kernel event itself (no timer tick in the latency) and costs no CPU
 * while idle.
 *
 * Why a thread and a socket pair: Deno cannot watch a foreign descriptor, and
 * the other way out, a blocking `poll(2)` through a non-blocking FFI call per
 * wait, cost ~25 µs of CPU per call even when the descriptor was ready at once
 * (measured here); a wake through the socket pair costs ~5 µs, and the thread
 * keeps waiting without being asked again. Registration (`epoll_ctl`) is a
 * plain system call from this thread, safe while the other one waits.
 *
 * ZMQ_FD is edge-triggered: any `getsockopt(ZMQ_EVENTS)`, receive or send on
 * a socket can consume its signal. Callers therefore check the socket's state
 * before waiting and after every wake, and a send on a socket that has a
 * waiter lets the waiter re-check (native_socket.ts). A wake for a descriptor
 * nobody waits on is dropped: its socket checks before its next wait.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { Socket } from "node:net";
import { Worker } from "node:worker_threads";

const EPOLLIN = 0x001;
const EPOLLET = 1 << 31;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const F_GETFL = 3;
const F_SETFL = 4;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
/** Marker from the thread: its once-a-second safety re-check, every waiter re-checks. */
const SAFETY = -1;
/** epoll data of the control descriptor: the thread stops. */
const STOP = -2;
/** `struct epoll_event` is packed on x86-64 (12 bytes), naturally aligned elsewhere. */
const EVENT_BYTES = Deno.build.arch === "x86_64" ? 12 : 16;
const DATA_OFFSET = Deno.build.arch === "x86_64" ? 4 : 8;

const symbols = {
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];
let libc: Libc | undefined;

function openLibc(): Libc {
  libc ??= Deno.dlopen("libc.so.6", symbols).symbols;
  return libc;
}

/** The running thread and the descriptors shared with it. */
interface Engine {
  epollFd: number;
  controlFd: number;
  /** The thread's end of the socket pair (ours is inside `socket`). */
  notifyFd: number;
  socket: Socket;
  /** Referenced while something waits: keeps the process alive as a pending read would. */
  keepAlive: number;
  worker: Worker;
  exited: Promise<void>;
  /** Bytes of a descriptor number split across two reads. */
  partial: Buffer | undefined;
}

/** Multiplexes readiness waits for many descriptors onto one thread. */
export class FdPoller {
  #libc: Libc;
  #waiters = new Map<number, Array<() => void>>();
  #registered = new Set<number>();
  #engine: Engine | undefined;
  #event = new Uint8Array(EVENT_BYTES);
  #eventView = new DataView(this.#event.buffer);

  constructor() {
    this.#libc = openLibc();
  }

  /** Resolves when `fd` signals, on a release, or at the thread's next safety re-check. */
  wait(fd: number): Promise<void> {
    return new Promise((resolve) => {
      const engine = this.#engine ?? this.#start();
      const list = this.#waiters.get(fd);
      if (list) list.push(resolve);
      else this.#waiters.set(fd, [resolve]);
      if (!this.#registered.has(fd)) {
        // Registering reports the descriptor at once if it is readable now.
        this.#control(engine, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLET, fd);
        this.#registered.add(fd);
      }
      if (this.#waiters.size === 1 && list === undefined) Deno.refTimer(engine.keepAlive);
    });
  }

  /** Resolves the waiters of `fd` now. */
  release(fd: number): void {
    const list = this.#waiters.get(fd);
    if (!list) return;
    this.#waiters.delete(fd);
    if (this.#waiters.size === 0 && this.#engine) Deno.unrefTimer(this.#engine.keepAlive);
    for (const resolve of list) resolve();
  }

  /** Drops every waiter of `fd` (resolving them) and stops watching it, before its socket closes. */
  forget(fd: number): void {
    if (this.#registered.delete(fd) && this.#engine) {
      this.#control(this.#engine, EPOLL_CTL_DEL, fd, 0, fd);
    }
    this.release(fd);
  }

  /**
   * Once nothing waits, stops the thread and closes its descriptors (started
   * again by the next wait), so a test ends with no open resource.
   */
  async idle(): Promise<void> {
    const engine = this.#engine;
    if (!engine || this.#waiters.size > 0) return;
    this.#engine = undefined;
    this.#registered.clear();
    engine.worker.ref(); // waiting for its exit must keep the process alive
    this.#libc.write(engine.controlFd, new BigUint64Array([1n]), 8n);
    await engine.exited;
    this.#close(engine);
  }

  /** Frees what the engine holds on this side, once its thread has ended. */
  #close(engine: Engine): void {
    clearInterval(engine.keepAlive);
    engine.socket.destroy();
    for (const fd of [engine.notifyFd, engine.controlFd, engine.epollFd]) this.#libc.close(fd);
  }

  /** Every waiter re-checks its socket. */
  #releaseAll(): void {
    for (const fd of [...this.#waiters.keys()]) this.release(fd);
  }

  #control(engine: Engine, op: number, fd: number, events: number, data: number): void {
    this.#eventView.setUint32(0, events >>> 0, true);
    this.#eventView.setInt32(DATA_OFFSET, data, true);
    this.#eventView.setInt32(DATA_OFFSET + 4, 0, true);
    if (this.#libc.epoll_ctl(engine.epollFd, op, fd, this.#event) !== 0 && op === EPOLL_CTL_ADD) {
      // Not a pollable descriptor: let the caller re-check rather than hang.
      queueMicrotask(() => this.release(fd));
    }
  }

  #start(): Engine {
    const c = this.#libc;
    const epollFd = c.epoll_create1(O_CLOEXEC);
    const controlFd = c.eventfd(0, O_NONBLOCK | O_CLOEXEC);
    const pair = new Int32Array(2);
    if (
      epollFd < 0 || controlFd < 0 ||
      c.socketpair(AF_UNIX, SOCK_STREAM | O_CLOEXEC, 0, new Uint8Array(pair.buffer)) !== 0
    ) {
      throw new Error("Cannot create the ZeroMQ poller's descriptors (epoll, eventfd, socketpair)");
    }
    const [ours, theirs] = [pair[0]!, pair[1]!];
    c.fcntl(ours, F_SETFL, c.fcntl(ours, F_GETFL, 0) | O_NONBLOCK);
    const socket = new Socket({ fd: ours, readable: true, writable: false });
    const worker = new Worker(new URL("./fd_poller_thread.ts", import.meta.url), {
      workerData: {
        epollFd,
        notifyFd: theirs,
        eventBytes: EVENT_BYTES,
        dataOffset: DATA_OFFSET,
      },
    });
    const exited = new Promise<void>((resolve) =>
      worker.once("exit", () => {
        // A thread that ends unasked (it cannot in normal operation) must not
        // leave waits hanging: everyone re-checks, and the next wait starts a
        // new thread.
        if (this.#engine === engine) {
          this.#engine = undefined;
          this.#registered.clear();
          this.#close(engine);
          this.#releaseAll();
        }
        resolve();
      })
    );
    worker.on("error", () => {}); // ends in "exit", handled above
    // Neither keeps the process alive: pending waits do, through a timer that
    // is referenced while any exists (ref() and unref() of a socket made from
    // a descriptor did not keep Deno's event loop alive, tested).
    worker.unref();
    socket.unref();
    // A number under Deno; typed as Node's Timeout here because node: modules are imported.
    const keepAlive = setInterval(() => {}, 2 ** 30) as unknown as number;
    Deno.unrefTimer(keepAlive);
    const engine: Engine = {
      epollFd,
      controlFd,
      notifyFd: theirs,
      socket,
      keepAlive,
      worker,
      exited,
      partial: undefined,
    };
    socket.on("data", (chunk: Buffer) => this.#signaled(engine, chunk));
    this.#control(engine, EPOLL_CTL_ADD, controlFd, EPOLLIN, STOP);
    this.#engine = engine;
    return engine;
  }

  #signaled(engine: Engine, chunk: Buffer): void {
    let bytes = chunk;
    if (engine.partial) {
      bytes = Buffer.concat([engine.partial, chunk]);
      engine.partial = undefined;
    }
    const whole = bytes.length - (bytes.length % 4);
    if (whole < bytes.length) engine.partial = Buffer.from(bytes.subarray(whole));
    for (let offset = 0; offset < whole; offset += 4) {
      const fd = bytes.readInt32LE(offset);
      if (fd === SAFETY) this.#releaseAll();
      else this.release(fd);
    }
  }
}

let shared: FdPoller | undefined;

/** The process-wide poller: one thread for all sockets. */
export function sharedPoller(): FdPoller {
  shared ??= new FdPoller();
  return shared;
}
