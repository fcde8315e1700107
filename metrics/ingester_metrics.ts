/**
 * Prometheus metrics of the metrics ingester (`main.ts metrics`) and of its
 * event recorder.
 *
 * @module
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { EVENT_REJECT_REASONS } from "./event.ts";
import type { EventRecorderObserver } from "./event_recorder.ts";
import type { DropReason, IngesterObserver } from "./ingester.ts";
import { REJECT_REASONS } from "./point.ts";

const DROP_REASONS: readonly DropReason[] = ["buffer_full", "rejected_by_database", "shutdown"];

/** Metrics fed by the ingester's observer. */
export interface IngesterMetrics extends IngesterObserver {
  /** 1 while the database takes writes, 0 while it fails. */
  databaseUp(up: boolean): void;
}

/** Creates the ingester's metrics in `registry`. */
export function ingesterMetrics(registry: Registry, capacity: number): IngesterMetrics {
  const registers = [registry];
  const received = new Counter({
    name: "metrics_messages_received_total",
    help: "Messages read from the metric bus",
    registers,
  });
  const rejected = new Counter({
    name: "metrics_points_rejected_total",
    help: "Malformed points, per reason",
    labelNames: ["reason"],
    registers,
  });
  const dropped = new Counter({
    name: "metrics_points_dropped_total",
    help: "Valid points that could not be stored, per reason",
    labelNames: ["reason"],
    registers,
  });
  const written = new Counter({
    name: "metrics_points_written_total",
    help: "Points stored in the database",
    registers,
  });
  const batchSeconds = new Histogram({
    name: "metrics_write_duration_seconds",
    help: "Time to store one batch",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers,
  });
  const failures = new Counter({
    name: "metrics_write_failures_total",
    help: "Failed writes and failed attempts to open the database (each is retried)",
    registers,
  });
  const buffered = new Gauge({
    name: "metrics_buffer_points",
    help: "Points held in memory, waiting for or being written",
    registers,
  });
  const bufferCapacity = new Gauge({
    name: "metrics_buffer_capacity_points",
    help: "Most points held in memory before new ones are dropped",
    registers,
  });
  const up = new Gauge({
    name: "metrics_database_up",
    help: "1 while the metrics database takes writes",
    registers,
  });
  const retention = new Counter({
    name: "metrics_retention_deleted_total",
    help: "Points deleted by the scheduled retention delete",
    registers,
  });
  for (const reason of REJECT_REASONS) rejected.inc({ reason }, 0);
  for (const reason of DROP_REASONS) dropped.inc({ reason }, 0);
  bufferCapacity.set(capacity);
  up.set(0);
  return {
    received: (count) => received.inc(count),
    rejected: (reason) => rejected.inc({ reason }),
    dropped: (reason, count) => dropped.inc({ reason }, count),
    written: (count, seconds) => {
      written.inc(count);
      batchSeconds.observe(seconds);
    },
    connectFailed: () => failures.inc(),
    writeFailed: () => failures.inc(),
    retention: (deleted) => retention.inc(deleted),
    buffered: (points) => buffered.set(points),
    databaseUp: (isUp) => up.set(isUp ? 1 : 0),
  };
}

/** Creates the event recorder's metrics in `registry`. */
export function eventRecorderMetrics(registry: Registry, capacity: number): EventRecorderObserver {
  const registers = [registry];
  const received = new Counter({
    name: "events_messages_received_total",
    help: "Messages read from the event buses",
    registers,
  });
  const rejected = new Counter({
    name: "events_rejected_total",
    help: "Event messages not recorded, per reason",
    labelNames: ["reason"],
    registers,
  });
  const dropped = new Counter({
    name: "events_dropped_total",
    help: "Events accepted but not stored, per reason",
    labelNames: ["reason"],
    registers,
  });
  const written = new Counter({
    name: "events_written_total",
    help: "Events stored in the database",
    registers,
  });
  const failures = new Counter({
    name: "events_write_failures_total",
    help: "Failed event writes (each is retried)",
    registers,
  });
  const buffered = new Gauge({
    name: "events_buffer_events",
    help: "Events held in memory, waiting for or being written",
    registers,
  });
  const bufferCapacity = new Gauge({
    name: "events_buffer_capacity_events",
    help: "Most events held in memory before new ones are dropped",
    registers,
  });
  const retention = new Counter({
    name: "events_retention_deleted_total",
    help: "Events deleted by the scheduled retention delete",
    registers,
  });
  for (const reason of EVENT_REJECT_REASONS) rejected.inc({ reason }, 0);
  for (const reason of DROP_REASONS) dropped.inc({ reason }, 0);
  bufferCapacity.set(capacity);
  return {
    received: (count) => received.inc(count),
    rejected: (reason) => rejected.inc({ reason }),
    dropped: (reason, count) => dropped.inc({ reason }, count),
    written: (count) => written.inc(count),
    writeFailed: () => failures.inc(),
    retention: (deleted) => retention.inc(deleted),
    buffered: (events) => buffered.set(events),
  };
}
