/**
 * The event recorder: keeps every message of the event buses as a row of the
 * `events` table, next to the metrics, so the history can be asked by time,
 * device and severity (GET /api/events).
 *
 * It runs inside the metrics ingester's process and writes through the
 * ingester's open database (one connection pool, one migration), so it only
 * needs a function that returns that writer once there is one. Until then,
 * and while writes fail, events wait in a bounded buffer; beyond it they are
 * dropped and reported, as points are. A batch refused for its data is split
 * until the bad events are found and dropped. Events older than the
 * retention are deleted on a schedule (no database-side policy: the table
 * is a plain one on TimescaleDB too).
 *
 * Like the ingester it logs nothing itself: it reports to an
 * {@link EventRecorderObserver}.
 *
 * @module
 */
import { SocketClosedError } from "../transport/closed.ts";
import { waitAtMost } from "../support/wait_at_most.ts";
import {
  type EventRecord,
  type EventRejectReason,
  type EventWriter,
  MAX_EVENT_PAYLOAD_BYTES,
  parseEvent,
} from "./event.ts";
import type { DropReason, MessageSource } from "./ingester.ts";
import { retentionCutoff } from "./store.ts";

/** What the recorder reports. */
export interface EventRecorderObserver {
  received?(count: number): void;
  rejected?(reason: EventRejectReason, detail: string): void;
  dropped?(reason: DropReason, count: number, detail?: string): void;
  written?(count: number): void;
  /** A write failed for a reason other than its data; retrying in `retryMs`. */
  writeFailed?(error: unknown, retryMs: number, events: number): void;
  retention?(deleted: number, cutoffMs: number): void;
  retentionFailed?(error: unknown): void;
  /** Events held, after every change worth reporting. */
  buffered?(events: number): void;
}

/** Options of {@link EventRecorder}. */
export interface EventRecorderOptions {
  /** Most events per write. @default 1000 */
  batchSize?: number;
  /** Events held in memory (waiting and being written). @default 100000 */
  bufferEvents?: number;
  /** A partial batch is written once its oldest event waited this long. @default 200 */
  flushIntervalMs?: number;
  /** First retry delay; doubles up to {@link retryMaxMs}. @default 100 */
  retryMinMs?: number;
  /** @default 10000 */
  retryMaxMs?: number;
  /** Events older than this many days are deleted; 0 keeps them. @default 90 */
  retentionDays?: number;
  /** @default 3600000 */
  retentionIntervalMs?: number;
  /** Larger payloads are refused (counted). @default 65536 */
  maxPayloadBytes?: number;
  /** Messages read from a source per turn. @default 256 */
  readBatch?: number;
}

/** Records the event buses into the metrics database. */
export class EventRecorder {
  readonly #sources: readonly MessageSource[];
  readonly #writer: () => EventWriter | undefined;
  readonly #observer: EventRecorderObserver;
  readonly #batchSize: number;
  readonly #capacity: number;
  readonly #flushIntervalMs: number;
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  readonly #retentionDays: number;
  readonly #maxPayloadBytes: number;
  readonly #readBatch: number;

  #pending: EventRecord[] = [];
  #inFlight = 0;
  #oldestAt = 0;
  #retryMs: number;
  #stopping = false;
  #closed = false;
  #wakers = new Set<() => void>();
  #retentionTimer: ReturnType<typeof setInterval> | undefined;
  #retentionRun?: Promise<number>;
  #retentionStarted = false;
  #reading: Promise<void>;
  #writing: Promise<void>;

