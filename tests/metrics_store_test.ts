/**
 * The metrics store end to end: real buses, the real ingester component and
 * the real PostgreSQL server on 127.0.0.1:5432 (a fresh database per test,
 * dropped afterwards), plus the embedded libSQL file. The TimescaleDB path
 * runs only where the server has the extension; elsewhere its test is
 * reported as ignored, not faked.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { Registry } from "prom-client";
import { Bus } from "../bus/bus.ts";
import { Publisher } from "../bus/publisher.ts";
import { type MetricsConfig, metricsConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { LibsqlMetricsReader, openLibsqlWriter } from "../metrics/libsql.ts";
import { openPgWriter, PgMetricsReader } from "../metrics/pg.ts";
import type { Point } from "../metrics/point.ts";
import type { BucketRow, MetricsReader, MetricsWriter } from "../metrics/store.ts";
import { type RunningMetrics, startMetrics } from "../roles/metrics.ts";
import { connectableEndpoint } from "../roles/running.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { freePort, metricSum, waitFor } from "./_helpers.ts";
import { type TestDatabase, timescaleOnServer, withDatabase } from "./_postgres.ts";

const T0 = Date.UTC(2024, 0, 1);

/** A metric bus, an ingester component on it and a publisher of each form. */
async function withIngester(
  overrides: Partial<MetricsConfig>,
  body: (parts: {
    metrics: RunningMetrics;
    registry: Registry;
    single: Publisher;
    frames: Publisher;
    healthUrl: string;
    counter: (name: string, labels?: Record<string, string>) => Promise<number>;
    /** Valid points (device "warmup") or, with `valid` false, malformed ones that take no buffer room. */
    warmUp: (valid?: boolean) => Promise<void>;
  }) => Promise<void>,
): Promise<void> {
  const bus = Bus.start({
    name: "metric",
    frontend: "tcp://127.0.0.1:*",
    backend: "tcp://127.0.0.1:*",
    sendHighWaterMark: 0,
    receiveHighWaterMark: 0,
  });
  const registry = new Registry();
  const port = freePort();
  const metrics = startMetrics({
    ...loadConfig(metricsConfig, { args: [], env: {} }),
    bus_endpoint: connectableEndpoint(bus.backend),
    health_port: port,
    log_level: "error",
    flush_interval_ms: 20,
    retry_max_ms: 200,
    timescaledb: "off",
    // Test points are from 2024: a retention delete would race with their inserts.
    retention_days: 0,
    ...overrides,
  }, registry);
  const single = new Publisher(connectableEndpoint(bus.frontend), { sendHighWaterMark: 0 });
  const frames = new Publisher(connectableEndpoint(bus.frontend), {
    form: "frames",
    sendHighWaterMark: 0,
  });
  const counter = (name: string, labels: Record<string, string> = {}) =>
    metricSum(registry, name, labels);
  // Subscriptions reach the bus asynchronously: publish until one message got through.
  const warmUp = async (valid = true) => {
    const probe = valid ? '{"device":"warmup","channel":"w","value":0}' : "probe";
    await waitFor(async () => {
      single.publish("org.plantd.Metric", probe);
      frames.publish("org.plantd.Metric", probe);
      return await counter("metrics_messages_received_total") >= 2;
    }, { what: "the ingester's subscription", intervalMs: 50 });
  };
  try {
    await body({
      metrics,
      registry,
      single,
      frames,
      healthUrl: `http://127.0.0.1:${port}/healthz`,
      counter,
      warmUp,
    });
  } finally {
    await single.close();
    await frames.close();
    await metrics.close();
    await bus.close();
    await sharedPoller().idle();
  }
}

interface HealthBody {
  status: string;
  checks: Array<{ name: string; status: string; output?: string }>;
}

async function health(url: string): Promise<{ status: number; body: HealthBody }> {
  const response = await fetch(url);
  return { status: response.status, body: await response.json() };
}

const goPayload = (i: number, device = "press") =>
  JSON.stringify({
    time: new Date(T0 + i * 1000).toISOString(),
    device,
    channel: "temperature",
    value: i + 0.5,
  });

