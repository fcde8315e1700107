/**
 * `main.ts metrics`: the metrics ingester, from the metric bus into
 * PostgreSQL/TimescaleDB or the embedded libSQL file.
 *
 * @module
 */
import { Registry } from "prom-client";
import { Subscriber } from "../bus/subscriber.ts";
import { type MetricsConfig, metricsConfig } from "../config/components.ts";
import { metricsAccess } from "../config/metrics_token.ts";
import { clientCurve } from "../config/curve.ts";
import { EventRecorder } from "../metrics/event_recorder.ts";
import { MetricsIngester } from "../metrics/ingester.ts";
import { libsqlUrl } from "../storage/libsql.ts";
import { metricsWriterOpener } from "../metrics/open.ts";
import { redactUrl } from "../storage/postgres.ts";
import type { Check } from "../telemetry/health.ts";
import { eventRecorderMetrics, ingesterMetrics } from "../metrics/ingester_metrics.ts";
import type { Logger } from "@logtape/logtape";
import { logger } from "../telemetry/log.ts";
import { logLimiter } from "../telemetry/log_window.ts";
import { processMetrics } from "../telemetry/process_metrics.ts";
import { startHealthServer } from "./health_server.ts";
import type { Running } from "./running.ts";

/** A running ingester with its health checks (dev adds them to the gateway's). */
export interface RunningMetrics extends Running {
  ingester: MetricsIngester;
  /** Records the event buses (docs/events.md); undefined with `event_buses` {}. */
  events?: EventRecorder;
  checks(): Check[];
  healthPort: number;
  /** Where the points go, for people (password hidden). */
  database: string;
}

/** Starts the ingester; it buffers until the database can be opened. */
export function startMetrics(
  config: MetricsConfig,
  registry: Registry = new Registry(),
): RunningMetrics {
  const log = logger("metrics");
  // Read (and checked) before anything opens: a bad token file is a config error.
  const access = metricsAccess(metricsConfig, config);
  const curve = clientCurve("metrics", config);
  if (!registry.getSingleMetric("process_cpu_seconds_total")) processMetrics(registry);
  const metrics = ingesterMetrics(registry, config.buffer_points);
  const limited = logLimiter(10_000);
  const database = config.database_url !== ""
    ? redactUrl(config.database_url)
    : libsqlUrl(config.db);
  const open = metricsWriterOpener({
    databaseUrl: config.database_url,
    db: config.db,
    dbAuthToken: config.db_auth_token,
    connections: config.write_concurrency,
    timescaledb: config.timescaledb,
    retentionDays: config.retention_days,
    compressionAfterDays: config.compression_after_days,
    chunkIntervalHours: config.chunk_interval_hours,
    onSetup: (report) => {
      if (report.kind === "timescaledb") {
        log.info("TimescaleDB: metrics is a hypertable with compression and retention policies", {
          compression_after_days: config.compression_after_days,
          retention_days: config.retention_days,
        });
      } else {
        log.info("plain PostgreSQL: BRIN index on time, retention by scheduled delete", {
          timescale_available: report.timescaleAvailable,
          ...(report.fallbackReason ? { reason: report.fallbackReason } : {}),
        });
      }
    },
  });
  const subscriber = new Subscriber(config.bus_endpoint, {
    bus: "metric",
    envelopes: config.envelopes,
    receiveHighWaterMark: config.receive_hwm,
    ...(curve ? { curve } : {}),
  });
  subscriber.subscribe(config.subscribe);
  const ingester = new MetricsIngester(subscriber, open, {
    batchSize: config.batch_size,
    bufferPoints: config.buffer_points,
    flushIntervalMs: config.flush_interval_ms,
    retryMaxMs: config.retry_max_ms,
    retentionDays: config.retention_days,
    retentionIntervalMs: config.retention_interval_ms,
  }, {
    ...metrics,
    ...lossLogging(log, limited, metrics, {
      keyPrefix: "",
      rejected: "rejected a point: {reason}",
      dropped: "dropped {count} points: {reason}",
    }),
    connected: (writer) => {
      metrics.databaseUp(true);
      log.info("metrics database open ({kind})", { kind: writer.kind, database });
    },
    connectFailed: (error, retryMs) => {
      metrics.connectFailed?.(error, retryMs);
      metrics.databaseUp(false);
      limited(
        "connect",
        (suppressed) =>
          log.warn("cannot open the metrics database: {error}; retrying", {
            error: (error as Error).message ?? String(error),
            retry_ms: retryMs,
            database,
            suppressed_since_last: suppressed,
          }),
      );
    },
    writeFailed: (error, retryMs, points) => {
      metrics.writeFailed?.(error, retryMs, points);
      metrics.databaseUp(false);
      limited("write", (suppressed) =>
        log.warn("write failed: {error}; buffering and retrying", {
          error: (error as Error).message ?? String(error),
          retry_ms: retryMs,
          buffered: ingester.status().buffered,
          suppressed_since_last: suppressed,
        }));
    },
    recovered: (downMs) => {
      metrics.databaseUp(true);
      log.info("metrics database back after {seconds} s", {
        seconds: Math.round(downMs / 100) / 10,
        buffered: ingester.status().buffered,
      });
    },
    ...retentionLogging(log, metrics, "points", "retention"),
  });
  const events = startEventRecorder(config, registry, ingester, limited);
  const checks = (): Check[] => {
    const status = ingester.status();
    const up = status.database === "up";
    return [{
      name: "metrics_database",
      status: up ? "UP" : "DOWN",
      lastUpdated: new Date(status.since).toISOString(),
      ...(up ? {} : {
        output: `${
          status.lastError ?? "not open yet"
        }; ${status.buffered}/${status.capacity} points buffered`,
      }),
    }];
  };
  const health = startHealthServer(
    "metrics",
    config.health_host,
    config.health_port,
    checks,
    registry,
    access,
  );
  log.info("metrics ingester reading {bus} into {database}", {
    bus: config.bus_endpoint,
    database,
    subscribe: config.subscribe,
    health: health.port ? `http://${config.health_host}:${health.port}/healthz` : "off",
  });
  return {
    ingester,
    ...(events ? { events } : {}),
    checks,
    healthPort: health.port,
    database,
    async close() {
      await health.close();
      // First: it writes through the ingester's database. Without one open there is
      // nothing to flush into, so the ingester's own wait is not spent twice.
      await events?.close(ingester.writer ? 5000 : 0);
      await ingester.close();
      log.info("metrics ingester stopped");
    },
  };
}

