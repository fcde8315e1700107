/**
 * The metrics ingester: reads points from the metric bus, keeps them in a
 * bounded buffer and writes them in batches.
 *
 * - Every message is parsed on arrival; a malformed one is reported through
 *   the observer with its reason and skipped.
 * - Valid points go into the buffer while it has room, else they are dropped
 *   and reported (`buffer_full`): nothing is dropped while there is room.
 * - Writers take a batch once `batchSize` points wait or the oldest has waited
 *   `flushIntervalMs`. A failed write puts the batch back in front and the
 *   ingester retries with exponential backoff (jittered, up to `retryMaxMs`);
 *   meanwhile the buffer keeps filling. The database is also opened (and
 *   migrated) that way, so the ingester starts and buffers before it exists.
 * - A batch the database refuses for its data is split until the bad points
 *   are found; those are dropped and reported (`rejected_by_database`).
 * - Without a database-side retention policy, points older than the
 *   retention are deleted on a schedule.
 *
 * The ingester does no logging and keeps no metrics: it reports to an
 * {@link IngesterObserver} (roles/metrics.ts turns that into logs and
 * Prometheus counters).
 *
 * @module
 */
import type { BusMessage } from "../bus/envelope.ts";
import { SocketClosedError } from "../transport/closed.ts";
import { parsePoint, type Point, type RejectReason } from "./point.ts";
import { PointQueue } from "./point_queue.ts";
import { type MetricsWriter, retentionCutoff } from "./store.ts";
import { waitAtMost } from "../support/wait_at_most.ts";

/** Longest run of reading without a timer turn while writes wait for replies. */
const YIELD_EVERY_MS = 5;

/** Where messages come from: a bus Subscriber, or anything that reads like one. */
export interface MessageSource {
  receiveBatch(max?: number): Promise<BusMessage[]>;
  close(): Promise<void>;
}

/** Why points were dropped after they had been accepted. */
export type DropReason = "buffer_full" | "rejected_by_database" | "shutdown";

/** What the ingester reports. */
export interface IngesterObserver {
  /** Messages read from the bus. */
  received?(count: number): void;
  rejected?(reason: RejectReason, detail: string): void;
  dropped?(reason: DropReason, count: number, detail?: string): void;
  /** A batch was stored. */
  written?(count: number, seconds: number): void;
  /** Opening the database failed; retrying in `retryMs`. */
  connectFailed?(error: unknown, retryMs: number): void;
  connected?(writer: MetricsWriter): void;
  /** A write failed for a reason other than its data; retrying in `retryMs`. */
  writeFailed?(error: unknown, retryMs: number, points: number): void;
  /** Writes succeed again after failures. */
  recovered?(downMs: number): void;
  retention?(deleted: number, cutoffMs: number): void;
  retentionFailed?(error: unknown): void;
  /** Points held, after every change worth reporting. */
  buffered?(points: number): void;
}

/** Options of {@link MetricsIngester}. */
export interface IngesterOptions {
  /** Most points per write. @default 5000 */
  batchSize?: number;
  /** Points held in memory (waiting and being written). @default 500000 */
  bufferPoints?: number;
  /** A partial batch is written once its oldest point waited this long. @default 200 */
  flushIntervalMs?: number;
  /** First retry delay; doubles up to {@link retryMaxMs}. @default 100 */
  retryMinMs?: number;
  /** @default 10000 */
  retryMaxMs?: number;
  /** Scheduled delete of older points (unless the database manages retention); 0 = off. @default 30 */
  retentionDays?: number;
  /** @default 3600000 */
  retentionIntervalMs?: number;
  /** Messages read from the source per turn. @default 1024 */
  readBatch?: number;
}

/** The ingester's state, for health checks. */
export interface IngesterStatus {
  /** up: the last write (or the open) succeeded; down: failing; connecting: not opened yet. */
  database: "up" | "down" | "connecting";
  /** The last database error while down. */
  lastError?: string;
  /** Since when the state holds (ms since the epoch). */
  since: number;
  buffered: number;
  capacity: number;
  kind?: MetricsWriter["kind"];
}

/** Reads the metric bus into a metrics database. */
export class MetricsIngester {
  readonly #source: MessageSource;
  readonly #open: () => Promise<MetricsWriter>;
  readonly #observer: IngesterObserver;
  readonly #queue: PointQueue;
  readonly #batchSize: number;
  readonly #flushIntervalMs: number;
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  readonly #retentionDays: number;
  readonly #retentionIntervalMs: number;
  readonly #readBatch: number;

  #writer?: MetricsWriter;
  #status: IngesterStatus;
  #oldestAt = 0;
  #retryMs: number;
  #downUntil = 0;
  #downSince = 0;
  #stopping = false;
  #closed = false;
  #wakers = new Set<() => void>();
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #retentionTimer?: ReturnType<typeof setInterval>;
  #retentionRun?: Promise<void>;
  #reading: Promise<void>;
  #writing: Promise<void>;

