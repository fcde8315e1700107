/**
 * The forwarding half of a bus: an XSUB frontend (publishers connect) joined
 * to an XPUB backend (subscribers connect) by libzmq's own
 * `zmq_proxy_steerable`, which runs on a helper thread through a non-blocking
 * FFI call, so no message passes through JavaScript. zeromq.js's `Proxy` is
 * not used because it has no capture socket.
 *
 * An optional capture PUB gets a copy of every message in both directions
 * (publications, and subscriptions flowing upstream). Being a PUB it drops
 * at its high-water mark rather than stall the proxy. It binds an `inproc://`
 * endpoint for in-process readers (see capture.ts) and, when configured, an
 * endpoint of its own for external taps.
 *
 * The proxy is steered over an inproc PAIR socket: STATISTICS returns eight
 * counters, TERMINATE stops it.
 *
 * @module
 */
import type { CurveServerKeys } from "./curve.ts";
import { type ListenerEvent, ListenerGuard } from "./guard.ts";
import { libzmq, ZMQ_PAIR, ZMQ_PUB, ZMQ_XPUB, ZMQ_XSUB } from "./libzmq.ts";
import { NativeSocket } from "./native_socket.ts";
import { waitAtMost } from "../support/wait_at_most.ts";

/**
 * Counters of one side of the proxy since it started. libzmq 4.3.5 counts
 * frames (message parts), not messages: a two-frame `[topic, payload]`
 * message counts 2, a plantd single-frame message 1.
 */
export interface SideStatistics {
  framesIn: number;
  bytesIn: number;
  framesOut: number;
  bytesOut: number;
}

/**
 * The proxy's counters. `frontend.framesIn` is what publishers sent,
 * `backend.framesOut` what was handed to the XPUB (once, whatever the number
 * of subscribers), `backend.framesIn` the subscription messages (one frame
 * each) that flowed upstream.
 */
export interface ProxyStatistics {
  frontend: SideStatistics;
  backend: SideStatistics;
}

/** Options of {@link BusProxy.start}. */
export interface BusProxyOptions {
  /** Name used in errors and inproc endpoint names. */
  name: string;
  /** Where publishers connect; bound unless prefixed with `>`. */
  frontend: string;
  /** Where subscribers connect; bound unless prefixed with `>`. */
  backend: string;
  /** Copy every message to a PUB socket. @default false */
  capture?: boolean;
  /** An endpoint for external capture readers; bound unless prefixed with `>`. */
  captureEndpoint?: string;
  /** XPUB send high-water mark, per subscriber; 0 = none. @default 1000 */
  sendHighWaterMark?: number;
  /** XSUB receive high-water mark, per publisher; 0 = none. @default 1000 */
  receiveHighWaterMark?: number;
  /** Capture PUB high-water mark, per capture reader; 0 = none. @default 10000 */
  captureHighWaterMark?: number;
  /**
   * Largest frame a publisher may send to the frontend (ZMQ_MAXMSGSIZE): a
   * publisher sending more is disconnected by libzmq. @default 16 MiB
   */
  maxMessageBytes?: number;
  /** Largest subscription frame accepted from a subscriber or capture reader. @default 64 KiB */
  maxSubscriptionBytes?: number;
  /** CURVE on the frontend, backend and capture endpoint. @default plaintext */
  curve?: CurveServerKeys;
  /** Bytes moved per system call on each connection (ZMQ_IN/OUT_BATCH_SIZE). @default 8192 */
  batchBytes?: number;
  /**
   * Refused peers and ended connections, labelled `bus:<name>:frontend`,
   * `bus:<name>:backend`, `bus:<name>:capture`.
   */
  onListenerEvent?: (event: ListenerEvent) => void;
}

/** Default high-water marks (libzmq's 1000 for the bus sockets). */
export const DEFAULT_BUS_HWM = 1000;
export const DEFAULT_CAPTURE_HWM = 10_000;
/** Default size limits of bus endpoints. */
export const DEFAULT_BUS_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
export const DEFAULT_BUS_MAX_SUBSCRIPTION_BYTES = 64 * 1024;

/** Bound on a control round trip; the proxy answers within microseconds when alive. */
const CONTROL_TIMEOUT_MS = 2000;

const encoder = new TextEncoder();
const STATISTICS = encoder.encode("STATISTICS");
const TERMINATE = encoder.encode("TERMINATE");

let instances = 0;

/** Raised when the proxy does not answer on its control socket. */
export class ProxyControlError extends Error {
  constructor(bus: string, what: string) {
    super(`bus '${bus}': proxy did not answer ${what} within ${CONTROL_TIMEOUT_MS} ms`);
    this.name = "ProxyControlError";
  }
}

/** Events a proxy reports; the owner decides what to log. */
export type ProxyEvent = { type: "exited"; code: number; restarting: boolean };

