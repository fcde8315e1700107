/**
 * The PostgreSQL writer's binary COPY path against the real server: what it
 * stores equals the points (and what the INSERT path stores), a COPY the
 * server refuses falls back to the INSERT and its reason, and tables whose
 * column types do not fit binary COPY are written by INSERT.
 */
import assert from "node:assert/strict";
import { openPgWriter } from "../metrics/pg.ts";
import { binaryCopyFits } from "../metrics/pg_copy.ts";
import type { Point } from "../metrics/point.ts";
import { type TestDatabase, withDatabase } from "./_postgres.ts";

/** Points at the edges of each column's encoding. */
function edgePoints(): Point[] {
  const names = [
    "press-1",
    'quote"d',
    "back\\slash",
    "comma,brace{}",
    "ünïcødé ✓ 🌡",
    "x".repeat(1024),
  ];
  const times = [
    Date.UTC(2024, 0, 1),
    Date.UTC(2024, 0, 1) + 0.25, // below the millisecond
    Date.UTC(2000, 0, 1), // PostgreSQL's epoch: zero microseconds
    Date.UTC(2000, 0, 1) - 1, // just before it: negative
    Date.UTC(1969, 11, 31, 23, 59, 59, 999),
    Date.UTC(1066, 9, 14, 9, 0, 0, 1),
    Date.UTC(2262, 3, 11, 23, 47, 16, 854), // past 2^53 ns, well inside int64 µs
    Date.UTC(9999, 11, 31, 23, 59, 59, 999),
  ];
  const values = [0, -0, 1.5, -273.15, 1e308, -1e-308, 5e-324, Number.MAX_SAFE_INTEGER, 0.1 + 0.2];
  const tags = [null, '{"line":"a"}', '{"nested":{"deep":[1,2,{"k":"ü"}]},"n":-1.5e-7}', "{}"];
  const points: Point[] = [];
  for (let i = 0; i < 200; i++) {
    points.push({
      time: times[i % times.length]! + i * 7,
      device: names[i % names.length]!,
      channel: names[(i * 5 + 1) % names.length]!,
      value: values[i % values.length]!,
      tags: tags[i % tags.length]!,
    });
  }
  return points;
}

interface StoredRow {
  t: number;
  device: string;
  channel: string;
  value: number;
  tags: string | null;
}

async function stored(db: TestDatabase): Promise<StoredRow[]> {
  return await db.sql<StoredRow[]>`
    select (extract(epoch from time) * 1000)::float8 as t, device, channel, value,
      tags::text as tags
    from metrics order by time, device, channel, value`;
}

