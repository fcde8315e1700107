/**
 * The two message forms of a plantd bus, as pure functions over bytes:
 *
 * - single-frame (what Go plantd sends): envelope bytes immediately followed by
 *   the payload, e.g. `org.plantd.Metric{"time":…}`. The frame carries no
 *   boundary between the two, so a reader splits it at the longest known
 *   prefix that matches; JSON is never split with a regular expression.
 * - two-frame: `[topic, payload]`.
 *
 * @module
 */

/** How a message's topic travels: glued to the payload, or in a frame of its own. */
export type MessageForm = "single" | "frames";

/** One message read from a bus. */
export interface BusMessage {
  /** Name of the bus it came from. */
  bus: string;
  /** The envelope or topic. For the single-frame form, the longest known prefix that matched. */
  topic: string;
  /** What followed the topic. A view: `slice()` it to keep it apart from its receive buffer. */
  payload: Uint8Array;
  form: MessageForm;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A prefix {@link PrefixSet.match} found. */
export interface KnownPrefix {
  readonly text: string;
  /** Its length in bytes. */
  readonly length: number;
}

/** A known prefix, as text and bytes. */
interface Prefix extends KnownPrefix {
  bytes: Uint8Array;
  /** How many reasons it is known for (envelope, subscription). */
  uses: number;
}

/** Whether `data` (its `dataLength` bytes from `offset`) starts with `prefix`. */
export function startsWith(
  data: Uint8Array,
  prefix: Uint8Array,
  dataLength = data.length,
  offset = 0,
): boolean {
  const n = prefix.length;
  if (n > dataLength) return false;
  for (let i = 0; i < n; i++) if (data[offset + i] !== prefix[i]) return false;
  return true;
}

/**
 * A set of topic prefixes that finds the longest one a message starts with.
 * Prefixes are reference counted, so the same text can be known both as an
 * envelope and as a subscription and removing one keeps the other.
 */
export class PrefixSet {
  #byText = new Map<string, Prefix>();
  /** Longest first, so the first match is the longest. */
  #ordered: Prefix[] = [];

  constructor(prefixes: Iterable<string> = []) {
    for (const prefix of prefixes) this.add(prefix);
  }

  get size(): number {
    return this.#ordered.length;
  }

  /** Every prefix, longest first. */
  list(): string[] {
    return this.#ordered.map((p) => p.text);
  }

  add(text: string): void {
    const known = this.#byText.get(text);
    if (known) {
      known.uses++;
      return;
    }
    const bytes = encoder.encode(text);
    const prefix = { text, bytes, length: bytes.length, uses: 1 };
    this.#byText.set(text, prefix);
    this.#ordered.push(prefix);
    this.#ordered.sort((a, b) => b.bytes.length - a.bytes.length);
  }

  /** Drops one use of `text`; returns whether it is gone. */
  remove(text: string): boolean {
    const known = this.#byText.get(text);
    if (!known) return false;
    if (--known.uses > 0) return false;
    this.#byText.delete(text);
    this.#ordered = this.#ordered.filter((p) => p !== known);
    return true;
  }

  /**
   * The longest prefix that `data` (its `length` bytes from `offset`) starts
   * with, or undefined.
   */
  match(data: Uint8Array, length = data.length, offset = 0): KnownPrefix | undefined {
    for (const prefix of this.#ordered) {
      if (startsWith(data, prefix.bytes, length, offset)) return prefix;
    }
    return undefined;
  }
}

/** Text or bytes, as bytes. */
export function toBytes(value: string | Uint8Array): Uint8Array {
  return typeof value === "string" ? encoder.encode(value) : value;
}

/** The single-frame form: envelope bytes immediately followed by the payload. */
export function encodeSingle(
  topic: string | Uint8Array,
  payload: string | Uint8Array,
): Uint8Array {
  const head = toBytes(topic);
  const body = toBytes(payload);
  const frame = new Uint8Array(head.length + body.length);
  frame.set(head, 0);
  frame.set(body, head.length);
  return frame;
}

/** The two-frame form `[topic, payload]`. */
export function encodeFrames(
  topic: string | Uint8Array,
  payload: string | Uint8Array,
): Uint8Array[] {
  return [toBytes(topic), toBytes(payload)];
}

/**
 * Reads a bus message in either form. One frame: the topic is the longest of
 * `prefixes` it starts with ("" and the whole frame as payload when none
 * does). Two or more frames: the first is the topic, the second the payload
 * (further frames are not part of the plantd forms and are ignored).
 */
export function decodeMessage(
  frames: readonly Uint8Array[],
  prefixes: PrefixSet,
  bus: string,
): BusMessage {
  if (frames.length >= 2) {
    return {
      bus,
      topic: decoder.decode(frames[0]),
      payload: frames[1]!,
      form: "frames",
    };
  }
  const frame = frames[0] ?? new Uint8Array(0);
  const match = prefixes.match(frame);
  if (!match) return { bus, topic: "", payload: frame, form: "single" };
  return { bus, topic: match.text, payload: frame.subarray(match.length), form: "single" };
}
