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
