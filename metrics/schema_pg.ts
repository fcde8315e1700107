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
import {
  bigint,
  doublePrecision,
  index,
  jsonb,
  pgTable,
  text,
  timestamp,
} from "drizzle-orm/pg-core";

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

/**
 * One row per message on the event buses (metrics/event.ts). A plain table
 * on TimescaleDB too: events are few next to points, and history is read
 * newest first by time and id.
 */
export const events = pgTable("events", {
  id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
  time: timestamp("time", { withTimezone: true, mode: "date" }).notNull(),
  bus: text("bus").notNull(),
  topic: text("topic").notNull(),
  device: text("device"),
  severity: text("severity"),
  kind: text("kind"),
  /** The payload as text: JSON when it was JSON, anything else as it came. */
  payload: text("payload").notNull(),
}, (table) => [
  index("events_time_idx").on(table.time, table.id),
  index("events_device_time_idx").on(table.device, table.time),
]);
