/**
 * The metrics store on PostgreSQL through `postgres` (postgres.js) and
 * Drizzle: drizzle-kit migrations from migrations/metrics-pg, then, when the
 * server has the `timescaledb` extension, a hypertable with compression and
 * retention policies. Without it the table keeps its BRIN index on time and
 * the ingester deletes old points on a schedule.
 *
 * Inserts bypass the query builder. A batch goes in as one binary COPY
 * (pg_copy.ts) when the table has the column types that form needs; otherwise,
 * and to find out why a COPY was refused, as one prepared statement taking five
 * arrays (`unnest`). Queries and deletes go through Drizzle's `sql` with the
 * schema's columns.
 *
 * @module
 */
import { sql } from "drizzle-orm";
import { drizzle, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import { migrate } from "drizzle-orm/postgres-js/migrator";
import { Socket } from "node:net";
import postgres from "postgres";
import { BinaryCopyEncoder, binaryCopyFits } from "./pg_copy.ts";
import type { Point } from "./point.ts";
import { metrics } from "./schema_pg.ts";
import {
  type BucketQuery,
  type BucketRow,
  type MetricsEngine,
  type MetricsReader,
  MetricsUnavailableError,
  type MetricsWriter,
} from "./store.ts";

const MIGRATIONS = new URL("../migrations/metrics-pg", import.meta.url).pathname;

/** TimescaleDB settings; ignored on plain PostgreSQL. */
export interface TimescaleOptions {
  /** "auto": use TimescaleDB when the server has it; "off": never. @default "auto" */
  mode?: "auto" | "off";
  /** Chunk interval of the hypertable, in hours. @default 24 */
  chunkIntervalHours?: number;
  /** Compress chunks older than this; 0 = no compression policy. @default 7 */
  compressionAfterDays?: number;
  /** Drop chunks older than this; 0 = no retention policy. @default 30 */
  retentionDays?: number;
}

/** Options of {@link openPgWriter}. */
export interface PgWriterOptions extends TimescaleOptions {
  /** Connections, and so batches written at once. @default 2 */
  connections?: number;
  /** Called with what the setup did (TimescaleDB or not, and why). */
  onSetup?: (report: PgSetupReport) => void;
}

/** What {@link openPgWriter} found and did. */
export interface PgSetupReport {
  kind: "timescaledb" | "postgres";
  /** TimescaleDB is installable on the server (pg_available_extensions). */
  timescaleAvailable: boolean;
  /** Why the plain path was taken although TimescaleDB is available, if it was. */
  fallbackReason?: string;
  /** Batches go in by binary COPY; false when the table's column types need the INSERT. */
  binaryCopy: boolean;
}

type Sql = postgres.Sql;

function client(url: string, max: number): Sql {
  noDelayOnConnect();
  return postgres(url, {
    max,
    onnotice: () => {},
    connect_timeout: 5,
    idle_timeout: 60,
    // UTC sessions: Go plantd's table has `timestamp without time zone`, and
    // timestamptz values are stored there in the session's zone.
    connection: { application_name: "plantd-metrics", TimeZone: "UTC" },
  });
}

const noDelayMark = Symbol.for("plantd.noDelayOnConnect");

/**
 * TCP_NODELAY on the process's `node:net` client sockets, postgres.js's among
 * them. Under Deno its sockets keep Nagle's algorithm on, and a COPY's closing
 * CopyDone (a few bytes written right after the data) then waited for the
 * server's delayed ACK: about 40 ms per batch, measured. postgres.js has no
 * option for it, and its socket factory hook changes how it connects (with it
 * a refused connection later crashed the process from a pending write), so
 * the setting goes in before each connect. Redis clients and HTTP set it by
 * default anyway.
 */
function noDelayOnConnect(): void {
  const prototype = Socket.prototype as Socket & { [noDelayMark]?: true };
  if (prototype[noDelayMark]) return;
  prototype[noDelayMark] = true;
  const connect = prototype.connect;
  prototype.connect = function (this: Socket, ...args: unknown[]) {
    this.setNoDelay(true);
    return (connect as (...a: unknown[]) => Socket).apply(this, args);
  } as Socket["connect"];
}

/** An interval literal for `seconds` (validated numbers only, never user text). */
function interval(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds <= 0) throw new RangeError(`Bad interval ${seconds}`);
  return `INTERVAL '${Math.round(seconds)} seconds'`;
}