function expected(points: Point[]): StoredRow[] {
  return points.map((p) => ({
    t: p.time,
    device: p.device,
    channel: p.channel,
    value: p.value,
    tags: p.tags,
  })).sort((a, b) =>
    a.t - b.t || cmp(a.device, b.device) || cmp(a.channel, b.channel) || a.value - b.value
  );
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Sorted as the server sorts (collation order may differ from code points): by key. */
function byKey(rows: StoredRow[]): Map<string, StoredRow[]> {
  const map = new Map<string, StoredRow[]>();
  for (const row of rows) {
    const key = `${row.t}|${row.device}|${row.channel}|${row.value}`;
    map.set(key, [...(map.get(key) ?? []), row]);
  }
  return map;
}

Deno.test("binary COPY stores every point exactly: times before 1970 and 2000 and far ahead, any names, extreme values, tags", async () => {
  await withDatabase(async (db) => {
    const writer = await openPgWriter(db.url, { mode: "off" });
    try {
      assert.equal(writer.binaryCopy, true);
      const points = edgePoints();
      await writer.write(points);
      const got = byKey(await stored(db));
      const want = byKey(expected(points));
      assert.equal(got.size, want.size);
      for (const [key, rows] of want) {
        const gotRows = got.get(key);
        assert.ok(gotRows, `missing ${key}`);
        assert.equal(gotRows.length, rows.length, key);
        // jsonb prints keys and numbers its own way: compare the values.
        const tagsOf = (list: StoredRow[]) =>
          list.map((r) => r.tags === null ? null : JSON.parse(r.tags)).sort((a, b) =>
            cmp(JSON.stringify(a), JSON.stringify(b))
          );
        assert.deepEqual(tagsOf(gotRows), tagsOf(rows), key);
        for (const row of gotRows) {
          assert.ok(Object.is(row.value, rows[0]!.value), `${key}: ${row.value}`);
        }
      }
    } finally {
      await writer.close();
    }
  });
});

Deno.test("binary COPY and the INSERT path store the same rows", async () => {
  const points = edgePoints();
  let viaCopy: StoredRow[] = [];
  let viaInsert: StoredRow[] = [];
  await withDatabase(async (db) => {
    const writer = await openPgWriter(db.url, { mode: "off" });
    try {
      assert.equal(writer.binaryCopy, true);
      await writer.write(points);
      viaCopy = await stored(db);
    } finally {
      await writer.close();
    }
  });
  await withDatabase(async (db) => {
    // tags json rather than jsonb: the INSERT path casts, binary COPY cannot.
    await db.sql.unsafe(`create table metrics (time timestamptz not null, device text,
      channel text, value double precision, tags json)`);
    const writer = await openPgWriter(db.url, { mode: "off" });
    try {
      assert.equal(writer.binaryCopy, false);
      await writer.write(points);
      viaInsert = await stored(db);
    } finally {
      await writer.close();
    }
  });
  assert.equal(viaCopy.length, points.length);
  // Where they differ COPY is the exact one: the INSERT path's array literal
  // prints -0 as 0, and its to_timestamp(ms / 1000.0) is off by microseconds
  // far from 1970.
  const signless = (rows: StoredRow[]) =>
    rows.map((r) => ({ ...r, t: Math.round(r.t), value: r.value + 0 }));
  assert.ok(viaCopy.some((r) => Object.is(r.value, -0)));
  assert.deepEqual(byKey(signless(viaCopy)), byKey(signless(viaInsert)));
});

Deno.test("a COPY the server refuses falls back to INSERT, whose error says why; the connection stays usable", async () => {
  await withDatabase(async (db) => {
    const writer = await openPgWriter(db.url, { mode: "off", connections: 1 });
    try {
      assert.equal(writer.binaryCopy, true);
      await db.sql.unsafe(`alter table metrics add constraint below_1000 check (value < 1000)`);
      const good = (i: number): Point => ({
        time: Date.UTC(2024, 0, 1) + i,
        device: "d",
        channel: "c",
        value: i,
        tags: null,
      });
      const batch = [good(1), good(2), { ...good(3), value: 5000 }, good(4)];
      const error = await writer.write(batch).then(() => undefined, (e) => e);
      assert.ok(error, "the batch with a refused point must fail");
      assert.equal((error as { code?: string }).code, "23514");
      assert.equal(writer.isDataError(error), true);
      assert.equal((await stored(db)).length, 0, "all or nothing");
      // The one connection is not left in a transaction or a COPY.
      await writer.write([good(5), good(6)]);
      assert.deepEqual((await stored(db)).map((r) => r.value), [5, 6]);
      const aborted = await db.sql`
        select count(*)::int as n from pg_stat_activity
        where datname = ${db.name} and state like 'idle in transaction%'`;
      assert.equal(aborted[0]!.n, 0);
    } finally {
      await writer.close();
    }
  });
});

Deno.test("binary COPY is used only for the column types it encodes", () => {
  const fits = (types: Record<string, string>) => binaryCopyFits(new Map(Object.entries(types)));
  const base = {
    time: "timestamp with time zone",
    device: "text",
    channel: "text",
    value: "double precision",
    tags: "jsonb",
  };
  assert.equal(fits(base), true);
  assert.equal(fits({ ...base, time: "timestamp without time zone" }), true);
  assert.equal(fits({ ...base, device: "character varying" }), true);
  assert.equal(fits({ ...base, value: "real" }), false);
  assert.equal(fits({ ...base, value: "numeric" }), false);
  assert.equal(fits({ ...base, tags: "json" }), false);
  assert.equal(fits({ ...base, time: "bigint" }), false);
  const { tags: _, ...noTags } = base;
  assert.equal(fits(noTags), false);
});
