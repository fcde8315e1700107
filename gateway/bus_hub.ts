/**
 * One subscriber per bus for the whole gateway, shared by every WebSocket:
 * the first listener of a (bus, prefix) subscribes upstream, the last one to
 * leave unsubscribes, and each message is handed to every listener whose
 * prefix it matches.
 *
 * With a {@link HubHistory} (gateway/shared/history.ts), the buses it keeps
 * history for are subscribed whole, every message gets an offset, a listener
 * may start from an offset (the missed messages are replayed, then live ones
 * follow without a duplicate or a hole) and listeners hear of gaps. While the
 * history delivers from a shared Redis stream, the bus's own messages go to
 * the history only and listeners receive what the stream hands back.
 *
 * @module
 */
import { type BusMessage, PrefixSet } from "../bus/envelope.ts";
import { Subscriber } from "../bus/subscriber.ts";
import type { CurveClientKeys } from "../transport/curve.ts";
import { nextTurn } from "../support/next_turn.ts";

/**
 * One message as handed to listeners. `json()` is the message's fields after
 * the subscription id (its offset first, when it has one), serialised once
 * however many sockets receive it.
 */
export interface Delivery {
  message: BusMessage;
  /** Position in the bus's history; absent on buses without history. */
  offset?: string;
  json(): string;
  /**
   * `head + json()`, built once per distinct `head`: listeners that pass the
   * same head (sockets with the same subscription id) get the same string.
   */
  framed(head: string): string;
}

/** Receives the messages of one subscription. */
export type Listener = (delivery: Delivery) => void;

/** Why a subscription may have missed messages (docs/websocket.md, `gap`). */
export interface Gap {
  /** Always NOT_RECOVERABLE: the messages are not in the history. */
  code: "NOT_RECOVERABLE";
  message: string;
  /** The offset the subscription asked to resume from, for a resume that failed. */
  from?: string;
}

/** Options of {@link BusHub.listen}. */
export interface ListenOptions {
  /** Last offset the listener has: replay what came after it, then go live. */
  from?: string;
  /** Told when messages may have been missed (resume impossible, history interrupted). */
  onGap?: (gap: Gap) => void;
}

/** Messages replayed from history for a resume. */
export type Replay =
  | { gap?: undefined; messages: { offset: string; message: BusMessage }[]; until: string }
  | { gap: Gap };

/** What the hub needs from a topic history (gateway/shared/history.ts). */
export interface HubHistory {
  /** Buses with history. */
  readonly buses: ReadonlySet<string>;
  /** Connects the history to the hub; called once by the hub's constructor. */
  attach(sink: HistorySink): void;
  /**
   * A message received from `bus`: returns its offset to deliver it now, or
   * null when its delivery will come through {@link HistorySink.deliver}.
   * The payload is a view into a receive buffer: copy what is kept.
   */
  received(bus: string, message: BusMessage): string | null;
  /** The messages after `from` that `matches` accepts, or a gap. */
  replay(
    bus: string,
    from: string,
    matches: (message: BusMessage) => boolean,
  ): Replay | Promise<Replay>;
  /** Orders two offsets of the same history; undefined when they are not comparable. */
  compare(a: string, b: string): number | undefined;
  close(): Promise<void>;
}

/** How a history hands messages to the hub. */
export interface HistorySink {
  /** Delivers a message (from a shared stream) to the listeners of `bus`. */
  deliver(bus: string, message: BusMessage, offset: string): void;
  /** Tells every listener of `bus` that messages may have been missed. */
  gap(bus: string, message: string): void;
  /** Splits a single-frame message at the longest known envelope or subscribed prefix of `bus`. */
  split(bus: string, frame: Uint8Array): BusMessage;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** `"bus":…,"topic":…,"form":…,"payload":…,"encoding":…}` (see docs/websocket.md). */
function messageJson(m: BusMessage, offset?: string): string {
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
  // Offsets are ASCII digits, letters, "-" and ":": nothing to escape.
  return offset === undefined ? rest.slice(1) : `"offset":"${offset}",${rest.slice(1)}`;
}

/** Whether `message` matches the prefix `bytes` (see {@link BusHub.listen}). */
export function matchesPrefix(message: BusMessage, prefix: Uint8Array): boolean {
  // The message matches a prefix when its first frame starts with it: topic
  // (and, in the single-frame form, the payload after it) as sent.
  const topic = encoder.encode(message.topic);
  if (prefix.length <= topic.length) return startsWith(topic, prefix);
  return message.form === "single" &&
    startsWith(topic, prefix.subarray(0, topic.length)) &&
    startsWith(message.payload, prefix.subarray(topic.length));
}

/**
 * Listener calls between yields to the event loop, so fan-out cannot starve
 * HTTP. Each WebSocket send leaves a write for the event loop to do: yielding
 * every 2,000 rather than 20,000 writes them while their frames are still in
 * cache (about 8-10% less CPU per delivery at 100 and 1,000 sockets; 500 was
 * worse again).
 */
const CALLS_PER_TURN = 2_000;

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
  /** Envelopes and subscribed prefixes, to split single frames read back from a stream. */
  readonly prefixes: PrefixSet;
  readonly gapListeners = new Map<Listener, (gap: Gap) => void>();
  #pump: Promise<void>;
  #history: HubHistory | undefined;