async function countRows(db: TestDatabase, device?: string): Promise<number> {
  const [row] = device === undefined
    ? await db.sql`select count(*)::int as n from metrics where device <> 'warmup'`
    : await db.sql`select count(*)::int as n from metrics where device = ${device}`;
  return row!.n;
}

Deno.test("ingester stores Go and seed payloads from a real bus in PostgreSQL and counts malformed points", async () => {
  await withDatabase(async (db) => {
    await withIngester(
      { database_url: db.url },
      async ({ single, frames, counter, warmUp, healthUrl, metrics }) => {
        await warmUp();
        // The table exists once the ingester has opened (and migrated) the database.
        await waitFor(() => metrics.ingester.status().database === "up", { what: "database open" });
        // Go plantd: one frame, envelope immediately followed by the JSON.
        single.publish(
          "org.plantd.Metric",
          '{"time":"2024-01-01T00:00:00.250Z","device":"press","channel":"temperature","value":21.5}',
        );
        // Two frames, the seed's richer form with tags.
        frames.publish(
          "org.plantd.Metric",
          JSON.stringify({
            timestamp: "2024-01-01T01:00:00+01:00",
            service_name: "org.plantd.State",
            metric_name: "writes",
            value: 7,
            tags: { host: "a", zone: 2 },
          }),
        );
        for (
          const bad of [
            "not json",
            '{"device":"press","value":1}',
            '{"device":"press","channel":"c","value":"high"}',
            '{"device":"press","channel":"c","value":1,"time":"tomorrow"}',
            '{"service_name":"s","metric_name":"m","value":1,"tags":[1]}',
          ]
        ) single.publish("org.plantd.Metric", bad);
        // Names that need quoting in a PostgreSQL array literal, and a channel called NULL.
        single.publish(
          "org.plantd.Metric",
          JSON.stringify({
            time: "2024-01-01T00:00:01Z",
            device: 'a "b", {c} \\ d',
            channel: "NULL",
            value: -0.125,
            tags: { note: 'say "hi", \\o/ {}' },
          }),
        );
        await waitFor(async () => await countRows(db) === 3, { what: "three rows" });
        await waitFor(async () => await counter("metrics_points_rejected_total") === 5, {
          what: "five rejections",
        });
        const rows = await db.sql`
        select time, device, channel, value, tags from metrics where device <> 'warmup' order by time`;
        assert.deepEqual(rows.map((r) => ({ ...r })), [
          {
            time: new Date(T0),
            device: "org.plantd.State",
            channel: "writes",
            value: 7,
            tags: { host: "a", zone: 2 },
          },
          {
            time: new Date(T0 + 250),
            device: "press",
            channel: "temperature",
            value: 21.5,
            tags: null,
          },
          {
            time: new Date(T0 + 1000),
            device: 'a "b", {c} \\ d',
            channel: "NULL",
            value: -0.125,
            tags: { note: 'say "hi", \\o/ {}' },
          },
        ]);
        for (const reason of ["not_json", "channel", "value", "time", "tags"]) {
          assert.equal(await counter("metrics_points_rejected_total", { reason }), 1, reason);
        }
        assert.equal(await counter("metrics_points_dropped_total"), 0);
        // Plain PostgreSQL: BRIN index on time from the drizzle-kit migration.
        const [index] = await db.sql`
        select indexdef from pg_indexes where tablename = 'metrics' and indexname = 'metrics_time_brin'`;
        assert.match(index!.indexdef, /USING brin \("?time"?\)/);
        const up = await health(healthUrl);
        assert.equal(up.status, 200);
        assert.equal(up.body.checks[0]!.name, "metrics_database");
        assert.equal(up.body.checks[0]!.status, "UP");
      },
    );
  });
});