/** A string as an element of a PostgreSQL array literal: quoted, `\\` and `"` escaped. */
export function arrayElement(text: string): string {
  return `"${text.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

/** True when the server could install TimescaleDB. */
export async function timescaleAvailable(sql: Sql): Promise<boolean> {
  const rows = await sql`select 1 from pg_available_extensions where name = 'timescaledb'`;
  return rows.length > 0;
}

/** The metrics table's columns and their types (without modifiers, e.g. `character varying`). */
async function columnTypes(sql: Sql): Promise<Map<string, string>> {
  const rows = await sql<{ name: string; type: string }[]>`
    select attname as name, format_type(atttypid, null) as type from pg_attribute
    where attrelid = to_regclass('metrics') and attnum > 0 and not attisdropped`;
  return new Map(rows.map((r) => [r.name, r.type]));
}

/** True when `metrics` is a TimescaleDB hypertable. */
async function isHypertable(sql: Sql): Promise<boolean> {
  const installed = await sql`select 1 from pg_extension where extname = 'timescaledb'`;
  if (installed.length === 0) return false;
  const rows = await sql`
    select 1 from timescaledb_information.hypertables
    where hypertable_name = 'metrics' and hypertable_schema = current_schema()`;
  return rows.length > 0;
}

/**
 * Makes `metrics` a hypertable with compression and retention policies
 * (TimescaleDB 2.x). Idempotent: policies are replaced, so changed settings
 * take effect on the next start.
 */
export async function setupTimescale(sql: Sql, options: TimescaleOptions): Promise<void> {
  const chunkHours = options.chunkIntervalHours ?? 24;
  const compressDays = options.compressionAfterDays ?? 7;
  const retentionDays = options.retentionDays ?? 30;
  await sql`create extension if not exists timescaledb`;
  if (!(await isHypertable(sql))) {
    // Chunks carry their own (time DESC) index; the BRIN index is for plain tables.
    await sql`drop index if exists metrics_time_brin`;
    await sql.unsafe(
      `select create_hypertable('metrics', 'time', chunk_time_interval => ${
        interval(chunkHours * 3600)
      }, if_not_exists => true, migrate_data => true)`,
    );
  }
  if (compressDays > 0) {
    const [state] = await sql`
      select compression_enabled from timescaledb_information.hypertables
      where hypertable_name = 'metrics' and hypertable_schema = current_schema()`;
    if (!state?.compression_enabled) {
      await sql.unsafe(
        `alter table metrics set (timescaledb.compress, timescaledb.compress_segmentby = 'device, channel', timescaledb.compress_orderby = 'time DESC')`,
      );
    }
  }
  await sql`select remove_compression_policy('metrics', if_exists => true)`;
  if (compressDays > 0) {
    await sql.unsafe(`select add_compression_policy('metrics', ${interval(compressDays * 86400)})`);
  }
  await sql`select remove_retention_policy('metrics', if_exists => true)`;
  if (retentionDays > 0) {
    await sql.unsafe(`select add_retention_policy('metrics', ${interval(retentionDays * 86400)})`);
  }
}

/** The writing side on PostgreSQL. */
export class PgMetricsWriter implements MetricsWriter {
  readonly kind: "timescaledb" | "postgres";
  readonly managesRetention: boolean;
  readonly concurrency: number;
  readonly #sql: Sql;
  readonly #db: PostgresJsDatabase;

  /** Whether batches go in by binary COPY (the table has the types it needs). */
  readonly binaryCopy: boolean;
  readonly #encoder = new BinaryCopyEncoder();

  constructor(
    sql: Sql,
    kind: "timescaledb" | "postgres",
    concurrency: number,
    binaryCopy = false,
  ) {
    this.#sql = sql;
    this.#db = drizzle(sql);
    this.kind = kind;
    this.managesRetention = kind === "timescaledb";
    this.concurrency = concurrency;
    this.binaryCopy = binaryCopy;
  }

  async write(points: readonly Point[]): Promise<void> {
    if (points.length === 0) return;
    // A refused COPY is retried as an INSERT: it either goes in (the refusal was
    // passing) or fails with PostgreSQL's reason, which decides what happens next.
    if (this.binaryCopy && await this.#copy(points)) return;
    await this.#insert(points);
  }

  /**
   * One binary COPY in a transaction on a reserved connection; true when it
   * committed. The transaction is how the outcome is known: postgres.js loses
   * the error of a COPY that fails after its data was sent and never finishes
   * the stream (porsager/postgres#1173), but COMMIT then answers ROLLBACK.
   */
  async #copy(points: readonly Point[]): Promise<boolean> {
    const data = this.#encoder.encode(points);
    const connection = await this.#sql.reserve();
    try {
      await connection`begin`;
      const stream = await connection`
        copy metrics (time, device, channel, value, tags) from stdin with (format binary)`
        .writable();
      // The driver refuses other queries until its final step has sent
      // CopyDone (or the stream was destroyed by an early error, sending
      // CopyFail), so COMMIT waits for that.
      const copyEnded = new Promise<void>((resolve) => {
        const final = stream._final!;
        stream._final = function (callback) {
          final.call(this, callback);
          resolve();
        };
        stream.once("close", () => resolve());
      });
      stream.on("error", () => {}); // the outcome is COMMIT's answer
      stream.end(data);
      await copyEnded;
      const result = await connection`commit`;
      return result.command === "COMMIT";
    } finally {
      connection.release();
    }
  }

  async #insert(points: readonly Point[]): Promise<void> {
    const n = points.length;
    // Array literals built here rather than by the driver: numbers join natively
    // and the few distinct device and channel names (and tags) are quoted once.
    const times = new Array<number>(n);
    const values = new Array<number>(n);
    const devices = new Array<string>(n);
    const channels = new Array<string>(n);
    const tags = new Array<string>(n);
    const quoted = this.#quoted;
    for (let i = 0; i < n; i++) {
      const p = points[i]!;
      times[i] = p.time;
      values[i] = p.value;
      devices[i] = quoted.get(p.device) ?? this.#quote(p.device);
      channels[i] = quoted.get(p.channel) ?? this.#quote(p.channel);
      tags[i] = p.tags === null ? "NULL" : quoted.get(p.tags) ?? this.#quote(p.tags);
    }
    await this.#sql`
      insert into metrics (time, device, channel, value, tags)
      select to_timestamp(t / 1000.0), d, c, v, g::jsonb
      from unnest(${`{${times.join(",")}}`}::float8[], ${`{${devices.join(",")}}`}::text[],
        ${`{${channels.join(",")}}`}::text[], ${`{${values.join(",")}}`}::float8[],
        ${`{${tags.join(",")}}`}::text[]) as u(t, d, c, v, g)`;
  }

  readonly #quoted = new Map<string, string>();

  #quote(name: string): string {
    const element = arrayElement(name);
    if (this.#quoted.size >= 100_000) this.#quoted.clear();
    this.#quoted.set(name, element);
    return element;
  }

  async deleteOlderThan(cutoffMs: number): Promise<number> {
    const result = await this.#db.execute(
      sql`delete from ${metrics} where ${metrics.time} < to_timestamp(${cutoffMs / 1000})`,
    );
    return result.count ?? 0;
  }

  isDataError(error: unknown): boolean {
    if (!(error instanceof postgres.PostgresError)) return false;
    const code = error.code ?? "";
    // 22: data exception, 23: integrity constraint, 54: program limit exceeded.
    return code.startsWith("22") || code.startsWith("23") || code.startsWith("54");
  }

  async close(): Promise<void> {
    await this.#sql.end({ timeout: 5 });
  }
}

/**
 * Connects, migrates and sets up TimescaleDB when available. Rejects when the
 * database cannot be reached (the caller retries).
 */
export async function openPgWriter(
  url: string,
  options: PgWriterOptions = {},
): Promise<PgMetricsWriter> {
  const connections = options.connections ?? 2;
  const sql = client(url, connections);
  try {
    await migrate(drizzle(sql), { migrationsFolder: MIGRATIONS });
    const available = await timescaleAvailable(sql);
    let kind: "timescaledb" | "postgres" = "postgres";
    let fallbackReason: string | undefined;
    if (available && options.mode !== "off") {
      try {
        await setupTimescale(sql, options);
        kind = "timescaledb";
      } catch (error) {
        // E.g. not in shared_preload_libraries: the plain path still works.
        fallbackReason = (error as Error).message;
      }
    } else if (available) {
      fallbackReason = "timescaledb set to off";
    }
    const binaryCopy = binaryCopyFits(await columnTypes(sql));
    options.onSetup?.({ kind, timescaleAvailable: available, fallbackReason, binaryCopy });
    return new PgMetricsWriter(sql, kind, connections, binaryCopy);
  } catch (error) {
    await sql.end({ timeout: 1 }).catch(() => {});
    throw error;
  }
}

/** Reads bucketed series; detects TimescaleDB once a minute. */
export class PgMetricsReader implements MetricsReader {
  readonly #sql: Sql;
  readonly #db: PostgresJsDatabase;
  #engine?: { value: MetricsEngine; at: number };

  constructor(url: string, connections = 4) {
    this.#sql = client(url, connections);
    this.#db = drizzle(this.#sql);
  }

  async engine(): Promise<MetricsEngine> {
    const cached = this.#engine;
    if (cached && Date.now() - cached.at < 60_000) return cached.value;
    let value: MetricsEngine;
    try {
      value = (await isHypertable(this.#sql)) ? "time_bucket" : "date_bin";
    } catch (error) {
      throw new MetricsUnavailableError(
        `metrics database unavailable: ${(error as Error).message}`,
        { cause: error },
      );
    }
    this.#engine = { value, at: Date.now() };
    return value;
  }

  async query(query: BucketQuery): Promise<BucketRow[]> {
    const engine = await this.engine();
    if (!Number.isSafeInteger(query.bucketMs) || query.bucketMs <= 0) {
      throw new RangeError(`Bad bucket ${query.bucketMs}`);
    }
    const width = sql.raw(`interval '${query.bucketMs} milliseconds'`);
    // Both align buckets to the Unix epoch, as libSQL does, so all engines agree.
    const bucket = engine === "time_bucket"
      ? sql`time_bucket(${width}, ${metrics.time}, timestamptz 'epoch')`
      : sql`date_bin(${width}, ${metrics.time}, timestamptz 'epoch')`;
    const last = engine === "time_bucket"
      ? sql`last(${metrics.value}, ${metrics.time})`
      : sql`(array_agg(${metrics.value} order by ${metrics.time} desc) filter (where ${metrics.value} is not null))[1]`;
    try {
      const rows = await this.#db.execute<{
        t: number;
        min: number | null;
        max: number | null;
        avg: number | null;
        count: number;
        last: number | null;
      }>(sql`
        select (extract(epoch from ${bucket}) * 1000)::float8 as t,
          min(${metrics.value}) as min, max(${metrics.value}) as max,
          avg(${metrics.value}) as avg, count(${metrics.value})::int as count, ${last} as last
        from ${metrics}
        where ${metrics.device} = ${query.device} and ${metrics.channel} = ${query.channel}
          and ${metrics.time} >= to_timestamp(${query.from / 1000}::float8)
          and ${metrics.time} < to_timestamp(${query.to / 1000}::float8)
        group by 1 order by 1`);
      return rows.map((r) => ({
        time: Math.round(Number(r.t)),
        min: r.min,
        max: r.max,
        avg: r.avg === null ? null : Number(r.avg),
        count: Number(r.count),
        last: r.last,
      }));
    } catch (error) {
      // A query bug (class 42) is ours; a missing table, database or server is not.
      if (
        error instanceof postgres.PostgresError && error.code?.startsWith("42") &&
        error.code !== "42P01"
      ) throw error;
      throw new MetricsUnavailableError(
        `metrics database unavailable: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  async close(): Promise<void> {
    await this.#sql.end({ timeout: 5 });
  }
}