  constructor(
    readonly name: string,
    endpoint: string,
    envelopes: string[],
    history: HubHistory | undefined,
    everything: boolean,
    curve?: CurveClientKeys,
    readonly admit?: Admit,
  ) {
    this.subscriber = new Subscriber(endpoint, {
      bus: name,
      envelopes,
      ...(curve ? { curve } : {}),
      // A bounded backlog: past it the bus drops for this gateway rather than
      // letting fan-out fall minutes behind.
      receiveHighWaterMark: 10_000,
    });
    this.prefixes = new PrefixSet(envelopes);
    // History needs every message of the bus, whoever listens; so do buses
    // whose listeners must get what is published right after they start.
    this.#history = history?.buses.has(name) ? history : undefined;
    if (this.#history || everything) this.subscriber.subscribe("");
    this.#pump = this.#run();
  }

  get history(): HubHistory | undefined {
    return this.#history;
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
      const history = this.#history;
      const admit = this.admit;
      for (const message of batch) {
        // Ingress check first: a refused message reaches neither history nor any listener.
        if (admit && !admit(message)) continue;
        if (history) {
          const offset = history.received(this.name, message);
          if (offset !== null) calls += this.dispatch(message, offset);
        } else calls += this.dispatch(message);
        if (calls >= CALLS_PER_TURN) {
          calls = 0;
          await nextTurn();
        }
      }
    }
  }

  /** Hands `message` to every matching listener; returns how many were called. */
  dispatch(message: BusMessage, offset?: string): number {
    let calls = 0;
    const shared = delivery(message, offset);
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
      for (const listener of route.listeners) listener(shared);
      calls += route.listeners.size;
    }
    return calls;
  }

  async close(): Promise<void> {
    await this.subscriber.close();
    await this.#pump;
  }
}

/** Distinct heads a delivery remembers the framed text of (beyond them: built each time). */
const FRAMED_HEADS = 16;

class SharedDelivery implements Delivery {
  #json: string | undefined;
  #head: string | undefined;
  #text = "";
  #texts: Map<string, string> | undefined;

  constructor(readonly message: BusMessage, readonly offset?: string) {}

  json(): string {
    return this.#json ??= messageJson(this.message, this.offset);
  }

