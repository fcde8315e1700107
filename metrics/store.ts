/**
 * What the ingester and the query API need from a metrics database; pg.ts
 * (PostgreSQL, with TimescaleDB when the server has it) and libsql.ts (the
 * embedded default) implement it.
 *
 * @module
 */
import type { EventReader, EventWriter } from "./event.ts";
import type { Point } from "./point.ts";

/** Which database and which bucketing function serve queries. */
export type MetricsEngine = "time_bucket" | "date_bin" | "libsql";

/** Writes points; one per ingester. */
export interface MetricsWriter extends EventWriter {
  /** `timescaledb`, `postgres` or `libsql`: what the store runs on. */
  readonly kind: "timescaledb" | "postgres" | "libsql";
  /** True when the database applies retention itself (TimescaleDB's policy). */
  readonly managesRetention: boolean;
  /** Most batches worth writing at once. */
  readonly concurrency: number;
  /** Inserts the points in one statement; all or none are stored. */
  write(points: readonly Point[]): Promise<void>;
  /** Deletes points older than `cutoffMs`; returns how many went. */
  deleteOlderThan(cutoffMs: number): Promise<number>;
  /**
   * True when `error` is about the data itself (retrying the same points
   * cannot succeed); false for connection and server trouble.
   */
  isDataError(error: unknown): boolean;
  close(): Promise<void>;
}

/** A bucketed query of one series. Times are ms since the epoch; `to` is exclusive. */
export interface BucketQuery {
  device: string;
  channel: string;
  from: number;
  to: number;
  bucketMs: number;
}

/** One bucket: aggregates of the non-null values whose time is in [time, time + bucket). */
export interface BucketRow {
  /** Start of the bucket, ms since the epoch (buckets are aligned to the epoch). */
  time: number;
  min: number | null;
  max: number | null;
  avg: number | null;
  count: number;
  /** The value with the latest time in the bucket. */
  last: number | null;
}

/** One series the store holds, with its newest point. */
export interface SeriesRow {
  device: string;
  channel: string;
  /** Time of the newest point, ms since the epoch. */
  time: number;
  /** Value of the newest point. */
  value: number | null;
}

/** Answers bucketed queries; the gateway holds one. */
export interface MetricsReader extends EventReader {
  /** Engine the next query runs on. */
  engine(): Promise<MetricsEngine>;
  query(query: BucketQuery): Promise<BucketRow[]>;
  /**
   * The first `limit` series in (device, channel) order with their newest
   * point. A loose scan of the (device, channel, time) index: a few index
   * probes per series, whatever the number of points.
   */
  series(limit: number): Promise<SeriesRow[]>;
  close(): Promise<void>;
}

/** Raised when the metrics database cannot answer (not there, not reachable). */
export class MetricsUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MetricsUnavailableError";
  }
}

/** Options shared by the stores' open functions. */
export interface RetentionOptions {
  /** Points older than this many days are removed; 0 keeps everything. @default 30 */
  retentionDays?: number;
}

const DAY_MS = 86_400_000;

/** The cutoff of a retention in days at `now`, or undefined when retention is off. */
export function retentionCutoff(
  retentionDays: number,
  now: number = Date.now(),
): number | undefined {
  return retentionDays > 0 ? now - Math.round(retentionDays * DAY_MS) : undefined;
}