  constructor(
    source: MessageSource,
    open: () => Promise<MetricsWriter>,
    options: IngesterOptions = {},
    observer: IngesterObserver = {},
  ) {
    this.#source = source;
    this.#open = open;
    this.#observer = observer;
    this.#batchSize = options.batchSize ?? 5000;
    this.#queue = new PointQueue(options.bufferPoints ?? 500_000);
    this.#flushIntervalMs = options.flushIntervalMs ?? 200;
    this.#retryMinMs = options.retryMinMs ?? 100;
    this.#retryMaxMs = Math.max(this.#retryMinMs, options.retryMaxMs ?? 10_000);
    this.#retentionDays = options.retentionDays ?? 30;
    this.#retentionIntervalMs = options.retentionIntervalMs ?? 3_600_000;
    this.#readBatch = options.readBatch ?? 1024;
    this.#retryMs = this.#retryMinMs;
    this.#status = {
      database: "connecting",
      since: Date.now(),
      buffered: 0,
      capacity: this.#queue.capacity,
    };
    this.#reading = this.#read();
    this.#writing = this.#run();
  }

  /** Current state (database up or down, buffer use). */
  status(): IngesterStatus {
    return { ...this.#status, buffered: this.#queue.size, kind: this.#writer?.kind };
  }

  /** The open writer, once connected. */
  get writer(): MetricsWriter | undefined {
    return this.#writer;
  }

  #setStatus(database: IngesterStatus["database"], lastError?: string): void {
    if (this.#status.database !== database || this.#status.lastError !== lastError) {
      this.#status = {
        ...this.#status,
        database,
        lastError,
        since: this.#status.database === database ? this.#status.since : Date.now(),
      };
    }
  }

  // -- reading ---------------------------------------------------------------

  async #read(): Promise<void> {
    const observer = this.#observer;
    const queue = this.#queue;
    let lastTurn = performance.now();
    while (!this.#stopping) {
      let messages: BusMessage[];
      try {
        messages = await this.#source.receiveBatch(this.#readBatch);
      } catch (error) {
        if (error instanceof SocketClosedError || this.#stopping) return;
        throw error;
      }
      observer.received?.(messages.length);
      const now = Date.now();
      const wasEmpty = queue.pending === 0;
      let full = 0;
      for (const message of messages) {
        const result = parsePoint(message.payload, now);
        if (!result.ok) {
          observer.rejected?.(result.reason, result.detail);
          continue;
        }
        if (!queue.push(result.point)) full++;
      }
      if (full > 0) observer.dropped?.("buffer_full", full, `buffer of ${queue.capacity} is full`);
      if (wasEmpty && queue.pending > 0) this.#oldestAt = now;
      if (queue.pending >= this.#batchSize || (wasEmpty && queue.pending > 0)) this.#wake();
      observer.buffered?.(queue.size);
      // A busy bus keeps receiveBatch() resolving at once, and network replies
      // are only read when the event loop gets to its timers and I/O (here,
      // neither setImmediate nor a MessageChannel gets there): give it a timer
      // turn every few milliseconds, so the database's replies are not held
      // until the bus is drained.
      if (performance.now() - lastTurn >= YIELD_EVERY_MS) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        lastTurn = performance.now();
      }
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
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        this.#wakers.delete(done);
        resolve();
      }, Math.max(0, ms));
      const done = () => {
        clearTimeout(timer);
        this.#timers.delete(timer);
        resolve();
      };
      this.#timers.add(timer);
      this.#wakers.add(done);
    });
  }

  #backoff(): number {
    const delay = this.#retryMs;
    this.#retryMs = Math.min(this.#retryMaxMs, this.#retryMs * 2);
    // ±20% so that several ingesters do not retry in step.
    return Math.round(delay * (0.8 + Math.random() * 0.4));
  }

  // -- writing ---------------------------------------------------------------

  async #run(): Promise<void> {
    const writer = await this.#connect();
    if (!writer) return;
    this.#scheduleRetention(writer);
    const workers = Array.from(
      { length: Math.max(1, writer.concurrency) },
      () => this.#work(writer),
    );
    await Promise.all(workers);
  }

  async #connect(): Promise<MetricsWriter | undefined> {
    while (!this.#stopping) {
      try {
        const writer = await this.#open();
        if (this.#stopping && this.#closed) {
          await writer.close();
          return undefined;
        }
        this.#writer = writer;
        this.#retryMs = this.#retryMinMs;
        this.#setStatus("up");
        this.#observer.connected?.(writer);
        return writer;
      } catch (error) {
        const retry = this.#backoff();
        this.#setStatus("down", errorText(error));
        this.#observer.connectFailed?.(error, retry);
        await this.#sleepUnlessStopping(retry);
      }
    }
    return undefined;
  }

  /** Sleeps `ms`, waking early only to stop. */
  async #sleepUnlessStopping(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (!this.#stopping && Date.now() < until) await this.#sleep(until - Date.now());
  }

  /** True once a batch should be written. */
  #due(): boolean {
    const pending = this.#queue.pending;
    if (pending === 0) return false;
    return this.#stopping || pending >= this.#batchSize ||
      Date.now() - this.#oldestAt >= this.#flushIntervalMs;
  }

  async #work(writer: MetricsWriter): Promise<void> {
    const queue = this.#queue;
    while (true) {
      if (this.#stopping && queue.pending === 0) return;
      if (Date.now() < this.#downUntil) {
        await this.#sleep(this.#downUntil - Date.now());
        continue;
      }
      if (!this.#due()) {
        await this.#sleep(
          queue.pending === 0 ? 60_000 : this.#oldestAt + this.#flushIntervalMs - Date.now(),
        );
        continue;
      }
      const batch = queue.take(this.#batchSize);
      if (queue.pending > 0) this.#oldestAt = Date.now();
      const started = performance.now();
      const left = await this.#writeSplitting(writer, batch, started);
      if (left.error === undefined) {
        if (this.#status.database !== "up") {
          this.#observer.recovered?.(Date.now() - this.#downSince);
          this.#setStatus("up");
        }
        this.#retryMs = this.#retryMinMs;
      } else {
        queue.giveBack(left.rest);
        const retry = this.#backoff();
        if (this.#status.database === "up") this.#downSince = Date.now();
        this.#setStatus("down", errorText(left.error));
        this.#downUntil = Date.now() + retry;
        this.#observer.writeFailed?.(left.error, retry, left.rest.length);
        if (this.#stopping && this.#closed) return;
      }
      this.#observer.buffered?.(queue.size);
    }
  }

  /**
   * Writes `points`; a batch refused for its data is halved until the bad
   * points are isolated and dropped. Returns what is left when the database
   * fails otherwise.
   */
  async #writeSplitting(
    writer: MetricsWriter,
    points: Point[],
    started: number,
  ): Promise<{ rest: Point[]; error?: unknown }> {
    try {
      await writer.write(points);
      this.#queue.done(points.length);
      this.#observer.written?.(points.length, (performance.now() - started) / 1000);
      return { rest: [] };
    } catch (error) {
      if (!writer.isDataError(error)) return { rest: points, error };
      if (points.length === 1) {
        this.#queue.done(1);
        this.#observer.dropped?.("rejected_by_database", 1, errorText(error));
        return { rest: [] };
      }
      const middle = points.length >> 1;
      const first = await this.#writeSplitting(writer, points.slice(0, middle), performance.now());
      if (first.error !== undefined) {
        return { rest: [...first.rest, ...points.slice(middle)], error: first.error };
      }
      return await this.#writeSplitting(writer, points.slice(middle), performance.now());
    }
  }

  // -- retention ---------------------------------------------------------------

  #scheduleRetention(writer: MetricsWriter): void {
    if (writer.managesRetention || this.#retentionDays <= 0) return;
    const run = () => {
      if (this.#retentionRun || this.#stopping) return;
      const cutoff = retentionCutoff(this.#retentionDays)!;
      this.#retentionRun = writer.deleteOlderThan(cutoff).then(
        (deleted) => this.#observer.retention?.(deleted, cutoff),
        (error) => this.#observer.retentionFailed?.(error),
      ).finally(() => this.#retentionRun = undefined);
    };
    run();
    this.#retentionTimer = setInterval(run, this.#retentionIntervalMs);
  }

  /** Runs the scheduled delete now (tests, operators); resolves with the rows deleted. */
  async runRetention(): Promise<number> {
    const writer = this.#writer;
    const cutoff = retentionCutoff(this.#retentionDays);
    if (!writer || cutoff === undefined) return 0;
    await this.#retentionRun;
    const deleted = await writer.deleteOlderThan(cutoff);
    this.#observer.retention?.(deleted, cutoff);
    return deleted;
  }

  // -- stopping ----------------------------------------------------------------

  /**
   * Stops reading, writes what is buffered for up to `flushMs`, then drops the
   * rest (reported as `shutdown`) and closes the database.
   */
  async close(flushMs = 5000): Promise<void> {
    if (this.#closed) return;
    this.#stopping = true;
    await this.#source.close();
    await this.#reading.catch(() => {});
    clearInterval(this.#retentionTimer);
    this.#wake();
    await waitAtMost(this.#writing.catch(() => {}), flushMs);
    this.#closed = true;
    // Writers still retrying give up at their next turn.
    this.#downUntil = 0;
    this.#wake();
    let lost = this.#queue.clear();
    await this.#writing.catch(() => {});
    // Batches whose write failed meanwhile came back to the queue.
    lost += this.#queue.clear() + this.#queue.inFlight;
    if (lost > 0) this.#observer.dropped?.("shutdown", lost, "not written before shutdown");
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    await this.#retentionRun;
    await this.#writer?.close();
  }
}

function errorText(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) {
    return `${error.message || "errors"}: ${error.errors.map(errorText).join("; ")}`;
  }
  if (!(error instanceof Error)) return String(error);
  // Drizzle wraps driver errors in "Failed query: <sql>": the cause says what went wrong.
  if (error.cause instanceof Error && error.message.startsWith("Failed query")) {
    return errorText(error.cause);
  }
  return error.message || error.name;
}
