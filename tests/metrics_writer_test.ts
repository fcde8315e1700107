/**
 * The PostgreSQL writer against the real server when its connection dies in
 * the middle of a write: the write fails as a connection problem (not a data
 * error, so the ingester keeps the batch and retries), nothing is half
 * stored, and the writer connects again for the next write.
 */
import assert from "node:assert/strict";
import { openPgWriter } from "../metrics/pg.ts";
import type { Point } from "../metrics/point.ts";
import { waitFor } from "./_helpers.ts";
import { withDatabase } from "./_postgres.ts";

const point = (i: number): Point => ({
  time: Date.UTC(2024, 0, 1) + i,
  device: "d",
  channel: "c",
  value: i,
  tags: null,
});

Deno.test("a write whose connection dies fails as a connection problem; the next write reconnects", async () => {
  await withDatabase(async (db) => {
    const writer = await openPgWriter(db.url, { mode: "off", connections: 1 });
    try {
      await writer.write([point(1)]);
      let failed: unknown;
      // Another session holds the table, so the writer's INSERT waits on its
      // lock; its backend is terminated while it waits.
      await db.sql.begin(async (tx) => {
        await tx`lock table metrics in access exclusive mode`;
        const writing = writer.write([point(2), point(3)]).then(() => undefined, (e) => e);
        await waitFor(async () => {
          const rows = await db.admin`
            select pid from pg_stat_activity
            where datname = ${db.name} and application_name = 'plantd-metrics'
              and wait_event_type = 'Lock'`;
          if (rows.length === 0) return false;
          await db.admin`select pg_terminate_backend(${rows[0]!.pid}::int)`;
          return true;
        }, { what: "the writer's INSERT waiting on the lock" });
        failed = await writing;
      });
      assert.ok(failed, "the write whose connection died must fail");
      assert.equal(writer.isDataError(failed), false, String(failed));
      // The driver connects again. Its first query on the new session may
      // still fail with the old session's error (postgres.js keeps it), which
      // the ingester's retry absorbs: at most one failure here.
      let attempts = 0;
      while (true) {
        attempts++;
        try {
          await writer.write([point(4)]);
          break;
        } catch (error) {
          assert.equal(writer.isDataError(error), false, String(error));
          if (attempts >= 2) throw error;
        }
      }
      const rows = await db.sql<{ value: number }[]>`select value from metrics order by value`;
      assert.deepEqual(rows.map((r) => r.value), [1, 4]);
    } finally {
      await writer.close();
    }
  });
});
