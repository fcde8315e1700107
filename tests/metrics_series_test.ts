/**
 * The list of series (GET /api/devices underneath): every (device, channel)
 * with its newest point, on the real PostgreSQL server and on a libSQL file,
 * found through the series index rather than a scan of the points.
 */
import assert from "node:assert/strict";
import { createClient } from "@libsql/client";
import {
  LibsqlMetricsReader,
  openLibsqlWriter,
  SERIES_SQL as LIBSQL_SERIES_SQL,
} from "../metrics/libsql.ts";
import { openPgWriter, PgMetricsReader, SERIES_SQL as PG_SERIES_SQL } from "../metrics/pg.ts";
import type { Point } from "../metrics/point.ts";
import type { MetricsReader, MetricsWriter } from "../metrics/store.ts";
import { withDatabase } from "./_postgres.ts";

const T0 = Date.UTC(2024, 0, 1);

/** Many points of few series, so a scan of the table would show in the plan. */
function points(): Point[] {
  const out: Point[] = [];
  for (let i = 0; i < 3000; i++) {
    out.push({
      time: T0 + i * 1000,
      device: "press",
      channel: "temperature",
      value: i,
      tags: null,
    });
    out.push({ time: T0 + i * 1000, device: "press", channel: "pressure", value: -i, tags: null });
    out.push({ time: T0 + i * 500, device: "boiler", channel: "level", value: i / 2, tags: null });
  }
  // Out of order: the newest point of a series is the latest time, not the last insert.
  out.push({ time: T0 - 5000, device: "boiler", channel: "level", value: 123, tags: null });
  out.push({ time: T0 + 7, device: "zone-ä", channel: "x", value: 0.5, tags: null });
  return out;
}

const EXPECTED = [
  { device: "boiler", channel: "level", time: T0 + 2999 * 500, value: 1499.5 },
  { device: "press", channel: "pressure", time: T0 + 2999 * 1000, value: -2999 },
  { device: "press", channel: "temperature", time: T0 + 2999 * 1000, value: 2999 },
  { device: "zone-ä", channel: "x", time: T0 + 7, value: 0.5 },
];

async function checkSeries(writer: MetricsWriter, reader: MetricsReader): Promise<void> {
  const all = points();
  for (let i = 0; i < all.length; i += 2000) await writer.write(all.slice(i, i + 2000));
  assert.deepEqual(await reader.series(100), EXPECTED);
  assert.deepEqual(await reader.series(2), EXPECTED.slice(0, 2));
  assert.deepEqual(await reader.series(1), EXPECTED.slice(0, 1));
}

Deno.test("series list with newest points on PostgreSQL, through the series index", async () => {
  await withDatabase(async (db) => {
    const writer = await openPgWriter(db.url, { mode: "off" });
    const reader = new PgMetricsReader(db.url);
    try {
      assert.deepEqual(await reader.series(10), []);
      await checkSeries(writer, reader);
      await db.sql`analyze metrics`;
      const plan = (await db.sql.unsafe(`explain ${PG_SERIES_SQL}`, [100]))
        .map((r) => Object.values(r)[0]).join("\n");
      assert.match(plan, /metrics_series_time_idx/, plan);
      assert.doesNotMatch(plan, /Seq Scan on metrics/, plan);
    } finally {
      await reader.close();
      await writer.close();
    }
  });
});

Deno.test("series list with newest points on libSQL, through the series index", async () => {
  const dir = await Deno.makeTempDir();
  const writer = await openLibsqlWriter(`${dir}/metrics.db`);
  const reader = new LibsqlMetricsReader(`${dir}/metrics.db`);
  try {
    assert.deepEqual(await reader.series(10), []);
    await checkSeries(writer, reader);
    const client = createClient({ url: `file:${dir}/metrics.db` });
    try {
      await client.execute("analyze");
      const plan = (await client.execute({
        sql: `explain query plan ${LIBSQL_SERIES_SQL}`,
        args: [100],
      })).rows.map((row) => String(row[3])).join("\n");
      // Every read of metrics goes through the series index (or a rowid lookup).
      for (const step of plan.split("\n").filter((line) => / metrics\b/.test(line))) {
        assert.match(step, /metrics_series_time_idx|INTEGER PRIMARY KEY/, plan);
      }
    } finally {
      client.close();
    }
  } finally {
    await reader.close();
    await writer.close();
    await Deno.remove(dir, { recursive: true });
  }
});
