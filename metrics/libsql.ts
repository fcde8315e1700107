/**
 * The embedded metrics store: a libSQL file (or libSQL server) with the same
 * columns as on PostgreSQL, migrated from migrations/metrics-sqlite. `time` is
 * an integer in milliseconds since the epoch; buckets are integer arithmetic
 * aligned to the epoch, which is what `date_bin(…, 'epoch')` and
 * `time_bucket(…, origin => 'epoch')` compute on PostgreSQL.
 *
 * A batch is one statement: the points travel as one JSON array parameter
 * read back with `json_each`, so there is no bound on parameters per batch.
 *
 * @module
 */
import { type Client, createClient, LibsqlError } from "@libsql/client";
import { and, desc, eq, gte, lt, or, type SQL, sql } from "drizzle-orm";
import { drizzle, type LibSQLDatabase } from "drizzle-orm/libsql";
import { libsqlUrl, localPath, openLibsql } from "../storage/libsql.ts";
import type { Point } from "./point.ts";
import type { EventQuery, EventRecord, StoredEvent } from "./event.ts";
import { events, metrics } from "./schema_sqlite.ts";
import {
  type BucketQuery,
  type BucketRow,
  type MetricsEngine,
  type MetricsReader,
  MetricsUnavailableError,
  type MetricsWriter,
  type SeriesRow,
} from "./store.ts";

const MIGRATIONS = new URL("../migrations/metrics-sqlite", import.meta.url).pathname;

/** The writing side on libSQL. */
export class LibsqlMetricsWriter implements MetricsWriter {
  readonly kind = "libsql" as const;
  readonly managesRetention = false;
  /** SQLite has one writer. */
  readonly concurrency = 1;
  readonly #client: Client;
  readonly #db: LibSQLDatabase;

  constructor(client: Client) {
    this.#client = client;
    this.#db = drizzle(client);
  }

  async write(points: readonly Point[]): Promise<void> {
    if (points.length === 0) return;
    const rows = new Array<unknown[]>(points.length);
    for (let i = 0; i < points.length; i++) {
      const p = points[i]!;
      rows[i] = [p.time, p.device, p.channel, p.value, p.tags];
    }
    await this.#client.execute({
      sql: `insert into metrics (time, device, channel, value, tags)
        select value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 from json_each(?)`,
      args: [JSON.stringify(rows)],
    });
  }

  async deleteOlderThan(cutoffMs: number): Promise<number> {
    const result = await this.#db.run(
      sql`delete from ${metrics} where ${metrics.time} < ${cutoffMs}`,
    );
    return result.rowsAffected;
  }

  async writeEvents(records: readonly EventRecord[]): Promise<void> {
    if (records.length === 0) return;
    const rows = records.map((
      e,
    ) => [e.time, e.bus, e.topic, e.device, e.severity, e.kind, e.payload]);
    await this.#client.execute({
      sql: `insert into events (time, bus, topic, device, severity, kind, payload)
        select value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
          value ->> 6 from json_each(?)`,
      args: [JSON.stringify(rows)],
    });
  }

  async deleteEventsOlderThan(cutoffMs: number): Promise<number> {
    const result = await this.#db.run(
      sql`delete from ${events} where ${events.time} < ${cutoffMs}`,
    );
    return result.rowsAffected;
  }

  isDataError(error: unknown): boolean {
    const code = error instanceof LibsqlError ? error.code : "";
    return /^SQLITE_(CONSTRAINT|MISMATCH|TOOBIG|RANGE)/.test(code);
  }

  close(): Promise<void> {
    this.#client.close();
    return Promise.resolve();
  }
}

/** Opens (creating the file and its directory) and migrates the libSQL metrics database. */
export async function openLibsqlWriter(
  location: string,
  authToken?: string,
): Promise<LibsqlMetricsWriter> {
  // Telemetry: a crash of the process loses nothing committed; power loss may lose the last commits.
  const { client } = await openLibsql({
    location,
    authToken,
    synchronous: "normal",
    migrations: MIGRATIONS,
  });
  return new LibsqlMetricsWriter(client);
}

/**
 * Every (device, channel) up to `?` of them, with its newest point: a loose
 * scan of the series index. Each step finds the next (device, channel) after
 * the previous one: the next channel of the same device, else the first of
 * the next device (two index seeks: SQLite seeks a row-value comparison on its
 * first column only, which would step through every point of the device),
 * then the series' newest point at the end of its range.
 */
export const SERIES_SQL = `
  with recursive s(device, channel, n) as (
    select * from (select device, channel, 1 from metrics
      where device is not null and channel is not null order by device, channel limit 1)
    union all
    select m.device, m.channel, s.n + 1 from s join metrics m on m.rowid = coalesce(
      (select rowid from metrics where device = s.device and channel > s.channel
        order by channel limit 1),
      (select rowid from metrics where device > s.device and channel is not null
        order by device, channel limit 1))
    where s.n < ?
  )
  select s.device, s.channel, l.time, l.value from s join metrics l on l.rowid = (
    select rowid from metrics where device = s.device and channel = s.channel
    order by time desc limit 1)
  order by s.n`;