Deno.test("ingester buffers while PostgreSQL refuses connections, reports DOWN, and loses nothing when it returns", async () => {
  await withDatabase(async (db) => {
    await withIngester(
      { database_url: db.url },
      async ({ single, counter, warmUp, healthUrl, metrics }) => {
        await warmUp(false);
        await waitFor(() => metrics.ingester.status().database === "up", { what: "database open" });
        // The outage: no new connections, and the ingester's current ones are cut.
        await db.sql.end();
        await db.admin.unsafe(`alter database ${db.name} allow_connections false`);
        await db
          .admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${db.name}`;
        for (let i = 0; i < 3000; i++) single.publish("org.plantd.Metric", goPayload(i));
        await waitFor(() => metrics.ingester.status().buffered === 3000, {
          what: "3000 points buffered",
        });
        await waitFor(async () => (await health(healthUrl)).status === 503, {
          what: "healthz DOWN",
        });
        const down = await health(healthUrl);
        assert.equal(down.body.status, "DOWN");
        assert.match(down.body.checks[0]!.output ?? "", /3000\/500000 points buffered/);
        assert.ok(await counter("metrics_write_failures_total") >= 1);
        assert.equal(await counter("metrics_points_written_total"), 0);

        await db.admin.unsafe(`alter database ${db.name} allow_connections true`);
        await waitFor(async () => await counter("metrics_points_written_total") === 3000, {
          what: "every buffered point written",
          timeoutMs: 15_000,
        });
        const check = postgres(db.url, { max: 1, onnotice: () => {} });
        try {
          const [row] = await check`
          select count(*)::int as n, count(distinct value)::int as d from metrics where device = 'press'`;
          assert.deepEqual({ ...row }, { n: 3000, d: 3000 });
        } finally {
          await check.end();
        }
        assert.equal(await counter("metrics_points_dropped_total"), 0);
        await waitFor(async () => (await health(healthUrl)).status === 200, { what: "healthz UP" });
      },
    );
  });
});

Deno.test("ingester starts before its database exists, drops and counts points past the buffer, then migrates and flushes", async () => {
  await withDatabase(async (db) => {
    await withIngester(
      { database_url: db.url, buffer_points: 1000 },
      async ({ single, counter, healthUrl, metrics, warmUp }) => {
        await waitFor(async () => await counter("metrics_write_failures_total") >= 1, {
          what: "a failed open",
        });
        assert.equal((await health(healthUrl)).status, 503);
        assert.match(metrics.ingester.status().lastError ?? "", /does not exist/);
        await warmUp(false);
        for (let i = 0; i < 1500; i++) single.publish("org.plantd.Metric", goPayload(i));
        await waitFor(
          async () =>
            metrics.ingester.status().buffered +
                await counter("metrics_points_dropped_total", { reason: "buffer_full" }) === 1500,
          { what: "1500 points read" },
        );
        assert.equal(metrics.ingester.status().buffered, 1000);
        assert.equal(await counter("metrics_points_dropped_total", { reason: "buffer_full" }), 500);

        await db.admin.unsafe(`create database ${db.name}`);
        await waitFor(async () => await counter("metrics_points_written_total") === 1000, {
          what: "the buffer written",
          timeoutMs: 15_000,
        });
        const check = postgres(db.url, { max: 1, onnotice: () => {} });
        try {
          const rows = await check`select value from metrics where device = 'press' order by value`;
          // The first points were kept: nothing was dropped while there was room.
          assert.deepEqual(rows.map((r) => r.value), [...Array(1000).keys()].map((i) => i + 0.5));
        } finally {
          await check.end();
        }
        assert.equal((await health(healthUrl)).status, 200);
      },
    );
  }, false);
});

/** Known points over three series, with bucket boundaries, negatives and ties. */
function knownPoints(): Point[] {
  const points: Point[] = [];
  const values = [3, -1.5, 8, 8, 0.25, 2.25, -7, 100, 4, 4.5];
  // Irregular times over 2 minutes, several exactly on 10 s boundaries.
  const offsets = [0, 999, 9_999, 10_000, 10_001, 25_000, 29_999, 30_000, 61_234, 119_999];
  for (const [device, channel, scale] of [["a", "x", 1], ["a", "y", 10], ["b", "x", -1]] as const) {
    offsets.forEach((offset, i) => {
      points.push({ time: T0 + offset, device, channel, value: values[i]! * scale, tags: null });
    });
  }
  // Before the window, and at its exclusive end: never counted.
  points.push({ time: T0 - 1, device: "a", channel: "x", value: 1e6, tags: null });
  points.push({ time: T0 + 120_000, device: "a", channel: "x", value: -1e6, tags: null });
  return points;
}

/** What the buckets must hold, computed here. */
function expectedBuckets(
  points: Point[],
  device: string,
  channel: string,
  from: number,
  to: number,
  bucketMs: number,
): BucketRow[] {
  const buckets = new Map<number, Point[]>();
  for (const p of points) {
    if (p.device !== device || p.channel !== channel || p.time < from || p.time >= to) continue;
    const start = Math.floor(p.time / bucketMs) * bucketMs;
    buckets.set(start, [...(buckets.get(start) ?? []), p]);
  }
  return [...buckets.entries()].sort(([a], [b]) => a - b).map(([time, list]) => {
    const values = list.map((p) => p.value);
    const latest = list.reduce((a, b) => (b.time >= a.time ? b : a));
    return {
      time,
      min: Math.min(...values),
      max: Math.max(...values),
      avg: values.reduce((a, b) => a + b, 0) / values.length,
      count: values.length,
      last: latest.value,
    };
  });
}

async function checkQueries(writer: MetricsWriter, reader: MetricsReader): Promise<void> {
  const points = knownPoints();
  await writer.write(points);
  const from = T0;
  const to = T0 + 120_000;
  for (const bucketMs of [1000, 10_000, 30_000, 60_000, 3_600_000]) {
    for (const [device, channel] of [["a", "x"], ["a", "y"], ["b", "x"], ["b", "y"]]) {
      const got = await reader.query({ device: device!, channel: channel!, from, to, bucketMs });
      const want = expectedBuckets(points, device!, channel!, from, to, bucketMs);
      assert.equal(got.length, want.length, `${device}/${channel} by ${bucketMs}`);
      got.forEach((row, i) => {
        const expected = want[i]!;
        assert.ok(Math.abs(row.avg! - expected.avg!) < 1e-9, `avg ${row.avg} ${expected.avg}`);
        assert.deepEqual(
          { ...row, avg: 0 },
          { ...expected, avg: 0 },
          `${device}/${channel} ${bucketMs}`,
        );
      });
    }
  }
}

Deno.test("bucketed queries on plain PostgreSQL (date_bin) match values computed from known points", async () => {
  await withDatabase(async (db) => {
    const writer = await openPgWriter(db.url, { mode: "off" });
    const reader = new PgMetricsReader(db.url);
    try {
      assert.equal(writer.kind, "postgres");
      assert.equal(await reader.engine(), "date_bin");
      await checkQueries(writer, reader);
    } finally {
      await reader.close();
      await writer.close();
    }
  });
});

Deno.test("bucketed queries on libSQL match values computed from known points", async () => {
  const dir = await Deno.makeTempDir();
  const writer = await openLibsqlWriter(`${dir}/metrics.db`);
  const reader = new LibsqlMetricsReader(`${dir}/metrics.db`);
  try {
    assert.equal(await reader.engine(), "libsql");
    await checkQueries(writer, reader);
  } finally {
    await reader.close();
    await writer.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("retention deletes points older than retention_days on PostgreSQL and libSQL", async () => {
  const now = Date.now();
  const points: Point[] = [
    { time: now - 40 * 86_400_000, device: "d", channel: "c", value: 1, tags: null },
    { time: now - 29 * 86_400_000, device: "d", channel: "c", value: 2, tags: null },
    { time: now, device: "d", channel: "c", value: 3, tags: null },
  ];
  const dir = await Deno.makeTempDir();
  try {
    await withDatabase(async (db) => {
      for (
        const overrides of [
          { database_url: db.url, retention_days: 30 },
          { db: `${dir}/metrics.db`, retention_days: 30 },
        ]
      ) {
        await withIngester(overrides, async ({ metrics }) => {
          await waitFor(() => metrics.ingester.writer !== undefined, { what: "open" });
          const writer = metrics.ingester.writer!;
          // Let the delete the ingester runs at open finish before the points go in.
          await metrics.ingester.runRetention();
          await writer.write(points);
          // The ingester already ran its first scheduled delete at open; run one now.
          assert.equal(await metrics.ingester.runRetention(), 1);
          const reader = overrides.database_url
            ? new PgMetricsReader(db.url)
            : new LibsqlMetricsReader(`${dir}/metrics.db`);
          try {
            const rows = await reader.query({
              device: "d",
              channel: "c",
              from: now - 60 * 86_400_000,
              to: now + 1,
              bucketMs: 86_400_000,
            });
            assert.deepEqual(rows.map((r) => r.last).sort(), [2, 3]);
          } finally {
            await reader.close();
          }
        });
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const timescale = await timescaleOnServer().catch(() => false);

Deno.test({
  name: timescale
    ? "TimescaleDB: hypertable with compression and retention policies, time_bucket queries"
    : "TimescaleDB path NOT exercised: the server has no timescaledb extension",
  ignore: !timescale,
  async fn() {
    await withDatabase(async (db) => {
      const writer = await openPgWriter(db.url, {
        retentionDays: 30,
        compressionAfterDays: 7,
        chunkIntervalHours: 24,
      });
      const reader = new PgMetricsReader(db.url);
      try {
        assert.equal(writer.kind, "timescaledb");
        assert.equal(writer.managesRetention, true);
        const [hypertable] = await db.sql`
          select compression_enabled from timescaledb_information.hypertables
          where hypertable_name = 'metrics'`;
        assert.equal(hypertable?.compression_enabled, true);
        const jobs = await db.sql`
          select proc_name from timescaledb_information.jobs where hypertable_name = 'metrics'
          order by proc_name`;
        assert.deepEqual(jobs.map((j) => j.proc_name), ["policy_compression", "policy_retention"]);
        assert.equal(await reader.engine(), "time_bucket");
        await checkQueries(writer, reader);
        // Opening again (a restart with the same settings) keeps one policy of each.
        await (await openPgWriter(db.url, { retentionDays: 10 })).close();
        const again = await db.sql`
          select proc_name from timescaledb_information.jobs where hypertable_name = 'metrics'`;
        assert.equal(again.length, 2);
      } finally {
        await reader.close();
        await writer.close();
      }
    });
  },
});

Deno.test("a database made by Go plantd's logger is adopted: its rows stay, new points land, tags are added", async () => {
  await withDatabase(async (db) => {
    // Go plantd's migration (logger/db/migrations/20220327173220_create_metrics_table.go).
    await db.sql.unsafe(`CREATE TABLE IF NOT EXISTS metrics (
      time TIMESTAMP WITHOUT TIME ZONE NOT NULL,
      device text NULL, channel text NULL, value double PRECISION NULL)`);
    await db.sql.unsafe(
      `INSERT INTO metrics VALUES ('2024-01-01 00:00:00', 'boiler', 'temp', 60)`,
    );
    const writer = await openPgWriter(db.url, { mode: "off" });
    const reader = new PgMetricsReader(db.url);
    try {
      await writer.write([{
        time: Date.parse("2024-01-01T00:00:30Z"),
        device: "boiler",
        channel: "temp",
        value: 70,
        tags: '{"line":"1"}',
      }]);
      const rows = await db.sql`select time, value, tags from metrics order by time`;
      assert.equal(rows.length, 2);
      assert.equal(rows[1]!.tags.line, "1");
      const buckets = await reader.query({
        device: "boiler",
        channel: "temp",
        from: Date.parse("2024-01-01T00:00:00Z"),
        to: Date.parse("2024-01-01T00:01:00Z"),
        bucketMs: 60_000,
      });
      assert.equal(buckets.length, 1);
      assert.equal(buckets[0]!.count, 2);
      assert.equal(buckets[0]!.avg, 65);
      assert.equal(new Date(buckets[0]!.time).toISOString(), "2024-01-01T00:00:00.000Z");
      assert.equal(buckets[0]!.last, 70);
    } finally {
      await reader.close();
      await writer.close();
    }
  });
});
