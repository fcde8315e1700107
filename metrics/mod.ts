/**
 * The metrics store: points from the metric bus into PostgreSQL (TimescaleDB
 * when available) or an embedded libSQL file, and bucketed queries of them.
 * See docs/metrics.md.
 *
 * @example
 * ```ts
 * import { MetricsIngester, metricsWriterOpener } from "./mod.ts";
 * import { Subscriber } from "../bus/subscriber.ts";
 * const subscriber = new Subscriber("tcp://127.0.0.1:13001", { bus: "metric", envelopes: ["org.plantd.Metric"] });
 * subscriber.subscribe("");
 * const ingester = new MetricsIngester(subscriber, metricsWriterOpener({ databaseUrl: "", db: "metrics.db" }));
 * ```
 *
 * @module
 */
export { parseDuration } from "./duration.ts";
export {
  type DropReason,
  type IngesterObserver,
  type IngesterOptions,
  type IngesterStatus,
  type MessageSource,
  MetricsIngester,
} from "./ingester.ts";
export { LibsqlMetricsReader, LibsqlMetricsWriter, openLibsqlWriter } from "./libsql.ts";
export { metricsWriterOpener, openMetricsReader } from "./open.ts";
export { openPgWriter, PgMetricsReader, PgMetricsWriter, setupTimescale } from "./pg.ts";
export {
  parsePoint,
  parseRfc3339,
  type Point,
  REJECT_REASONS,
  type RejectReason,
} from "./point.ts";
export {
  type BucketQuery,
  type BucketRow,
  type MetricsEngine,
  type MetricsReader,
  MetricsUnavailableError,
  type MetricsWriter,
} from "./store.ts";
