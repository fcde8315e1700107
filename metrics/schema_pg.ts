/**
 * The metrics table on PostgreSQL: the single source of truth for drizzle-kit,
 * which generates migrations/metrics-pg from this file
 * (`deno task db:generate:metrics`).
 *
 * Columns are Go plantd's (`time, device, channel, value`) plus `tags`, so
 * Grafana queries written for Go plantd keep working. The BRIN index on time
 * serves plain PostgreSQL; on TimescaleDB the table becomes a hypertable and
 * the index is dropped (chunks carry their own time index), see pg.ts.
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
]);
