/**
 * The events table on both stores, through the writers and readers the
 * ingester and the gateway use: the real PostgreSQL server (a fresh database
 * per test) and a libSQL file. Same rows in, same answers out.
 */
import assert from "node:assert/strict";
import { createClient } from "@libsql/client";
import type { EventQuery, EventRecord, StoredEvent } from "../metrics/event.ts";
import { LibsqlMetricsReader, openLibsqlWriter } from "../metrics/libsql.ts";
import { openPgWriter, PgMetricsReader } from "../metrics/pg.ts";
import type { MetricsReader, MetricsWriter } from "../metrics/store.ts";
import { withDatabase } from "./_postgres.ts";

const T0 = Date.UTC(2024, 0, 1);

const ev = (
  time: number,
  topic: string,
  device: string | null,
  severity: string | null,
  payload = "{}",
): EventRecord => ({ time, bus: "event", topic, device, severity, kind: "alarm", payload });

const EVENTS: EventRecord[] = [
  ev(T0, "alarm.pump1.temp", "pump1", "warning"),
  ev(T0 + 1000, "alarm.pump1.temp", "pump1", "critical", '{"a":"\u00e9"}'),
  ev(T0 + 2000, "alarm.pump2.flow", "pump2", "critical"),
  ev(T0 + 2000, "alarm.pump2.flow", "pump2", "info"),
  ev(T0 + 3000, "Alarm.x", null, null, "not json \uFFFD"),
  ev(T0 + 4000, "a%b_c", "weird", "info"),
  ev(T0 + 5000, "axb_c", "weird", "info"),
];

async function storeContract(writer: MetricsWriter, reader: MetricsReader): Promise<void> {
  await writer.writeEvents(EVENTS);
  const ask = (query: Partial<EventQuery>) => reader.queryEvents({ limit: 100, ...query });
  const times = (rows: StoredEvent[]) => rows.map((r) => [r.time - T0, r.severity]);

  const all = await ask({});
  assert.equal(all.length, EVENTS.length);
  // Newest first; equal times by id, newest first too.
  assert.deepEqual(times(all), [
    [5000, "info"],
    [4000, "info"],
    [3000, null],
    [2000, "info"],
    [2000, "critical"],
    [1000, "critical"],
    [0, "warning"],
  ]);
  assert.equal(all[5]!.payload, '{"a":"\u00e9"}');
  assert.equal(all[2]!.payload, "not json \uFFFD");
  assert.equal(all[2]!.device, null);

  assert.deepEqual(times(await ask({ device: "pump1" })), [[1000, "critical"], [0, "warning"]]);
  assert.deepEqual(times(await ask({ severity: "critical" })), [[2000, "critical"], [
    1000,
    "critical",
  ]]);
  assert.deepEqual(times(await ask({ device: "pump2", severity: "critical" })), [[
    2000,
    "critical",
  ]]);
  // from inclusive, to exclusive.
  assert.deepEqual(times(await ask({ from: T0 + 1000, to: T0 + 3000 })), [
    [2000, "info"],
    [2000, "critical"],
    [1000, "critical"],
  ]);
  // Prefixes are text: case counts, % and _ are literal.
  assert.equal((await ask({ topicPrefix: "alarm." })).length, 4);
  assert.deepEqual((await ask({ topicPrefix: "a%b" })).map((r) => r.topic), ["a%b_c"]);
  assert.deepEqual((await ask({ topicPrefix: "Alarm" })).map((r) => r.topic), ["Alarm.x"]);
  assert.equal((await ask({ bus: "other" })).length, 0);

  // Pages of two, continued from the last of each, cover every event once.
  const seen: number[] = [];
  let before: EventQuery["before"];
  while (true) {
    const page = await ask({ limit: 2, before });
    seen.push(...page.map((r) => r.id));
    if (page.length < 2) break;
    const last = page[page.length - 1]!;
    before = { time: last.time, id: last.id };
  }
  assert.deepEqual(seen, all.map((r) => r.id));

  assert.equal(await writer.deleteEventsOlderThan(T0 + 2000), 2);
  assert.equal((await ask({})).length, EVENTS.length - 2);
}

Deno.test("events on libSQL: filters, order, pages and retention", async () => {
  const dir = await Deno.makeTempDir();
  const writer = await openLibsqlWriter(`${dir}/m.db`);
  const reader = new LibsqlMetricsReader(`${dir}/m.db`);
  try {
    await storeContract(writer, reader);
  } finally {
    await reader.close();
    await writer.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("events on PostgreSQL: filters, order, pages and retention; NUL-free text", async () => {
  await withDatabase(async (db) => {
    const writer = await openPgWriter(db.url, { mode: "off" });
    const reader = new PgMetricsReader(db.url);
    try {
      await storeContract(writer, reader);
      // PostgreSQL text refuses U+0000: a data error, which the recorder drops alone.
      const error = await writer.writeEvents([ev(T0, "t", "d", "info", "a\u0000b")]).then(
        () => undefined,
        (e) => e,
      );
      assert.ok(error && writer.isDataError(error), String(error));
    } finally {
      await reader.close();
      await writer.close();
    }
  });
});

Deno.test("events before the ingester created the table: unavailable, not a crash", async () => {
  const dir = await Deno.makeTempDir();
  // A database file without the table (its ingester has not migrated it yet).
  const empty = createClient({ url: `file:${dir}/empty.db` });
  await empty.execute("create table other (x)");
  empty.close();
  const reader = new LibsqlMetricsReader(`${dir}/empty.db`);
  try {
    await assert.rejects(reader.queryEvents({ limit: 1 }), { name: "MetricsUnavailableError" });
  } finally {
    await reader.close();
    await Deno.remove(dir, { recursive: true });
  }
  await withDatabase(async (db) => {
    const pg = new PgMetricsReader(db.url);
    try {
      await assert.rejects(pg.queryEvents({ limit: 1 }), { name: "MetricsUnavailableError" });
    } finally {
      await pg.close();
    }
  });
});