  constructor(
    sources: readonly MessageSource[],
    writer: () => EventWriter | undefined,
    options: EventRecorderOptions = {},
    observer: EventRecorderObserver = {},
  ) {
    this.#sources = sources;
    this.#writer = writer;
    this.#observer = observer;
    this.#batchSize = options.batchSize ?? 1000;
    this.#capacity = options.bufferEvents ?? 100_000;
    this.#flushIntervalMs = options.flushIntervalMs ?? 200;
    this.#retryMinMs = options.retryMinMs ?? 100;
    this.#retryMaxMs = Math.max(this.#retryMinMs, options.retryMaxMs ?? 10_000);
    this.#retentionDays = options.retentionDays ?? 90;
    this.#maxPayloadBytes = options.maxPayloadBytes ?? MAX_EVENT_PAYLOAD_BYTES;
    this.#readBatch = options.readBatch ?? 256;
    this.#retryMs = this.#retryMinMs;
    if (this.#retentionDays > 0) {
      this.#retentionTimer = setInterval(
        () => this.#retention().catch(() => {}),
        options.retentionIntervalMs ?? 3_600_000,
      );
    }
    this.#reading = Promise.all(sources.map((source) => this.#read(source))).then(() => {});
    this.#writing = this.#run();
  }

  /** Events held in memory (waiting and being written). */
  get buffered(): number {
    return this.#pending.length + this.#inFlight;
  }

  // -- reading ---------------------------------------------------------------

  async #read(source: MessageSource): Promise<void> {
    const observer = this.#observer;
    while (!this.#stopping) {
      let messages;
      try {
        messages = await source.receiveBatch(this.#readBatch);
      } catch (error) {
        if (error instanceof SocketClosedError || this.#stopping) return;
        throw error;
      }
      observer.received?.(messages.length);
      const now = Date.now();
      const wasEmpty = this.#pending.length === 0;
      let full = 0;
      for (const message of messages) {
        const result = parseEvent(message, now, this.#maxPayloadBytes);
        if (!result.ok) {
          observer.rejected?.(result.reason, result.detail);
          continue;
        }
        if (this.buffered >= this.#capacity) full++;
        else this.#pending.push(result.event);
      }
      if (full > 0) observer.dropped?.("buffer_full", full, `buffer of ${this.#capacity} is full`);
      if (wasEmpty && this.#pending.length > 0) {
        this.#oldestAt = now;
        this.#wake();
      } else if (this.#pending.length >= this.#batchSize) this.#wake();
      observer.buffered?.(this.buffered);
    }
  }

  // -- waiting ---------------------------------------------------------------

  #wake(): void {
    for (const wake of this.#wakers) wake();
    this.#wakers.clear();
  }

  /** Resolves on {@link #wake} or after `ms`, whichever comes first. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.#wakers.add(done);
    });
  }

  // -- writing ---------------------------------------------------------------

  async #run(): Promise<void> {
    while (!this.#closed) {
      const pending = this.#pending.length;
      if (pending === 0) {
        if (this.#stopping) return;
        await this.#sleep(60_000);
        continue;
      }
      const waited = Date.now() - this.#oldestAt;
      if (!this.#stopping && pending < this.#batchSize && waited < this.#flushIntervalMs) {
        await this.#sleep(this.#flushIntervalMs - waited);
        continue;
      }
      const writer = this.#writer();
      if (!writer) {
        // The ingester is still opening the database.
        await this.#sleep(this.#flushIntervalMs);
        continue;
      }
      if (!this.#retentionStarted) {
        this.#retentionStarted = true;
        this.#retention().catch(() => {});
      }
      const batch = this.#pending.splice(0, this.#batchSize);
      if (this.#pending.length > 0) this.#oldestAt = Date.now();
      this.#inFlight += batch.length;
      let rest: EventRecord[] = [];
      let failure: unknown;
      try {
        ({ rest, error: failure } = await this.#writeSplitting(writer, batch));
      } finally {
        this.#inFlight -= batch.length;
      }
      if (failure === undefined) {
        this.#retryMs = this.#retryMinMs;
      } else {
        this.#pending.unshift(...rest);
        const retry = this.#retryMs;
        this.#retryMs = Math.min(this.#retryMaxMs, this.#retryMs * 2);
        this.#observer.writeFailed?.(failure, retry, rest.length);
        await this.#sleep(retry);
      }
      this.#observer.buffered?.(this.buffered);
    }
  }

  /** Writes `events`, halving a batch refused for its data until the bad events are dropped. */
  async #writeSplitting(
    writer: EventWriter,
    events: EventRecord[],
  ): Promise<{ rest: EventRecord[]; error?: unknown }> {
    try {
      await writer.writeEvents(events);
      this.#observer.written?.(events.length);
      return { rest: [] };
    } catch (error) {
      if (!writer.isDataError(error)) return { rest: events, error };
      if (events.length === 1) {
        this.#observer.dropped?.("rejected_by_database", 1, (error as Error).message);
        return { rest: [] };
      }
      const middle = events.length >> 1;
      const first = await this.#writeSplitting(writer, events.slice(0, middle));
      if (first.error !== undefined) {
        return { rest: [...first.rest, ...events.slice(middle)], error: first.error };
      }
      return await this.#writeSplitting(writer, events.slice(middle));
    }
  }

  // -- retention ---------------------------------------------------------------

  #retention(): Promise<number> {
    const writer = this.#writer();
    const cutoff = retentionCutoff(this.#retentionDays);
    if (!writer || cutoff === undefined || this.#stopping) return Promise.resolve(0);
    this.#retentionRun ??= writer.deleteEventsOlderThan(cutoff).then(
      (deleted) => {
        this.#observer.retention?.(deleted, cutoff);
        return deleted;
      },
      (error) => {
        this.#observer.retentionFailed?.(error);
        throw error;
      },
    ).finally(() => this.#retentionRun = undefined);
    return this.#retentionRun;
  }

  /** Runs the scheduled delete now (tests, operators); resolves with the rows deleted. */
  async runRetention(): Promise<number> {
    await this.#retentionRun?.catch(() => {});
    return await this.#retention();
  }

  // -- stopping ----------------------------------------------------------------

  /**
   * Stops reading, writes what is buffered for up to `flushMs`, then drops
   * the rest (reported as `shutdown`). Close it before the writer it uses.
   */
  async close(flushMs = 5000): Promise<void> {
    if (this.#closed) return;
    this.#stopping = true;
    clearInterval(this.#retentionTimer);
    await Promise.all(this.#sources.map((source) => source.close()));
    await this.#reading.catch(() => {});
    this.#wake();
    await waitAtMost(this.#writing.catch(() => {}), flushMs);
    this.#closed = true;
    this.#wake();
    await this.#writing.catch(() => {});
    const lost = this.#pending.length + this.#inFlight;
    this.#pending = [];
    if (lost > 0) this.#observer.dropped?.("shutdown", lost, "not written before shutdown");
    await this.#retentionRun?.catch(() => {});
  }
}
