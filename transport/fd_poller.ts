/**
 * One blocking `poll(2)` over the ZMQ_FD descriptors of every socket that is
 * waiting to become readable or writable, run off the main thread through a
 * non-blocking FFI call.
 *
 * Why: zeromq.js waits through libuv's `uv_poll`, and Deno's emulation stops
 * after its first callback (denoland/deno#36317), so a pending `receive()` can
 * wait forever. Polling the descriptor ourselves avoids that shim, wakes on the
 * kernel event itself (no timer tick in the latency) and costs no CPU while idle.
 *
 * ZMQ_FD is edge-like: any `getsockopt(ZMQ_EVENTS)` or send on a socket can
 * drain its signal. Callers therefore re-check the socket state after every
 * wake, and after operating on a socket that has a waiter they check whether
 * it became ready and {@link FdPoller.release} the waiter if so. A new waiter
 * for a descriptor the in-flight poll does not watch wakes it through an
 * eventfd so the next poll includes it.
 *
 * @module
 */

const POLLIN = 0x001;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const POLLFD_SIZE = 8;

/**
 * Upper bound on one poll. It is a safety net against a lost edge, not part of
 * the latency path: every real event wakes the poll at once.
 */
const SAFETY_TIMEOUT_MS = 1000;

const symbols = {
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  /** The same poll(2), called on the main thread with timeout 0: a check, never a wait. */
  pollNow: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  read: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];
let libc: Libc | undefined;

function openLibc(): Libc {
  libc ??= Deno.dlopen("libc.so.6", symbols).symbols;
  return libc;
}

/** Multiplexes readiness waits for many descriptors onto one poll thread. */
export class FdPoller {
  #libc: Libc;
  #eventFd: number;
  #waiters = new Map<number, Array<() => void>>();
  #polled = new Set<number>();
  #running = false;
  #inFlight = false;
  #wakePending = false;
  #idle: Array<() => void> = [];
  #one = new BigUint64Array([1n]);
  #drain = new BigUint64Array(1);

  constructor() {
    this.#libc = openLibc();
    this.#eventFd = this.#libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.#eventFd < 0) throw new Error("Cannot create an eventfd for the ZeroMQ poller");
  }

  /** Resolves when `fd` signals, on a wake, or after the safety timeout. */
  wait(fd: number): Promise<void> {
    return new Promise((resolve) => {
      const list = this.#waiters.get(fd);
      if (list) list.push(resolve);
      else this.#waiters.set(fd, [resolve]);
      if (this.#inFlight) {
        if (!this.#polled.has(fd)) this.#wake();
      } else if (!this.#running) {
        this.#run();
      }
    });
  }

  /** True when something waits on `fd`. */
  waiting(fd: number): boolean {
    return this.#waiters.has(fd);
  }

  /**
   * Resolves the waiters of `fd` now. A socket calls this when it finds itself
   * ready after an operation that may have consumed ZeroMQ's edge signal (a
   * send processes pending commands): the poll would not wake for that edge.
   */
  release(fd: number): void {
    const list = this.#waiters.get(fd);
    if (!list) return;
    this.#waiters.delete(fd);
    for (const resolve of list) resolve();
  }

  /**
   * After operating on `fd`'s socket: lets its waiters re-check, since the
   * operation may have consumed the edge their poll waits for. Sockets that can
   * check their own readiness cheaply should prefer {@link release} when ready.
   */
  touch(fd: number): void {
    this.release(fd);
  }

  /** Drops every waiter of `fd` (resolving them) before its socket closes. */
  forget(fd: number): void {
    const list = this.#waiters.get(fd);
    this.#waiters.delete(fd);
    if (this.#inFlight && this.#polled.has(fd)) this.#wake();
    for (const resolve of list ?? []) resolve();
  }

  /** Resolves once no poll is running, so tests can end with no pending op. */
  idle(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    if (this.#inFlight && this.#waiters.size === 0) this.#wake();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #wake(): void {
    if (this.#wakePending) return;
    this.#wakePending = true;
    this.#libc.write(this.#eventFd, this.#one, 8n);
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#waiters.size > 0) {
        const fds = [this.#eventFd, ...this.#waiters.keys()];
        const buffer = new ArrayBuffer(fds.length * POLLFD_SIZE);
        const view = new DataView(buffer);
        fds.forEach((fd, i) => {
          view.setInt32(i * POLLFD_SIZE, fd, true);
          view.setInt16(i * POLLFD_SIZE + 4, POLLIN, true);
        });
        const pollfds = new Uint8Array(buffer);
        // Under load something is usually ready already: a direct zero-timeout
        // poll (~1 µs) finds it without the helper-thread round trip (~25 µs).
        let ready = this.#libc.pollNow(pollfds, BigInt(fds.length), 0);
        if (ready === 0) {
          this.#polled = new Set(fds);
          this.#inFlight = true;
          ready = await this.#libc.poll(pollfds, BigInt(fds.length), SAFETY_TIMEOUT_MS);
          this.#inFlight = false;
          this.#polled.clear();
        }
        if (this.#wakePending || view.getInt16(6, true) !== 0) {
          this.#libc.read(this.#eventFd, this.#drain, 8n);
          this.#wakePending = false;
        }
        // Wake the waiters whose descriptor signaled; on the safety timeout
        // wake everyone to re-check.
        const woken: Array<() => void> = [];
        for (let i = 1; i < fds.length; i++) {
          const fd = fds[i]!;
          const signaled = view.getInt16(i * POLLFD_SIZE + 6, true) !== 0;
          if (ready > 0 && !signaled) continue;
          const list = this.#waiters.get(fd);
          if (!list) continue;
          this.#waiters.delete(fd);
          woken.push(...list);
        }
        for (const resolve of woken) resolve();
        // Let the woken receivers run and re-register before the next poll.
        await Promise.resolve();
        await new Promise<void>((r) => queueMicrotask(r));
      }
    } finally {
      this.#running = false;
      for (const resolve of this.#idle.splice(0)) resolve();
    }
  }
}

let shared: FdPoller | undefined;

/** The process-wide poller: one poll thread for all sockets. */
export function sharedPoller(): FdPoller {
  shared ??= new FdPoller();
  return shared;
}
