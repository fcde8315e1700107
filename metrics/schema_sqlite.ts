/**
 * The metrics table on libSQL (the embedded default): the same columns as on
 * PostgreSQL. `time` is an integer, milliseconds since the Unix epoch (UTC),
 * which keeps bucketing plain integer arithmetic; `tags` is JSON text.
 * drizzle-kit generates migrations/metrics-sqlite from this file.
 *
 * @module
 */
import { index, integer, real, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** One row per point. */
export const metrics = sqliteTable("metrics", {
  /** Milliseconds since the Unix epoch. */
  time: integer("time").notNull(),
  device: text("device"),
  channel: text("channel"),
  value: real("value"),
  /** JSON text. */
  tags: text("tags"),
}, (table) => [
  index("metrics_series_time_idx").on(table.device, table.channel, table.time),
  index("metrics_time_idx").on(table.time),
]);

/** One row per message on the event buses (metrics/event.ts); `time` as in metrics. */
export const events = sqliteTable("events", {
  id: integer("id").primaryKey({ autoIncrement: true }),
  /** Milliseconds since the Unix epoch. */
  time: integer("time").notNull(),
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
