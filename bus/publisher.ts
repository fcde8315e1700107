/**
 * Publishing on a bus: a PUB socket connected to the bus frontend, driven
 * through the native socket layer. `publish()` hands the message to ZeroMQ
 * synchronously and returns; there is nothing to await per message, so a
 * loop of publishes is already a batch. ZeroMQ's I/O thread does the writing.
 *
 * A PUB socket never blocks: at its high-water mark (per connected peer) it
 * drops. Publishing faster than the bus and its subscribers can take loses
 * messages rather than stalling the publisher, which is what a control
 * system wants from telemetry.
 *
 * @module
 */
import type { CurveClientKeys } from "../transport/curve.ts";
import { openPub, type PubSocket } from "../transport/pubsub.ts";
import type { MessageForm } from "./envelope.ts";
import { BUS_BATCH_BYTES } from "./socket_options.ts";

/** Options of {@link Publisher}. */
export interface PublisherOptions {
  /**
   * `single`: envelope bytes immediately followed by the payload in one frame,
   * as Go plantd publishes; `frames`: `[topic, payload]`.
   * @default "single"
   */
  form?: MessageForm;
  /** ZMQ_SNDHWM, per connected bus; 0 = none. @default 1000 */
  sendHighWaterMark?: number;
  /** Time `close()` gives ZeroMQ to deliver what is still queued, in ms. @default 1000 */
  linger?: number;
  /** CURVE keys, for a bus that requires CURVE. @default plaintext */
  curve?: CurveClientKeys;
}

const MAX_CACHED_TOPICS = 1024;
const encoder = new TextEncoder();

/** Publishes `(topic, payload)` messages on a bus frontend. */
export class Publisher {
  /** Where it connected (or bound, with a `@` prefix). */
  readonly endpoint: string;
  readonly form: MessageForm;
  #socket: PubSocket;
  #linger: number;
  #topics = new Map<string, Uint8Array>();
  #scratch = new Uint8Array(64 * 1024);
  #published = 0;

  /**
   * Connects to `endpoint` (a bus frontend). `@endpoint` binds instead, for a
   * publisher that subscribers connect to directly, without a bus.
   */
  constructor(endpoint: string, options: PublisherOptions = {}) {
    this.form = options.form ?? "single";
    this.#linger = options.linger ?? 1000;
    this.#socket = openPub({
      batchBytes: BUS_BATCH_BYTES,
      ...(options.sendHighWaterMark !== undefined
        ? { sendHighWaterMark: options.sendHighWaterMark }
        : {}),
      linger: this.#linger,
      ...(options.curve ? { curveClient: options.curve } : {}),
    });
    try {
      this.endpoint = this.#socket.attach(endpoint, "connect", "publisher");
    } catch (error) {
      this.#socket.close(0);
      throw error;
    }
  }

  /** Messages handed to ZeroMQ so far. */
  get published(): number {
    return this.#published;
  }

  get closed(): boolean {
    return this.#socket.closed;
  }

  #topicBytes(topic: string | Uint8Array): Uint8Array {
    if (typeof topic !== "string") return topic;
    let bytes = this.#topics.get(topic);
    if (!bytes) {
      if (this.#topics.size >= MAX_CACHED_TOPICS) this.#topics.clear();
      bytes = encoder.encode(topic);
      this.#topics.set(topic, bytes);
    }
    return bytes;
  }

  #room(bytes: number): Uint8Array {
    if (this.#scratch.length < bytes) {
      this.#scratch = new Uint8Array(Math.max(bytes, this.#scratch.length * 2));
    }
    return this.#scratch;
  }

  /**
   * Publishes one message; returns once ZeroMQ has it (never waits on the
   * network). Strings are sent as UTF-8. `form` overrides the publisher's.
   */
  publish(
    topic: string | Uint8Array,
    payload: string | Uint8Array,
    form: MessageForm = this.form,
  ): void {
    const head = this.#topicBytes(topic);
    const socket = this.#socket;
    if (form === "frames") {
      socket.sendFrame(head, true);
      if (typeof payload === "string") {
        const scratch = this.#room(payload.length * 3);
        const { written } = encoder.encodeInto(payload, scratch);
        socket.sendFrame(scratch, false, written);
      } else {
        socket.sendFrame(payload, false);
      }
    } else {
      const bodyMax = typeof payload === "string" ? payload.length * 3 : payload.length;
      const scratch = this.#room(head.length + bodyMax);
      scratch.set(head, 0);
      let length = head.length;
      if (typeof payload === "string") {
        length += encoder.encodeInto(payload, scratch.subarray(length)).written;
      } else {
        scratch.set(payload, length);
        length += payload.length;
      }
      socket.sendFrame(scratch, false, length);
    }
    this.#published++;
  }

  /**
   * Resolves when everything published is in ZeroMQ's hands, which is at once:
   * `publish()` does not queue in JavaScript. Kept so callers need not know.
   */
  flush(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * Closes the socket. ZeroMQ keeps delivering what is queued for up to the
   * `linger` time, in the background.
   */
  close(): Promise<void> {
    this.#socket.close();
    return Promise.resolve();
  }
}
