/**
 * The metrics store on PostgreSQL through `postgres` (postgres.js) and
 * Drizzle: drizzle-kit migrations from migrations/metrics-pg, then, when the
 * server has the `timescaledb` extension, a hypertable with compression and
 * retention policies. Without it the table keeps its BRIN index on time and
 * the ingester deletes old points on a schedule.
 *
 * Inserts bypass the query builder: one prepared statement takes a batch as
 * five arrays (`unnest`), so any batch size is one round trip with five
 * parameters. Queries and deletes go through Drizzle's `sql` with the schema's
 * columns.
 *
 * @module
 */
import { and, desc, eq, gte, lt, or, type SQL, sql } from "drizzle-orm";
import { drizzle, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import { migrate } from "drizzle-orm/postgres-js/migrator";
import postgres from "postgres";
import type { Point } from "./point.ts";
import type { EventQuery, EventRecord, StoredEvent } from "./event.ts";
import { events, metrics } from "./schema_pg.ts";
import {
  type BucketQuery,
  type BucketRow,
  type MetricsEngine,
  type MetricsReader,
  MetricsUnavailableError,
  type MetricsWriter,
  type SeriesRow,
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
}

type Sql = postgres.Sql;

function client(url: string, max: number): Sql {
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

  constructor(sql: Sql, kind: "timescaledb" | "postgres", concurrency: number) {
    this.#sql = sql;
    this.#db = drizzle(sql);
    this.kind = kind;
    this.managesRetention = kind === "timescaledb";
    this.concurrency = concurrency;
  }

  async write(points: readonly Point[]): Promise<void> {
    const n = points.length;
    if (n === 0) return;
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

  async writeEvents(records: readonly EventRecord[]): Promise<void> {
    if (records.length === 0) return;
    // One JSON parameter whatever the batch size, as the libSQL store does.
    const rows = records.map((
      e,
    ) => [e.time, e.bus, e.topic, e.device, e.severity, e.kind, e.payload]);
    await this.#sql`
      insert into events (time, bus, topic, device, severity, kind, payload)
      select to_timestamp((r ->> 0)::float8 / 1000.0), r ->> 1, r ->> 2, r ->> 3, r ->> 4,
        r ->> 5, r ->> 6
      from jsonb_array_elements(${JSON.stringify(rows)}::jsonb) as r`;
  }

  async deleteEventsOlderThan(cutoffMs: number): Promise<number> {
    const result = await this.#db.execute(
      sql`delete from ${events} where ${events.time} < to_timestamp(${cutoffMs / 1000})`,
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
    options.onSetup?.({ kind, timescaleAvailable: available, fallbackReason });
    return new PgMetricsWriter(sql, kind, connections);
  } catch (error) {
    await sql.end({ timeout: 1 }).catch(() => {});
    throw error;
  }
}

/**
 * Every (device, channel) up to `$1` of them, with its newest point: the loose
 * index scan of the PostgreSQL wiki. Each step finds the next (device,
 * channel) after the previous one through the series index, then the series'
 * newest point at the end of its range.
 */
export const SERIES_SQL = `
  with recursive s(device, channel, n) as (
    (select device, channel, 1 from metrics
      where device is not null and channel is not null order by device, channel limit 1)
    union all
    select m.device, m.channel, s.n + 1 from s cross join lateral (
      select device, channel from metrics
      where (device, channel) > (s.device, s.channel) and channel is not null
      order by device, channel limit 1) m
    where s.n < $1
  )
  select s.device, s.channel, (extract(epoch from l.time) * 1000)::float8 as t, l.value
  from s cross join lateral (
    select time, value from metrics where device = s.device and channel = s.channel
    order by time desc limit 1) l
  order by s.n`;

/**
 * What a failed read throws: a query bug (class 42) is ours and goes as it
 * is; a missing table, database or server makes the store unavailable.
 */
function readFailure(error: unknown): unknown {
  if (
    error instanceof postgres.PostgresError && error.code?.startsWith("42") &&
    error.code !== "42P01"
  ) return error;
  return new MetricsUnavailableError(
    `metrics database unavailable: ${(error as Error).message}`,
    { cause: error },
  );
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
      throw readFailure(error);
    }
  }

  async series(limit: number): Promise<SeriesRow[]> {
    if (!Number.isSafeInteger(limit) || limit <= 0) throw new RangeError(`Bad limit ${limit}`);
    try {
      const rows = await this.#sql.unsafe<
        { device: string; channel: string; t: number; value: number | null }[]
      >(SERIES_SQL, [limit]);
      return rows.map((r) => ({
        device: r.device,
        channel: r.channel,
        time: Math.round(Number(r.t)),
        value: r.value,
      }));
    } catch (error) {
      throw readFailure(error);
    }
  }

  async queryEvents(query: EventQuery): Promise<StoredEvent[]> {
    const at = (ms: number) => new Date(ms);
    const where: SQL[] = [];
    if (query.from !== undefined) where.push(gte(events.time, at(query.from)));
    if (query.to !== undefined) where.push(lt(events.time, at(query.to)));
    if (query.device !== undefined) where.push(eq(events.device, query.device));
    if (query.severity !== undefined) where.push(eq(events.severity, query.severity));
    if (query.bus !== undefined) where.push(eq(events.bus, query.bus));
    if (query.topicPrefix !== undefined && query.topicPrefix !== "") {
      where.push(sql`starts_with(${events.topic}, ${query.topicPrefix})`);
    }
    if (query.before) {
      const { time, id } = query.before;
      where.push(
        or(lt(events.time, at(time)), and(eq(events.time, at(time)), lt(events.id, id)))!,
      );
    }
    try {
      const rows = await this.#db.select().from(events).where(and(...where))
        .orderBy(desc(events.time), desc(events.id)).limit(query.limit);
      return rows.map((row) => ({ ...row, time: row.time.getTime() }));
    } catch (error) {
      throw readFailure(error);
    }
  }

  async close(): Promise<void> {
    await this.#sql.end({ timeout: 5 });
  }
}
