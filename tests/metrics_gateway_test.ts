/**
 * GET /api/metrics on the real gateway (whole system on random ports) over
 * the real PostgreSQL server and a libSQL file: answers, 400s and 503s.
 */
import assert from "node:assert/strict";
import { openLibsqlWriter } from "../metrics/libsql.ts";
import { openPgWriter } from "../metrics/pg.ts";
import type { Point } from "../metrics/point.ts";
import { startSystem, type System } from "./_system.ts";
import { withDatabase } from "./_postgres.ts";

const T0 = Date.UTC(2024, 0, 1);

/** Six points of press/temperature over two minutes, and one of another channel. */
const POINTS: Point[] = [
  { time: T0, device: "press", channel: "temperature", value: 20, tags: null },
  { time: T0 + 10_000, device: "press", channel: "temperature", value: 22, tags: null },
  { time: T0 + 59_999, device: "press", channel: "temperature", value: 21, tags: null },
  { time: T0 + 60_000, device: "press", channel: "temperature", value: 30, tags: null },
  { time: T0 + 90_000, device: "press", channel: "temperature", value: 10, tags: '{"a":1}' },
  { time: T0 + 119_000, device: "press", channel: "temperature", value: 11, tags: null },
  { time: T0 + 5_000, device: "press", channel: "pressure", value: 99, tags: null },
];

const EXPECTED = [
  { time: "2024-01-01T00:00:00.000Z", min: 20, max: 22, avg: 21, count: 3, last: 21 },
  { time: "2024-01-01T00:01:00.000Z", min: 10, max: 30, avg: 17, count: 3, last: 11 },
];

async function get(system: System, query: string) {
  const response = await fetch(`${system.url}/api/metrics?${query}`);
  return { status: response.status, json: await response.json() };
}

const WINDOW = "device=press&channel=temperature&from=2024-01-01T00:00:00Z&to=2024-01-01T00:02:00Z";

Deno.test("GET /api/metrics answers bucketed aggregates from PostgreSQL and clear 400s", async () => {
  await withDatabase(async (db) => {
    const writer = await openPgWriter(db.url, { mode: "off" });
    await writer.write(POINTS);
    await writer.close();
    const system = await startSystem({ gateway: { metrics_database_url: db.url } });
    try {
      const ok = await get(system, `${WINDOW}&bucket=1m`);
      assert.equal(ok.status, 200, JSON.stringify(ok.json));
      assert.deepEqual(ok.json, {
        device: "press",
        channel: "temperature",
        from: "2024-01-01T00:00:00.000Z",
        to: "2024-01-01T00:02:00.000Z",
        bucket: "1m",
        bucket_ms: 60_000,
        engine: "date_bin",
        buckets: EXPECTED,
      });
      // Offsets are honoured; `to` is exclusive.
      const shifted = await get(
        system,
        "device=press&channel=temperature&from=2024-01-01T01:00:10%2B01:00&to=2024-01-01T00:01:00Z&bucket=10s",
      );
      assert.equal(shifted.status, 200);
      assert.deepEqual(shifted.json.buckets.map((b: { time: string }) => b.time), [
        "2024-01-01T00:00:10.000Z",
        "2024-01-01T00:00:50.000Z",
      ]);

      const bad: Array<[string, RegExp]> = [
        ["channel=temperature", /device/],
        ["device=press", /channel/],
        ["device=&channel=temperature", /device/],
        [`${WINDOW}&bucket=10x`, /bucket must be a duration/],
        [`${WINDOW}&bucket=0s`, /bucket must be a duration/],
        [`${WINDOW}&bucket=1.5s`, /bucket must be a duration/],
        [`${WINDOW}&bucket=1mo`, /bucket must be a duration/],
        ["device=press&channel=temperature&from=yesterday", /from must be an RFC 3339 time/],
        ["device=press&channel=temperature&to=2024-13-01T00:00:00Z", /to must be an RFC 3339 time/],
        [
          "device=press&channel=temperature&from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z",
          /from must be before to/,
        ],
        [
          "device=press&channel=temperature&from=2024-01-01T00:00:00Z&to=2024-02-01T00:00:00Z&bucket=1s",
          /2678400 buckets .* at most 10000/,
        ],
      ];
      for (const [query, message] of bad) {
        const answer = await get(system, query);
        assert.equal(answer.status, 400, query);
        assert.equal(answer.json.error.code, "BAD_REQUEST", query);
        assert.match(answer.json.error.message, message, query);
      }
      const spec = await (await fetch(`${system.url}/api/openapi.json`)).json();
      assert.ok(spec.paths["/api/metrics"]?.get, "the route is in the OpenAPI document");
    } finally {
      await system.stop();
    }
  });
});

Deno.test("GET /api/metrics answers 503 until the libSQL metrics database exists, then reads it", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/metrics.db`;
  const system = await startSystem({ gateway: { metrics_db: file, metrics_database_url: "" } });
  try {
    const missing = await get(system, `${WINDOW}&bucket=1m`);
    assert.equal(missing.status, 503);
    assert.equal(missing.json.error.code, "SERVICE_UNAVAILABLE");
    assert.match(missing.json.error.message, /does not exist/);
    // The gateway never creates the file.
    await assert.rejects(Deno.stat(file));

    const writer = await openLibsqlWriter(file);
    await writer.write(POINTS);
    await writer.close();
    const ok = await get(system, `${WINDOW}&bucket=1m`);
    assert.equal(ok.status, 200);
    assert.equal(ok.json.engine, "libsql");
    assert.deepEqual(ok.json.buckets, EXPECTED);
  } finally {
    await system.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