/** A running native XSUB/XPUB proxy. */
export class BusProxy {
  readonly name: string;
  /** Endpoints as bound (real ports) or connected. */
  readonly frontend: string;
  readonly backend: string;
  /** Endpoint for external capture readers, when configured. */
  readonly captureEndpoint?: string;
  /** In-process capture endpoint, when capture is on. */
  readonly captureInproc?: string;
  #sockets: NativeSocket[];
  #guards: ListenerGuard[];
  #front: NativeSocket;
  #back: NativeSocket;
  #capture?: NativeSocket;
  #control: NativeSocket;
  #controller: NativeSocket;
  #running = false;
  #stopping = false;
  #done: Promise<void>;
  #restarts = 0;
  #base: ProxyStatistics = emptyStatistics();
  #last: ProxyStatistics = emptyStatistics();
  #lock: Promise<unknown> = Promise.resolve();
  #onEvent: (event: ProxyEvent) => void;

  private constructor(
    name: string,
    sockets: {
      front: NativeSocket;
      back: NativeSocket;
      capture?: NativeSocket;
      control: NativeSocket;
      controller: NativeSocket;
    },
    guards: ListenerGuard[],
    endpoints: { frontend: string; backend: string; capture?: string; captureInproc?: string },
    onEvent: (event: ProxyEvent) => void,
  ) {
    this.#guards = guards;
    this.name = name;
    this.#front = sockets.front;
    this.#back = sockets.back;
    this.#capture = sockets.capture;
    this.#control = sockets.control;
    this.#controller = sockets.controller;
    this.#sockets = [
      sockets.front,
      sockets.back,
      ...(sockets.capture ? [sockets.capture] : []),
      sockets.control,
      sockets.controller,
    ];
    this.frontend = endpoints.frontend;
    this.backend = endpoints.backend;
    if (endpoints.capture) this.captureEndpoint = endpoints.capture;
    if (endpoints.captureInproc) this.captureInproc = endpoints.captureInproc;
    this.#onEvent = onEvent;
    this.#done = this.#run();
  }

  /**
   * Binds (or connects) every socket and starts forwarding. A bind failure is
   * a BindError naming the endpoint; nothing stays open after a failure.
   */
  static start(
    options: BusProxyOptions,
    onEvent: (event: ProxyEvent) => void = () => {},
  ): BusProxy {
    const component = `bus '${options.name}'`;
    const id = `${options.name}-${Deno.pid}-${++instances}`;
    const created: NativeSocket[] = [];
    const guards: ListenerGuard[] = [];
    const make = (
      type: number,
      hwm: { send?: number; receive?: number } = {},
      maxMessageSize?: number,
    ) => {
      const socket = new NativeSocket(type, {
        ...(options.batchBytes !== undefined ? { batchBytes: options.batchBytes } : {}),
        ...(hwm.send !== undefined ? { sendHighWaterMark: hwm.send } : {}),
        ...(hwm.receive !== undefined ? { receiveHighWaterMark: hwm.receive } : {}),
        ...(maxMessageSize !== undefined ? { maxMessageSize } : {}),
      });
      created.push(socket);
      return socket;
    };
    // CURVE, ZAP and the monitor go on before bind and before the proxy thread owns the socket.
    const guard = (socket: NativeSocket, side: string) => {
      guards.push(ListenerGuard.apply(socket, {
        endpoint: `bus:${options.name}:${side}`,
        ...(options.curve ? { curve: options.curve } : {}),
        ...(options.onListenerEvent ? { onEvent: options.onListenerEvent } : {}),
      }));
    };
    const maxSubscription = options.maxSubscriptionBytes ?? DEFAULT_BUS_MAX_SUBSCRIPTION_BYTES;
    try {
      const front = make(
        ZMQ_XSUB,
        { receive: options.receiveHighWaterMark ?? DEFAULT_BUS_HWM },
        options.maxMessageBytes ?? DEFAULT_BUS_MAX_MESSAGE_BYTES,
      );
      const back = make(
        ZMQ_XPUB,
        { send: options.sendHighWaterMark ?? DEFAULT_BUS_HWM },
        maxSubscription,
      );
      guard(front, "frontend");
      guard(back, "backend");
      const frontend = front.attach(options.frontend, "bind", component);
      const backend = back.attach(options.backend, "bind", component);
      let capture: NativeSocket | undefined;
      let captureEndpoint: string | undefined;
      let captureInproc: string | undefined;
      if (options.capture || options.captureEndpoint) {
        capture = make(
          ZMQ_PUB,
          { send: options.captureHighWaterMark ?? DEFAULT_CAPTURE_HWM },
          maxSubscription,
        );
        if (options.captureEndpoint && !options.captureEndpoint.includes("inproc://")) {
          guard(capture, "capture");
        }
        captureInproc = capture.bind(`inproc://plantd-bus-capture-${id}`, component);
        if (options.captureEndpoint) {
          captureEndpoint = capture.attach(options.captureEndpoint, "bind", component);
        }
      }
      const control = make(ZMQ_PAIR);
      const controlEndpoint = control.bind(`inproc://plantd-bus-control-${id}`, component);
      const controller = make(ZMQ_PAIR);
      controller.connect(controlEndpoint);
      return new BusProxy(
        options.name,
        { front, back, ...(capture ? { capture } : {}), control, controller },
        guards,
        {
          frontend,
          backend,
          ...(captureEndpoint ? { capture: captureEndpoint } : {}),
          ...(captureInproc ? { captureInproc } : {}),
        },
        onEvent,
      );
    } catch (error) {
      for (const done of guards) done.detach();
      for (const socket of created) socket.close();
      for (const done of guards) void done.close();
      throw error;
    }
  }

  /** Whether the native proxy loop is running. */
  get running(): boolean {
    return this.#running;
  }

  /** How many times the proxy loop exited on its own and was restarted. */
  get restarts(): number {
    return this.#restarts;
  }

  async #run(): Promise<void> {
    const zmq = libzmq();
    while (!this.#stopping) {
      this.#running = true;
      const code = await zmq.zmq_proxy_steerable(
        this.#front.pointer,
        this.#back.pointer,
        this.#capture?.pointer ?? null,
        this.#control.pointer,
      );
      this.#running = false;
      if (this.#stopping) return;
      // Exited on its own (libzmq error): the sockets are intact, run it again.
      // Its counters restart from zero; keep what was last read.
      this.#base = addStatistics(this.#base, this.#last);
      this.#last = emptyStatistics();
      this.#restarts++;
      const restarting = this.#restarts <= 100;
      this.#onEvent({ type: "exited", code, restarting });
      if (!restarting) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Serialises control round trips: the controller socket is single-threaded. */
  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    const next = this.#lock.then(work, work);
    this.#lock = next.catch(() => {});
    return next;
  }

  async #receiveReply(what: string): Promise<Uint8Array[]> {
    const deadline = Date.now() + CONTROL_TIMEOUT_MS;
    while (true) {
      const frames = this.#controller.tryReceive();
      if (frames) return frames;
      if (Date.now() >= deadline || !this.#running) throw new ProxyControlError(this.name, what);
      await waitAtMost(this.#controller.waitReadable(), deadline - Date.now());
    }
  }

  /**
   * The proxy's counters since this BusProxy started (across restarts of the
   * native loop). When the loop is not running, the last values read.
   */
  statistics(): Promise<ProxyStatistics> {
    return this.#exclusive(async () => {
      if (!this.#running || this.#stopping) return addStatistics(this.#base, this.#last);
      await this.#controller.send([STATISTICS]);
      const frames = await this.#receiveReply("STATISTICS");
      const values = frames.map((frame) =>
        frame.length === 8
          ? Number(new DataView(frame.buffer, frame.byteOffset, 8).getBigUint64(0, true))
          : 0
      );
      this.#last = {
        frontend: {
          framesIn: values[0] ?? 0,
          bytesIn: values[1] ?? 0,
          framesOut: values[2] ?? 0,
          bytesOut: values[3] ?? 0,
        },
        backend: {
          framesIn: values[4] ?? 0,
          bytesIn: values[5] ?? 0,
          framesOut: values[6] ?? 0,
          bytesOut: values[7] ?? 0,
        },
      };
      return addStatistics(this.#base, this.#last);
    });
  }

  /** Stops the proxy and closes its sockets. */
  close(): Promise<void> {
    return this.#exclusive(async () => {
      if (this.#sockets.every((s) => s.closed)) return;
      this.#stopping = true;
      if (this.#running) {
        await this.#controller.send([TERMINATE]);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const stopped = await Promise.race([
          this.#done.then(() => true),
          new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 5000)),
        ]);
        clearTimeout(timer);
        if (!stopped) {
          // Closing sockets a native thread still uses would crash the process.
          throw new Error(`bus '${this.name}': proxy did not stop; its sockets stay open`);
        }
      }
      await this.#done;
      // The proxy thread has let go of the sockets: stop their monitors, then close.
      for (const guard of this.#guards) guard.detach();
      for (const socket of this.#sockets) socket.close();
      for (const guard of this.#guards) await guard.close();
    });
  }
}

/** All counters zero. */
export function emptyStatistics(): ProxyStatistics {
  const side = () => ({ framesIn: 0, bytesIn: 0, framesOut: 0, bytesOut: 0 });
  return { frontend: side(), backend: side() };
}

function addStatistics(a: ProxyStatistics, b: ProxyStatistics): ProxyStatistics {
  const add = (x: SideStatistics, y: SideStatistics): SideStatistics => ({
    framesIn: x.framesIn + y.framesIn,
    bytesIn: x.bytesIn + y.bytesIn,
    framesOut: x.framesOut + y.framesOut,
    bytesOut: x.bytesOut + y.bytesOut,
  });
  return { frontend: add(a.frontend, b.frontend), backend: add(a.backend, b.backend) };
}
