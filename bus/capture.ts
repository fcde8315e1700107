/**
 * Counts what a bus carries, per topic, from its capture socket: messages and
 * bytes per configured topic prefix, plus subscription messages. Reads
 * through the native socket layer without copying payloads (only the first
 * bytes of each message are looked at).
 *
 * The capture socket is a PUB: when this reader falls behind, the bus drops
 * copies for it instead of slowing down. Dropped copies are the difference
 * between the frames the proxy copied (its statistics) and the frames read
 * ({@link CaptureTotals}).
 *
 * @module
 */
import { SocketClosedError } from "../transport/closed.ts";
import { openSub, type SubSocket } from "../transport/pubsub.ts";
import { PrefixSet, startsWith } from "./envelope.ts";
import { BUS_BATCH_BYTES } from "./socket_options.ts";
import { nextTurn } from "../support/next_turn.ts";

/** Messages and bytes. */
export interface Count {
  messages: number;
  bytes: number;
}

/** Everything the counter has read. */
export interface CaptureTotals {
  /** Every message read, publications and subscriptions. */
  messages: number;
  /** Their frames (what the proxy's statistics count). */
  frames: number;
  bytes: number;
  /** Subscription and unsubscription messages (one frame starting 0x00 or 0x01). */
  subscriptions: number;
}

/** Options of {@link CaptureCounter}. */
export interface CaptureCounterOptions {
  /**
   * Topic prefixes to count under. A message is counted under the longest
   * one it starts with; others under their leading token (see below).
   * @default []
   */
  topics?: readonly string[];
  /**
   * Most distinct labels learned from traffic (the leading run of
   * `[A-Za-z0-9._:/-]`, at most 64 bytes, e.g. `org.plantd.Metric`); further
   * ones are counted as "other". 0 counts everything unmatched as "other".
   * @default 100
   */
  maxLearnedTopics?: number;
  /** Receive high-water mark of the reading socket. @default 10000 */
  receiveHighWaterMark?: number;
  /** Called if reading fails (counting stops). */
  onFailure?: (error: unknown) => void;
}

/** Label of messages no prefix or learned token matches. */
export const OTHER_TOPIC = "other";

const HEAD_BYTES = 256;
const TOKEN_MAX = 64;
const BATCH = 4096;

function isTokenByte(b: number): boolean {
  return (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) ||
    b === 0x2e || b === 0x5f || b === 0x3a || b === 0x2f || b === 0x2d;
}

/** Reads a capture endpoint and counts per topic until closed. */
export class CaptureCounter {
  readonly totals: CaptureTotals = { messages: 0, frames: 0, bytes: 0, subscriptions: 0 };
  #socket: SubSocket;
  #prefixes: PrefixSet;
  #byLabel = new Map<string, Count>();
  #learned: Array<{ bytes: Uint8Array; count: Count }> = [];
  #maxLearned: number;
  #head = new Uint8Array(HEAD_BYTES);
  #loop: Promise<void>;
  #closed = false;
  #failure: unknown;
  #onFailure: (error: unknown) => void;

  constructor(endpoint: string, options: CaptureCounterOptions = {}) {
    this.#prefixes = new PrefixSet(options.topics ?? []);
    this.#maxLearned = options.maxLearnedTopics ?? 100;
    this.#onFailure = options.onFailure ?? (() => {});
    this.#socket = openSub({
      batchBytes: BUS_BATCH_BYTES,
      receiveHighWaterMark: options.receiveHighWaterMark ?? 10_000,
    });
    this.#socket.subscribe(new Uint8Array(0));
    this.#socket.connect(endpoint);
    this.#loop = this.#run();
  }

  /** Counts per topic label, a snapshot. */
  topics(): Map<string, Count> {
    const out = new Map<string, Count>();
    for (const [label, count] of this.#byLabel) out.set(label, { ...count });
    return out;
  }

  /** The error that stopped reading, if any. */
  get failure(): unknown {
    return this.#failure;
  }

  #countFor(head: Uint8Array, length: number): Count {
    const match = this.#prefixes.match(head, length);
    if (match) return this.#label(match.text);
    let end = 0;
    while (end < length && end < TOKEN_MAX && isTokenByte(head[end]!)) end++;
    if (end === 0) return this.#label(OTHER_TOPIC);
    for (const learned of this.#learned) {
      if (learned.bytes.length === end && startsWith(head, learned.bytes, end)) {
        return learned.count;
      }
    }
    if (this.#learned.length >= this.#maxLearned) return this.#label(OTHER_TOPIC);
    const bytes = head.slice(0, end);
    const count = this.#label(new TextDecoder().decode(bytes));
    this.#learned.push({ bytes, count });
    return count;
  }

  #label(text: string): Count {
    let count = this.#byLabel.get(text);
    if (!count) {
      count = { messages: 0, bytes: 0 };
      this.#byLabel.set(text, count);
    }
    return count;
  }

  async #run(): Promise<void> {
    const head = this.#head;
    const totals = this.totals;
    try {
      while (!this.#closed) {
        let n = 0;
        while (n < BATCH) {
          const summary = this.#socket.tryReceiveSummary(head);
          if (!summary) break;
          n++;
          totals.messages++;
          totals.frames += summary.frames;
          totals.bytes += summary.bytes;
          if (
            summary.frames === 1 && summary.firstFrameBytes > 0 && (head[0] === 0 || head[0] === 1)
          ) {
            totals.subscriptions++;
            continue;
          }
          const count = this.#countFor(head, summary.headLength);
          count.messages++;
          count.bytes += summary.bytes;
        }
        // A full batch: let the event loop run (health, metrics) before the next.
        if (n === BATCH) await nextTurn();
        else await this.#socket.waitReadable();
      }
    } catch (error) {
      if (!(error instanceof SocketClosedError) && !this.#closed) {
        this.#failure = error;
        this.#onFailure(error);
      }
    }
  }

  /** Stops reading and closes the socket. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.close();
    await this.#loop;
  }
}
