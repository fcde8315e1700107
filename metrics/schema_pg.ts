/**
 * The metrics table on PostgreSQL: the single source of truth for drizzle-kit,
 * which generates migrations/metrics-pg from this file
 * (`deno task db:generate:metrics`).
 *
 * Columns are Go plantd's (`time, device, channel, value`) plus `tags`, so
 * Grafana queries written for Go plantd keep working. The BRIN index on time
 * serves plain PostgreSQL, the series index finds one series' points and the
 * list of series; on TimescaleDB the table becomes a hypertable and
 * the BRIN index is dropped (chunks carry their own time index), see pg.ts.
 *
 * @module
 */
import { doublePrecision, index, jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";

/** One row per point. */
export const metrics = pgTable("metrics", {
  time: timestamp("time", { withTimezone: true, mode: "date" }).notNull(),
  device: text("device"),
  channel: text("channel"),
  value: doublePrecision("value"),
  tags: jsonb("tags"),
}, (table) => [
  index("metrics_time_brin").using("brin", table.time),
  // One series' points in time order: GET /api/metrics ranges, and the series
  // list's loose index scan (one probe per series, never a scan of the table).
  index("metrics_series_time_idx").on(table.device, table.channel, table.time),
]);
