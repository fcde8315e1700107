/**
 * Picks the metrics database from configuration: PostgreSQL when a URL is
 * given, else the embedded libSQL file.
 *
 * @module
 */
import { LibsqlMetricsReader, openLibsqlWriter } from "./libsql.ts";
import { openPgWriter, PgMetricsReader, type PgSetupReport } from "./pg.ts";
import type { MetricsReader, MetricsWriter } from "./store.ts";

/** Where the metrics live and how they are kept. */
export interface MetricsDatabaseOptions {
  /** `postgres://…`; empty for libSQL. */
  databaseUrl: string;
  /** libSQL file or URL, used when `databaseUrl` is empty. */
  db: string;
  dbAuthToken?: string;
  /** PostgreSQL connections (batches in flight). @default 2 */
  connections?: number;
  timescaledb?: "auto" | "off";
  retentionDays?: number;
  compressionAfterDays?: number;
  chunkIntervalHours?: number;
  onSetup?: (report: PgSetupReport) => void;
}

/** A function that opens (and migrates) the configured database: the ingester calls it until it works. */
export function metricsWriterOpener(options: MetricsDatabaseOptions): () => Promise<MetricsWriter> {
  if (options.databaseUrl !== "") {
    return () =>
      openPgWriter(options.databaseUrl, {
        connections: options.connections,
        mode: options.timescaledb,
        retentionDays: options.retentionDays,
        compressionAfterDays: options.compressionAfterDays,
        chunkIntervalHours: options.chunkIntervalHours,
        onSetup: options.onSetup,
      });
  }
  return () => openLibsqlWriter(options.db, options.dbAuthToken);
}

/** A reader of the configured database, or undefined when none is configured (`db` empty too). */
export function openMetricsReader(
  options: { databaseUrl: string; db: string; dbAuthToken?: string },
): MetricsReader | undefined {
  if (options.databaseUrl !== "") return new PgMetricsReader(options.databaseUrl);
  if (options.db !== "") return new LibsqlMetricsReader(options.db, options.dbAuthToken);
  return undefined;
}

export { redactUrl } from "../storage/url.ts";