/** Subscribes to the configured event buses and records them through the ingester's database. */
function startEventRecorder(
  config: MetricsConfig,
  registry: Registry,
  ingester: MetricsIngester,
  limited: ReturnType<typeof logLimiter>,
): EventRecorder | undefined {
  const buses = Object.entries(config.event_buses);
  if (buses.length === 0) return undefined;
  const log = logger("metrics");
  const curve = clientCurve("metrics", config);
  const sources = buses.map(([bus, endpoint]) => {
    const subscriber = new Subscriber(endpoint, {
      bus,
      envelopes: config.event_envelopes,
      receiveHighWaterMark: config.receive_hwm,
      ...(curve ? { curve } : {}),
    });
    subscriber.subscribe(config.event_subscribe);
    return subscriber;
  });
  const metrics = eventRecorderMetrics(registry, config.event_buffer);
  const recorder = new EventRecorder(sources, () => ingester.writer, {
    bufferEvents: config.event_buffer,
    flushIntervalMs: config.flush_interval_ms,
    retryMaxMs: config.retry_max_ms,
    retentionDays: config.event_retention_days,
    retentionIntervalMs: config.retention_interval_ms,
    maxPayloadBytes: config.event_max_payload_bytes,
  }, {
    ...metrics,
    ...lossLogging(log, limited, metrics, {
      keyPrefix: "event-",
      rejected: "did not record an event: {reason}",
      dropped: "dropped {count} events: {reason}",
    }),
    writeFailed: (error, retryMs, events) => {
      metrics.writeFailed?.(error, retryMs, events);
      limited(
        "event-write",
        (suppressed) =>
          log.warn("event write failed: {error}; buffering and retrying", {
            error: (error as Error).message ?? String(error),
            retry_ms: retryMs,
            events,
            suppressed_since_last: suppressed,
          }),
      );
    },
    ...retentionLogging(log, metrics, "events", "event retention"),
  });
  log.info("recording event buses {buses}", {
    buses: Object.fromEntries(buses),
    subscribe: config.event_subscribe,
  });
  return recorder;
}

/**
 * The retention callbacks of the points' and the events' writers: counted by
 * `metrics`, each deletion logged on `log` with what it deleted, failures as `what`.
 */
/**
 * Rejected and dropped points or events: counted by `metrics` and logged
 * (warning, error) at most once per window per reason, with the number held
 * back. `messages` word them; `keyPrefix` keeps each kind's window apart.
 */
function lossLogging<R extends string, D extends string>(
  log: Logger,
  limited: ReturnType<typeof logLimiter>,
  metrics: {
    rejected?(reason: R, detail: string): void;
    dropped?(reason: D, count: number, detail?: string): void;
  },
  messages: { keyPrefix: string; rejected: string; dropped: string },
) {
  return {
    rejected: (reason: R, detail: string) => {
      metrics.rejected?.(reason, detail);
      limited(
        `${messages.keyPrefix}rejected:${reason}`,
        (suppressed) =>
          log.warn(messages.rejected, { reason, detail, suppressed_since_last: suppressed }),
      );
    },
    dropped: (reason: D, count: number, detail?: string) => {
      metrics.dropped?.(reason, count, detail);
      limited(
        `${messages.keyPrefix}dropped:${reason}`,
        (suppressed) =>
          log.error(messages.dropped, {
            count,
            reason,
            detail,
            suppressed_since_last: suppressed,
          }),
      );
    },
  };
}

function retentionLogging(
  log: Logger,
  metrics: { retention?(deleted: number, cutoffMs: number): void },
  rows: string,
  what: string,
) {
  return {
    retention: (deleted: number, cutoffMs: number) => {
      metrics.retention?.(deleted, cutoffMs);
      if (deleted > 0) {
        log.info(`retention deleted {deleted} ${rows} older than {cutoff}`, {
          deleted,
          cutoff: new Date(cutoffMs).toISOString(),
        });
      }
    },
    retentionFailed: (error: unknown) =>
      log.warn(`${what} delete failed: {error}`, { error: (error as Error).message }),
  };
}