  framed(head: string): string {
    // Fan-out to many sockets with one subscription id: the same string
    // object each time (no concatenation, no new string to encode or collect).
    if (head === this.#head) return this.#text;
    let text = this.#texts?.get(head);
    if (text === undefined) {
      text = head + this.json();
      this.#texts ??= new Map();
      if (this.#texts.size < FRAMED_HEADS) this.#texts.set(head, text);
    }
    this.#head = head;
    this.#text = text;
    return text;
  }
}

function delivery(message: BusMessage, offset?: string): Delivery {
  return new SharedDelivery(message, offset);
}

/** Decides whether a message received from a bus goes on (see {@link BusHubOptions.admit}). */
export type Admit = (message: BusMessage) => boolean;

/** Options of {@link BusHub}. */
export interface BusHubOptions {
  /**
   * Per bus, a check of every message received, before history and listeners
   * (gateway/state_bus_gate.ts for the state bus); false drops the message.
   */
  admit?: Record<string, Admit>;
  /** Topic history; the hub owns it and closes it. */
  history?: HubHistory;
  /** CURVE keys for buses that require CURVE. */
  curve?: CurveClientKeys;
  /**
   * Buses read whole from the start. A listener of another bus adds its prefix
   * to the bus's subscriptions, which reach the publishers asynchronously: what
   * is published before they arrive is not delivered. On these buses a new
   * listener gets everything published after it was added.
   */
  everything?: string[];
}

/** The gateway's bus subscriptions. */
export class BusHub {
  #feeds = new Map<string, BusFeed>();
  #history: HubHistory | undefined;

  /** `buses`: name to backend endpoint. `envelopes` help split single-frame messages. */
  constructor(
    buses: Record<string, string>,
    envelopes: string[] = [],
    options: BusHubOptions = {},
  ) {
    this.#history = options.history;
    for (const [name, endpoint] of Object.entries(buses)) {
      this.#feeds.set(
        name,
        new BusFeed(
          name,
          endpoint,
          envelopes,
          options.history,
          options.everything?.includes(name) ?? false,
          options.curve,
          options.admit?.[name],
        ),
      );
    }
    this.#history?.attach({
      deliver: (bus, message, offset) => void this.#feeds.get(bus)?.dispatch(message, offset),
      gap: (bus, message) => {
        const feed = this.#feeds.get(bus);
        if (!feed) return;
        for (const onGap of [...feed.gapListeners.values()]) {
          onGap({ code: "NOT_RECOVERABLE", message });
        }
      },
      split: (bus, frame) => {
        const match = this.#feeds.get(bus)?.prefixes.match(frame);
        return {
          bus,
          topic: match ? match.text : "",
          payload: frame.subarray(match ? match.length : 0),
          form: "single",
        };
      },
    });
  }

  get buses(): string[] {
    return [...this.#feeds.keys()];
  }

  /** Whether `bus` keeps history (its messages carry offsets and can be resumed). */
  hasHistory(bus: string): boolean {
    return this.#feeds.get(bus)?.history !== undefined;
  }

  /**
   * Listens to `prefix` on `bus`; returns the function that stops listening.
   * With `from`, the messages after that offset come first (or a gap when
   * they are gone), then live ones, each exactly once.
   */
  listen(bus: string, prefix: string, listener: Listener, options: ListenOptions = {}): () => void {
    const feed = this.#feeds.get(bus);
    if (!feed) throw new RangeError(`Unknown bus '${bus}'`);
    const { from, onGap } = options;
    const history = feed.history;
    let target = listener;
    let gapTarget = onGap;
    let finish: ((replay: Replay) => void) | undefined;
    let stopped = false;
    if (from !== undefined && !history) {
      onGap?.({ code: "NOT_RECOVERABLE", message: `Bus '${bus}' keeps no history`, from });
    } else if (from !== undefined && history) {
      // Live messages wait until the replay is out; those it covered are dropped.
      const held: Array<Delivery | { gap: Gap }> = [];
      let holding = true;
      target = (d) => holding ? void held.push(d) : listener(d);
      gapTarget = (gap) => holding ? void held.push({ gap }) : onGap?.(gap);
      finish = (replay) => {
        if (stopped) return;
        let until: string | undefined;
        if (replay.gap) onGap?.(replay.gap);
        else {
          for (const { message, offset } of replay.messages) listener(delivery(message, offset));
          until = replay.until;
        }
        for (const item of held) {
          if ("gap" in item) {
            onGap?.(item.gap);
            continue;
          }
          if (until !== undefined && item.offset !== undefined) {
            const order = history.compare(item.offset, until);
            if (order !== undefined && order <= 0) continue;
          }
          listener(item);
        }
        held.length = 0;
        holding = false;
      };
    }
    let route = feed.routes.get(prefix);
    if (!route) {
      route = { bytes: encoder.encode(prefix), listeners: new Set() };
      feed.routes.set(prefix, route);
      feed.prefixes.add(prefix);
      feed.subscriber.subscribe(prefix);
    }
    route.listeners.add(target);
    if (gapTarget) feed.gapListeners.set(target, gapTarget);
    const current = route;
    if (finish && history && from !== undefined) {
      const bytes = current.bytes;
      const failed = (error: unknown): Replay => ({
        gap: {
          code: "NOT_RECOVERABLE",
          message: `History could not be read: ${(error as Error)?.message ?? error}`,
          from,
        },
      });
      let replay: Replay | Promise<Replay>;
      try {
        replay = history.replay(bus, from, (message) => matchesPrefix(message, bytes));
      } catch (error) {
        replay = failed(error);
      }
      if (replay instanceof Promise) replay.then(finish, (error) => finish!(failed(error)));
      else finish(replay);
    }
    return () => {
      stopped = true;
      feed.gapListeners.delete(target);
      if (!current.listeners.delete(target)) return;
      if (current.listeners.size === 0) {
        feed.routes.delete(prefix);
        feed.prefixes.remove(prefix);
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
    await this.#history?.close();
    await Promise.all([...this.#feeds.values()].map((f) => f.close()));
  }
}
