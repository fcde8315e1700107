/**
 * A bus's in-process history (the ring TopicHistory falls back to without
 * Redis) and the offsets both histories use: `<epoch>:<sequence>` for a
 * ring, a Redis stream entry id for the shared history (history.ts).
 *
 * @module
 */
import type { BusMessage } from "../../bus/envelope.ts";
import type { Gap, Replay } from "../bus_hub.ts";

export const REDIS_OFFSET = /^(\d{1,16})-(\d{1,16})$/;
export const RING_OFFSET = /^([0-9a-f]{1,16}):(\d{1,16})$/;

/** Orders two stream ids; undefined when either is not one. */
export function compareStreamIds(a: string, b: string): number | undefined {
  const x = REDIS_OFFSET.exec(a);
  const y = REDIS_OFFSET.exec(b);
  if (!x || !y) return undefined;
  const ms = Number(x[1]) - Number(y[1]);
  return ms !== 0 ? Math.sign(ms) : Math.sign(Number(x[2]) - Number(y[2]));
}

export function gap(message: string, from?: string): { gap: Gap } {
  return { gap: { code: "NOT_RECOVERABLE", message, ...(from !== undefined ? { from } : {}) } };
}

function randomEpoch(): string {
  return crypto.getRandomValues(new Uint32Array(1))[0]!.toString(16).padStart(8, "0");
}

interface Slot {
  seq: number;
  at: number;
  message: BusMessage;
}

/** One bus's in-process history. */
export class Ring {
  #slots: (Slot | undefined)[];
  #next = 1;
  #first = 1;
  epoch = randomEpoch();

  constructor(readonly capacity: number, readonly maxAgeMs: number, readonly now = Date.now) {
    this.#slots = new Array(Math.max(1, capacity));
  }

  /** Keeps a copy of `message`; returns its offset. */
  record(message: BusMessage): string {
    const seq = this.#next++;
    const at = this.now();
    const slots = this.#slots;
    slots[seq % slots.length] = {
      seq,
      at,
      message: { ...message, payload: message.payload.slice() },
    };
    if (seq - this.#first >= slots.length) this.#first = seq - slots.length + 1;
    return `${this.epoch}:${seq}`;
  }

  #expire(): void {
    if (this.maxAgeMs <= 0) return;
    const oldest = this.now() - this.maxAgeMs;
    const slots = this.#slots;
    while (this.#first < this.#next) {
      const slot = slots[this.#first % slots.length];
      if (slot && slot.seq === this.#first && slot.at >= oldest) break;
      slots[this.#first % slots.length] = undefined;
      this.#first++;
    }
  }

  /** Starts over under a new epoch: earlier offsets become unrecoverable. */
  reset(): void {
    this.#slots.fill(undefined);
    this.#first = this.#next;
    this.epoch = randomEpoch();
  }

  replay(from: string, matches: (message: BusMessage) => boolean): Replay {
    const parsed = RING_OFFSET.exec(from);
    if (!parsed) {
      return gap(
        REDIS_OFFSET.test(from)
          ? "Offset from the shared (Redis) history, which this gateway cannot read now"
          : "Not an offset of this history",
        from,
      );
    }
    if (parsed[1] !== this.epoch) {
      return gap("Offset from another gateway, an earlier run or before an interruption", from);
    }
    const seq = Number(parsed[2]);
    const last = this.#next - 1;
    if (seq > last) return gap("Offset not reached yet by this history", from);
    this.#expire();
    if (seq + 1 < this.#first) {
      return gap("The messages after this offset are no longer held", from);
    }
    const messages: { offset: string; message: BusMessage }[] = [];
    for (let s = seq + 1; s <= last; s++) {
      const slot = this.#slots[s % this.#slots.length];
      if (slot && slot.seq === s && matches(slot.message)) {
        messages.push({ offset: `${this.epoch}:${s}`, message: slot.message });
      }
    }
    return { messages, until: `${this.epoch}:${last}` };
  }

  compare(a: string, b: string): number | undefined {
    const x = RING_OFFSET.exec(a);
    const y = RING_OFFSET.exec(b);
    if (!x || !y || x[1] !== y[1]) return undefined;
    return Math.sign(Number(x[2]) - Number(y[2]));
  }
}
