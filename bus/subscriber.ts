/**
 * Subscribing to a bus: a SUB socket connected to the bus backend, driven
 * through the native socket layer, with prefix filters that can change at
 * run time and an async iterator of {@link BusMessage}s in either form.
 *
 * For single-frame messages the topic is the longest known prefix the frame
 * starts with; known prefixes are the configured envelopes plus the current
 * subscriptions. Subscribing to `org.plantd.Metric` therefore reads
 * `org.plantd.Metric{"time":…}` as topic `org.plantd.Metric` and the JSON as
 * payload; someone subscribing to `org.plantd.` who wants the same split
 * lists the envelopes (`org.plantd.Metric`, …) in `envelopes`.
 *
 * @module
 */
import type { CurveClientKeys } from "../transport/curve.ts";
import { SocketClosedError } from "../transport/closed.ts";
import { openSub, type SubSocket } from "../transport/pubsub.ts";
import { type BusMessage, PrefixSet, startsWith, toBytes } from "./envelope.ts";
import { BUS_BATCH_BYTES } from "./socket_options.ts";

const decoder = new TextDecoder();

/** Options of {@link Subscriber}. */
export interface SubscriberOptions {
  /** Name of the bus, reported in every message. @default "bus" */
  bus?: string;
  /** Prefix filters to start with; "" is everything. @default [] (nothing until subscribe()) */
  topics?: Iterable<string>;
  /** Known envelopes, for splitting single-frame messages. @default [] */
  envelopes?: Iterable<string>;
  /** ZMQ_RCVHWM; 0 = none. @default 1000 */
  receiveHighWaterMark?: number;
  /** CURVE keys, for a bus that requires CURVE. @default plaintext */
  curve?: CurveClientKeys;
}

/** Reads messages from a bus backend. */
export class Subscriber {
  readonly bus: string;
  /** Where it connected (or bound, with a `@` prefix). */
  readonly endpoint: string;
  #socket: SubSocket;
  #prefixes: PrefixSet;
  #subscriptions = new Map<string, number>();
  #received = 0;

  /**
   * Connects to `endpoint` (a bus backend). `@endpoint` binds instead, for
   * publishers that connect directly, without a bus.
   */
  constructor(endpoint: string, options: SubscriberOptions = {}) {
    this.bus = options.bus ?? "bus";
    this.#prefixes = new PrefixSet(options.envelopes ?? []);
    this.#socket = openSub({
      batchBytes: BUS_BATCH_BYTES,
      ...(options.receiveHighWaterMark !== undefined
        ? { receiveHighWaterMark: options.receiveHighWaterMark }
        : {}),
      ...(options.curve ? { curveClient: options.curve } : {}),
    });
    try {
      for (const topic of options.topics ?? []) this.subscribe(topic);
      this.endpoint = this.#socket.attach(endpoint, "connect", "subscriber");
    } catch (error) {
      this.#socket.close();
      throw error;
    }
  }

  /**
   * Also reads from `endpoint` (`@` binds): for direct PUB-SUB with several
   * publishers. Messages from all endpoints are reported with this bus name.
   */
  connect(endpoint: string): string {
    return this.#socket.attach(endpoint, "connect", "subscriber");
  }

  /** Messages read so far. */
  get received(): number {
    return this.#received;
  }

  get closed(): boolean {
    return this.#socket.closed;
  }

  /** Current prefix filters. */
  get subscriptions(): string[] {
    return [...this.#subscriptions.keys()];
  }

  /**
   * Adds a prefix filter; "" receives everything. The bus learns of it
   * asynchronously: messages published before it arrives are not delivered.
   * Subscribing twice needs unsubscribing twice (as in ZeroMQ).
   */
  subscribe(prefix: string): void {
    this.#socket.subscribe(toBytes(prefix));
    this.#subscriptions.set(prefix, (this.#subscriptions.get(prefix) ?? 0) + 1);
    this.#prefixes.add(prefix);
  }

  /** Removes a prefix filter added by {@link subscribe}. */
  unsubscribe(prefix: string): void {
    const uses = this.#subscriptions.get(prefix);
    if (!uses) return;
    this.#socket.unsubscribe(toBytes(prefix));
    if (uses === 1) this.#subscriptions.delete(prefix);
    else this.#subscriptions.set(prefix, uses - 1);
    this.#prefixes.remove(prefix);
  }

  /**
   * One message if one is queued, else undefined. Same reading as
   * `decodeMessage` (envelope.ts), without intermediate arrays: this is the hot path.
   */
  tryReceive(): BusMessage | undefined {
    const socket = this.#socket;
    const first = socket.tryReceiveFrame();
    if (!first) return undefined;
    this.#received++;
    const { bytes, offset, length } = first;
    if (!first.more) {
      const match = this.#prefixes.match(bytes, length, offset);
      const skip = match ? match.length : 0;
      return {
        bus: this.bus,
        topic: match ? match.text : "",
        payload: bytes.subarray(offset + skip, offset + length),
        form: "single",
      };
    }
    const topic = this.#topicText(bytes, offset, length);
    const second = socket.tryReceiveFrame();
    const payload = second
      ? second.bytes.subarray(second.offset, second.offset + second.length)
      : new Uint8Array(0);
    // Frames beyond the second are not part of the plantd forms: skip them.
    for (let more = second?.more ?? false; more;) more = socket.tryReceiveFrame()?.more ?? false;
    return { bus: this.bus, topic, payload, form: "frames" };
  }

  #lastTopic = { bytes: new Uint8Array(0), text: "" };

  /** A topic frame as text; consecutive messages usually share it, so the last is kept. */
  #topicText(bytes: Uint8Array, offset: number, length: number): string {
    const last = this.#lastTopic;
    if (last.bytes.length === length && startsWith(bytes, last.bytes, length, offset)) {
      return last.text;
    }
    const copy = bytes.slice(offset, offset + length);
    this.#lastTopic = { bytes: copy, text: decoder.decode(copy) };
    return this.#lastTopic.text;
  }

  /**
   * Resolves once a message may be queued (re-check with {@link tryReceive}).
   * Waiting does not consume anything, so it can be raced against a timer.
   */
  waitReadable(): Promise<void> {
    return this.#socket.waitReadable();
  }

  /** The next message; rejects with SocketClosedError once closed. */
  async receive(): Promise<BusMessage> {
    while (true) {
      const message = this.tryReceive();
      if (message) return message;
      await this.#socket.waitReadable();
    }
  }

  /**
   * Waits for at least one message, then returns every queued one, up to
   * `max`: the cheapest way to read a busy bus.
   */
  async receiveBatch(max = 1024): Promise<BusMessage[]> {
    const batch: BusMessage[] = [];
    while (true) {
      while (batch.length < max) {
        const message = this.tryReceive();
        if (!message) break;
        batch.push(message);
      }
      if (batch.length > 0) return batch;
      await this.#socket.waitReadable();
    }
  }

  /** Messages until {@link close}. */
  async *[Symbol.asyncIterator](): AsyncGenerator<BusMessage> {
    try {
      while (!this.closed) {
        const message = this.tryReceive();
        if (message) yield message;
        else await this.#socket.waitReadable();
      }
    } catch (error) {
      if (error instanceof SocketClosedError) return;
      throw error;
    }
  }

  /** Closes the socket; a pending receive or iteration ends. */
  close(): Promise<void> {
    this.#socket.close();
    return Promise.resolve();
  }
}
