/**
 * Named buses: a {@link BusProxy} plus, when capture is configured, a
 * {@link CaptureCounter} reading its copy of the traffic. {@link BusSet}
 * starts a configured list all or nothing.
 *
 * @module
 */
import type { CurveServerKeys } from "../transport/curve.ts";
import type { ListenerEvent } from "../transport/guard.ts";
import { CaptureCounter, type CaptureTotals, type Count } from "./capture.ts";
import { BusProxy, type ProxyEvent, type ProxyStatistics } from "../transport/proxy.ts";
import { BUS_BATCH_BYTES } from "./socket_options.ts";

/** One bus, as configured. */
export interface BusOptions {
  /** e.g. "metric". */
  name: string;
  /** Where publishers connect, e.g. `tcp://127.0.0.1:13000`; `>` makes the bus connect. */
  frontend: string;
  /** Where subscribers connect, e.g. `tcp://127.0.0.1:13001`; `>` makes the bus connect. */
  backend: string;
  /**
   * Turns capture on: every message is copied to a PUB socket on this endpoint
   * (an `inproc://` one when only the in-process counters are wanted) and
   * counted per topic. @default undefined (no capture)
   */
  capture?: string;
  /** Per-subscriber send high-water mark of the backend; 0 = none. @default 1000 */
  sendHighWaterMark?: number;
  /** Per-publisher receive high-water mark of the frontend; 0 = none. @default 1000 */
  receiveHighWaterMark?: number;
  /** High-water mark of the capture copy; 0 = none. @default 10000 */
  captureHighWaterMark?: number;
  /** Topic prefixes counted separately (capture only). @default [] */
  topics?: readonly string[];
  /** Largest frame a publisher may send; larger ones disconnect it. @default 16 MiB */
  maxMessageBytes?: number;
  /** Largest subscription a subscriber may send. @default 64 KiB */
  maxSubscriptionBytes?: number;
  /** CURVE server keys for every endpoint of the bus. @default plaintext */
  curve?: CurveServerKeys;
  /** Refused peers and ended connections of the bus's endpoints. */
  onListenerEvent?: (event: ListenerEvent) => void;
}

/** What a bus reports; the owner logs it. */
export type BusEvent =
  & { bus: string }
  & (ProxyEvent | { type: "capture-failed"; error: unknown });

/** Counters of a bus at one moment. */
export interface BusSnapshot {
  name: string;
  running: boolean;
  restarts: number;
  statistics: ProxyStatistics;
  capture?: {
    totals: CaptureTotals;
    topics: Map<string, Count>;
    /**
     * Frames the proxy copied that the counter has not read: dropped at the
     * capture high-water mark, or still in flight.
     */
    missedFrames: number;
  };
}

/** A running bus. */
export class Bus {
  readonly name: string;
  #proxy: BusProxy;
  #counter?: CaptureCounter;

  private constructor(proxy: BusProxy, counter?: CaptureCounter) {
    this.name = proxy.name;
    this.#proxy = proxy;
    if (counter) this.#counter = counter;
  }

  /** Binds the bus's endpoints and starts forwarding (and counting). */
  static start(options: BusOptions, onEvent: (event: BusEvent) => void = () => {}): Bus {
    const proxy = BusProxy.start({
      name: options.name,
      batchBytes: BUS_BATCH_BYTES,
      frontend: options.frontend,
      backend: options.backend,
      ...(options.capture ? { capture: true, captureEndpoint: options.capture } : {}),
      ...(options.sendHighWaterMark !== undefined
        ? { sendHighWaterMark: options.sendHighWaterMark }
        : {}),
      ...(options.receiveHighWaterMark !== undefined
        ? { receiveHighWaterMark: options.receiveHighWaterMark }
        : {}),
      ...(options.captureHighWaterMark !== undefined
        ? { captureHighWaterMark: options.captureHighWaterMark }
        : {}),
      ...(options.maxMessageBytes !== undefined
        ? { maxMessageBytes: options.maxMessageBytes }
        : {}),
      ...(options.maxSubscriptionBytes !== undefined
        ? { maxSubscriptionBytes: options.maxSubscriptionBytes }
        : {}),
      ...(options.curve ? { curve: options.curve } : {}),
      ...(options.onListenerEvent ? { onListenerEvent: options.onListenerEvent } : {}),
    }, (event) => onEvent({ bus: options.name, ...event }));
    let counter: CaptureCounter | undefined;
    if (proxy.captureInproc) {
      counter = new CaptureCounter(proxy.captureInproc, {
        topics: options.topics ?? [],
        onFailure: (error) => onEvent({ bus: options.name, type: "capture-failed", error }),
        ...(options.captureHighWaterMark !== undefined
          ? { receiveHighWaterMark: options.captureHighWaterMark }
          : {}),
      });
    }
    return new Bus(proxy, counter);
  }

  /** Frontend endpoint as bound (the real port when 0 or `*` was asked for). */
  get frontend(): string {
    return this.#proxy.frontend;
  }

  /** Backend endpoint as bound. */
  get backend(): string {
    return this.#proxy.backend;
  }

  /** Capture endpoint for external readers, when configured. */
  get capture(): string | undefined {
    return this.#proxy.captureEndpoint;
  }

  /** Whether the proxy is forwarding. */
  get running(): boolean {
    return this.#proxy.running;
  }

  /** The proxy's counters. */
  statistics(): Promise<ProxyStatistics> {
    return this.#proxy.statistics();
  }

  /** Everything at once, for metrics and health. */
  async snapshot(): Promise<BusSnapshot> {
    const statistics = await this.#proxy.statistics();
    const snapshot: BusSnapshot = {
      name: this.name,
      running: this.#proxy.running,
      restarts: this.#proxy.restarts,
      statistics,
    };
    if (this.#counter) {
      const totals = { ...this.#counter.totals };
      const copied = statistics.frontend.framesIn + statistics.backend.framesIn;
      snapshot.capture = {
        totals,
        topics: this.#counter.topics(),
        missedFrames: Math.max(0, copied - totals.frames),
      };
    }
    return snapshot;
  }

  /** Stops counting and forwarding; closes every socket. */
  async close(): Promise<void> {
    await this.#counter?.close();
    await this.#proxy.close();
  }
}

/** The buses of one process. */
export class BusSet {
  readonly buses: readonly Bus[];

  private constructor(buses: Bus[]) {
    this.buses = buses;
  }

  /**
   * Starts every bus; when one fails (a port in use) the ones already started
   * are closed and the error is rethrown.
   */
  static async start(
    list: readonly BusOptions[],
    onEvent: (event: BusEvent) => void = () => {},
  ): Promise<BusSet> {
    const names = new Set<string>();
    for (const options of list) {
      if (names.has(options.name)) throw new Error(`bus '${options.name}' is configured twice`);
      names.add(options.name);
    }
    const started: Bus[] = [];
    try {
      for (const options of list) started.push(Bus.start(options, onEvent));
    } catch (error) {
      for (const bus of started.reverse()) await bus.close();
      throw error;
    }
    return new BusSet(started);
  }

  /** The bus named `name`. */
  get(name: string): Bus | undefined {
    return this.buses.find((bus) => bus.name === name);
  }

  /** Closes every bus, last started first. */
  async close(): Promise<void> {
    for (const bus of [...this.buses].reverse()) await bus.close();
  }
}
