/**
 * One subscriber per bus for the whole gateway, shared by every WebSocket:
 * the first listener of a (bus, prefix) subscribes upstream, the last one to
 * leave unsubscribes, and each message is handed to every listener whose
 * prefix it matches.
 *
 * @module
 */
import type { BusMessage } from "../bus/envelope.ts";
import { Subscriber } from "../bus/subscriber.ts";

/**
 * One message as handed to listeners. `json()` is the message's fields after
 * the subscription id, serialised once however many sockets receive it.
 */
export interface Delivery {
  message: BusMessage;
  json(): string;
}

/** Receives the messages of one subscription. */
export type Listener = (delivery: Delivery) => void;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** `"bus":…,"topic":…,"form":…,"payload":…,"encoding":…}` (see docs/websocket.md). */
function messageJson(m: BusMessage): string {
  let payload: string;
  let encoding: "text" | "base64";
  try {
    payload = utf8.decode(m.payload);
    encoding = "text";
  } catch {
    let binary = "";
    for (const byte of m.payload) binary += String.fromCharCode(byte);
    payload = btoa(binary);
    encoding = "base64";
  }
  const rest = JSON.stringify({ bus: m.bus, topic: m.topic, form: m.form, payload, encoding });
  return rest.slice(1);
}

/** Listener calls between yields to the event loop, so fan-out cannot starve HTTP. */
const CALLS_PER_TURN = 20_000;

const encoder = new TextEncoder();
const BATCH = 1024;

function startsWith(bytes: Uint8Array, prefix: Uint8Array, offset = 0): boolean {
  if (bytes.length - offset < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[offset + i] !== prefix[i]) return false;
  return true;
}

interface Route {
  bytes: Uint8Array;
  listeners: Set<Listener>;
}

class BusFeed {
  readonly subscriber: Subscriber;
  readonly routes = new Map<string, Route>();
  #pump: Promise<void>;

  constructor(readonly name: string, endpoint: string, envelopes: string[]) {
    this.subscriber = new Subscriber(endpoint, {
      bus: name,
      envelopes,
      // A bounded backlog: past it the bus drops for this gateway rather than
      // letting fan-out fall minutes behind.
      receiveHighWaterMark: 10_000,
    });
    this.#pump = this.#run();
  }

  async #run(): Promise<void> {
    let calls = 0;
    while (!this.subscriber.closed) {
      let batch: BusMessage[];
      try {
        batch = await this.subscriber.receiveBatch(BATCH);
      } catch {
        return; // closed
      }
      for (const message of batch) {
        calls += this.#dispatch(message);
        if (calls >= CALLS_PER_TURN) {
          calls = 0;
          await new Promise((resolve) => setTimeout(resolve, 0));
        }
      }
    }
  }

  /** Hands `message` to every matching listener; returns how many were called. */
  #dispatch(message: BusMessage): number {
    let calls = 0;
    let json: string | undefined;
    const delivery: Delivery = { message, json: () => json ??= messageJson(message) };
    // The message matches a prefix when its first frame starts with it: topic
    // (and, in the single-frame form, the payload after it) as sent.
    const topic = encoder.encode(message.topic);
    for (const route of this.routes.values()) {
      const prefix = route.bytes;
      let matches: boolean;
      if (prefix.length <= topic.length) matches = startsWith(topic, prefix);
      else {
        matches = message.form === "single" &&
          startsWith(topic, prefix.subarray(0, topic.length)) &&
          startsWith(message.payload, prefix.subarray(topic.length));
      }
      if (!matches) continue;
      for (const listener of route.listeners) listener(delivery);
      calls += route.listeners.size;
    }
    return calls;
  }

  async close(): Promise<void> {
    await this.subscriber.close();
    await this.#pump;
  }
}

/** The gateway's bus subscriptions. */
export class BusHub {
  #feeds = new Map<string, BusFeed>();

  /** `buses`: name to backend endpoint. `envelopes` help split single-frame messages. */
  constructor(buses: Record<string, string>, envelopes: string[] = []) {
    for (const [name, endpoint] of Object.entries(buses)) {
      this.#feeds.set(name, new BusFeed(name, endpoint, envelopes));
    }
  }

  get buses(): string[] {
    return [...this.#feeds.keys()];
  }

  /** Listens to `prefix` on `bus`; returns the function that stops listening. */
  listen(bus: string, prefix: string, listener: Listener): () => void {
    const feed = this.#feeds.get(bus);
    if (!feed) throw new RangeError(`Unknown bus '${bus}'`);
    let route = feed.routes.get(prefix);
    if (!route) {
      route = { bytes: encoder.encode(prefix), listeners: new Set() };
      feed.routes.set(prefix, route);
      feed.subscriber.subscribe(prefix);
    }
    route.listeners.add(listener);
    const current = route;
    return () => {
      if (!current.listeners.delete(listener)) return;
      if (current.listeners.size === 0) {
        feed.routes.delete(prefix);
        feed.subscriber.unsubscribe(prefix);
      }
    };
  }

  /** Listeners across all buses, for metrics. */
  get listeners(): number {
    let n = 0;
    for (const feed of this.#feeds.values()) {
      for (const route of feed.routes.values()) n += route.listeners.size;
    }
    return n;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#feeds.values()].map((f) => f.close()));
  }
}
