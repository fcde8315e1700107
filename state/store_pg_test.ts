/**
 * The PostgreSQL state store against a real server (a fresh database per
 * test): workers starting together on an empty database, a deadlock retried,
 * a write refused by the database failing alone, and two stores on one
 * database numbering a scope's changes in commit order.
 */
import assert from "node:assert/strict";
import { withDatabase } from "../tests/_postgres.ts";
import { openPgStateDatabase, STATE_LOCK_CLASS } from "./db_pg.ts";
import type { Change } from "./store.ts";
import { PgStateStore, scopeLockKey } from "./store_pg.ts";

Deno.test("state workers starting together on an empty PostgreSQL database all migrate and open", async () => {
  await withDatabase(async (db) => {
    const opened = await Promise.allSettled(
      Array.from({ length: 6 }, () => openPgStateDatabase({ url: db.url, poolSize: 2 })),
    );
    for (const result of opened) if (result.status === "fulfilled") await result.value.close();
    const failed = opened.flatMap((r) => r.status === "rejected" ? [String(r.reason)] : []);
    assert.deepEqual(failed, []);
    const [row] = await db.sql`select count(*)::int as n from drizzle.__drizzle_migrations_state`;
    assert.equal(row!.n, 1);
  });
});

Deno.test("a deadlock with another transaction is retried and the writes of the group succeed", async () => {
  await withDatabase(async (db) => {
    const retries: string[] = [];
    const store = new PgStateStore(await openPgStateDatabase({ url: db.url, poolSize: 2 }), {
      onRetry: (error) => retries.push((error as { code?: string }).code ?? String(error)),
    });
    try {
      // The group locks its scopes in ascending key order: it takes `low`, then waits for
      // `high`, which the other transaction holds; that one then asks for `low`.
      const [low, high] = ["a", "b"].sort((x, y) => scopeLockKey(x) - scopeLockKey(y));
      let otherDone: Promise<unknown> | undefined;
      await db.sql.begin(async (tx) => {
        await tx`select pg_advisory_xact_lock(${STATE_LOCK_CLASS}::int4, ${
          scopeLockKey(high!)
        }::int4)`;
        const writes = [low!, high!].map((scope) =>
          store.write({ kind: "set", scope, entries: [["k", "v"]] })
        );
        otherDone = Promise.allSettled(writes);
        // Wait until the group holds `low` and waits for `high`.
        for (;;) {
          const [row] = await tx`select count(*)::int as n from pg_locks
            where locktype = 'advisory' and not granted and objid = ${
            scopeLockKey(high!)
          }::int4::oid`;
          if (row!.n > 0) break;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        // Now a cycle: the server breaks it by failing the group's transaction (it waited first).
        await tx`select pg_advisory_xact_lock(${STATE_LOCK_CLASS}::int4, ${
          scopeLockKey(low!)
        }::int4)`;
      });
      const results = await otherDone;
      assert.deepEqual(results, [
        { status: "fulfilled", value: { kind: "set", revisions: [1] } },
        { status: "fulfilled", value: { kind: "set", revisions: [1] } },
      ]);
      assert.ok(retries.includes("40P01"), `retried on: ${retries.join(", ")}`);
      assert.equal((await store.get("a", "k"))?.value, "v");
    } finally {
      await store.close();
    }
  });
});

Deno.test("a write the database refuses fails alone: the other writes of its group are committed", async () => {
  await withDatabase(async (db) => {
    const store = new PgStateStore(await openPgStateDatabase({ url: db.url, poolSize: 2 }));
    try {
      // Past what a btree index row holds (program_limit_exceeded, 54000): only reachable
      // below the operations' name limit, which is why it is written to the store directly.
      const random = new Uint16Array(2000);
      crypto.getRandomValues(random);
      // Random CJK characters: too many bytes for the index, and nothing to compress.
      const huge = String.fromCharCode(...random.map((n) => 0x4e00 + n % 0x5000));
      const writes = [
        store.write({ kind: "set", scope: "s", entries: [["before", "1"]] }),
        store.write({ kind: "set", scope: "s", entries: [[huge, "x"]] }),
        store.write({ kind: "set", scope: "s", entries: [["after", "2"]] }),
      ];
      const [before, bad, after] = await Promise.allSettled(writes);
      assert.equal(before?.status, "fulfilled");
      assert.equal(after?.status, "fulfilled");
      assert.equal(bad?.status, "rejected");
      assert.equal((bad as PromiseRejectedResult).reason.code, "54000");
      assert.deepEqual(await store.keys("s"), ["after", "before"]);
    } finally {
      await store.close();
    }
  });
});

Deno.test("two stores on one database, clocks an hour apart: a key's revisions strictly increase and its scope's changes are numbered in commit order", async () => {
  await withDatabase(async (db) => {
    const changes: Change[] = [];
    // Machines whose clocks disagree by an hour: the numbering must not follow either clock.
    const stores = await Promise.all(
      [0, 3_600_000].map(async (skew) =>
        new PgStateStore(await openPgStateDatabase({ url: db.url, poolSize: 2 }), {
          onChanges: (list) => changes.push(...list),
          now: () => Date.now() + skew,
        })
      ),
    );
    try {
      await Promise.all(stores.map(async (store, s) => {
        for (let i = 0; i < 40; i++) {
          // Several writes per turn, so groups of both stores interleave on the same keys.
          await Promise.all(
            [0, 1, 2].map((k) =>
              store.write({ kind: "set", scope: "plant", entries: [[`k${k}`, `${s}-${i}`]] })
            ),
          );
        }
      }));
      for (let k = 0; k < 3; k++) {
        const sets = changes.filter((c) => c.key === `k${k}`).sort((a, b) => a.seq! - b.seq!);
        // In seq order the revisions are 1, 2, 3, ...: numbered in commit order.
        assert.deepEqual(sets.map((c) => c.revision), Array.from({ length: 80 }, (_, i) => i + 1));
        assert.equal((await stores[0]!.get("plant", `k${k}`))?.revision, 80);
      }
      const seqs = changes.map((c) => c.seq!);
      assert.equal(new Set(seqs).size, seqs.length, "no seq given out twice");
    } finally {
      for (const store of stores) await store.close();
    }
  });
});