/**
 * What a failed read of `table` throws: unavailable while the table does not
 * exist yet (the ingester creates it), else the error as it is. Drizzle's
 * query builder wraps the driver's error ("Failed query: …"), the client does not.
 */
function readFailure(error: unknown, table: string): unknown {
  const cause = error instanceof Error && error.cause instanceof LibsqlError ? error.cause : error;
  if (cause instanceof LibsqlError && /no such table/.test(cause.message)) {
    return new MetricsUnavailableError(`${table} table does not exist yet`, { cause: error });
  }
  return error;
}

/** The reading side on libSQL; opens the database on first use, never creates it. */
export class LibsqlMetricsReader implements MetricsReader {
  readonly #url: string;
  readonly #authToken?: string;
  #client?: Client;

  constructor(location: string, authToken?: string) {
    this.#url = libsqlUrl(location);
    this.#authToken = authToken;
  }

  engine(): Promise<MetricsEngine> {
    return Promise.resolve("libsql");
  }

  async #open(): Promise<Client> {
    if (this.#client) return this.#client;
    const path = localPath(this.#url);
    if (path !== undefined) {
      try {
        await Deno.stat(path);
      } catch {
        throw new MetricsUnavailableError(
          `metrics database ${path} does not exist (is the metrics ingester running?)`,
        );
      }
    }
    const client = createClient({ url: this.#url, authToken: this.#authToken });
    if (path !== undefined) await client.execute("PRAGMA busy_timeout = 5000");
    this.#client = client;
    return client;
  }

  async query(query: BucketQuery): Promise<BucketRow[]> {
    const client = await this.#open();
    const db = drizzle(client);
    const b = query.bucketMs;
    if (!Number.isSafeInteger(b) || b <= 0) throw new RangeError(`Bad bucket ${b}`);
    // Floor to the bucket also before the epoch (SQLite's % truncates toward zero).
    const bucket = sql`(${metrics.time} - ((${metrics.time} % ${sql.raw(String(b))}) + ${
      sql.raw(String(b))
    }) % ${sql.raw(String(b))})`;
    try {
      const rows = await db.all<
        [number, number | null, number | null, number | null, number, number | null]
      >(sql`
        select bucket, min(value), max(value), avg(value), count(value),
          max(case when latest = 1 then value end)
        from (
          select ${bucket} as bucket, ${metrics.value} as value,
            row_number() over (partition by ${bucket} order by ${metrics.time} desc) as latest
          from ${metrics}
          where ${metrics.device} = ${query.device} and ${metrics.channel} = ${query.channel}
            and ${metrics.time} >= ${query.from} and ${metrics.time} < ${query.to}
        )
        group by bucket order by bucket`);
      return rows.map((r) => {
        const row = Array.isArray(r) ? r : Object.values(r as Record<string, unknown>);
        return {
          time: Number(row[0]),
          min: row[1] as number | null,
          max: row[2] as number | null,
          avg: row[3] as number | null,
          count: Number(row[4]),
          last: row[5] as number | null,
        };
      });
    } catch (error) {
      throw readFailure(error, "metrics");
    }
  }

  async series(limit: number): Promise<SeriesRow[]> {
    if (!Number.isSafeInteger(limit) || limit <= 0) throw new RangeError(`Bad limit ${limit}`);
    const client = await this.#open();
    try {
      const result = await client.execute({
        sql: SERIES_SQL,
        args: [limit],
      });
      return result.rows.map((row) => ({
        device: String(row[0]),
        channel: String(row[1]),
        time: Number(row[2]),
        value: row[3] === null ? null : Number(row[3]),
      }));
    } catch (error) {
      throw readFailure(error, "metrics");
    }
  }

  async queryEvents(query: EventQuery): Promise<StoredEvent[]> {
    const db = drizzle(await this.#open());
    const where: SQL[] = [];
    if (query.from !== undefined) where.push(gte(events.time, query.from));
    if (query.to !== undefined) where.push(lt(events.time, query.to));
    if (query.device !== undefined) where.push(eq(events.device, query.device));
    if (query.severity !== undefined) where.push(eq(events.severity, query.severity));
    if (query.bus !== undefined) where.push(eq(events.bus, query.bus));
    if (query.topicPrefix !== undefined && query.topicPrefix !== "") {
      // Not LIKE: SQLite's ignores case, and the prefix may hold % and _.
      where.push(
        sql`substr(${events.topic}, 1, length(${query.topicPrefix})) = ${query.topicPrefix}`,
      );
    }
    if (query.before) {
      const { time, id } = query.before;
      where.push(or(lt(events.time, time), and(eq(events.time, time), lt(events.id, id)))!);
    }
    try {
      return await db.select().from(events).where(and(...where))
        .orderBy(desc(events.time), desc(events.id)).limit(query.limit);
    } catch (error) {
      throw readFailure(error, "events");
    }
  }

  close(): Promise<void> {
    this.#client?.close();
    this.#client = undefined;
    return Promise.resolve();
  }
}
