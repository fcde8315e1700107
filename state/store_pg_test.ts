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
    // Each migration once, not once per worker.
    const journal = JSON.parse(
      await Deno.readTextFile(
        new URL("../migrations/state-pg/meta/_journal.json", import.meta.url),
      ),
    );
    assert.equal(row!.n, journal.entries.length);
  });
});

Deno.test("a deadlock with another transaction is retried and the writes of the group succeed", async () => {
  await withDatabase(async (db) => {
    // PostgreSQL looks for a deadlock once per wait, deadlock_timeout after
    // the wait began, in the waiting backend. With the default 1 s, a loaded
    // machine could send this test's second lock after the group's one look
    // (no cycle yet): the cycle was then found from this test's side, failing
    // its transaction instead of the group's. The group's sessions look after
    // 5 s, this transaction never first.
    await db.admin.unsafe(`alter database ${db.name} set deadlock_timeout = '5s'`);
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
        await tx`set local deadlock_timeout = '60s'`;
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

Deno.test("an idempotency key sent to two stores on one database at once is applied once: the other replays it, or refuses a different request", async () => {
  await withDatabase(async (db) => {
    const stores = await Promise.all(
      [0, 1].map(async () =>
        new PgStateStore(await openPgStateDatabase({ url: db.url, poolSize: 2 }))
      ),
    );
    const keyed = (key: string, fingerprint: string) => ({
      owner: "user\u0000one",
      key,
      fingerprint,
      reply: (result: unknown) => JSON.stringify(result),
    });
    try {
      // The same request (same scope: the scope lock orders them).
      const same = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
        const write = { kind: "set" as const, scope: "s", entries: [[`k${i}`, "v"] as const] };
        return await Promise.all(
          stores.map((store) => store.writeKeyed(write, keyed(`same${i}`, "f"))),
        );
      }));
      for (const pair of same) {
        assert.deepEqual(pair.map((o) => o.kind).sort(), ["applied", "replayed"]);
        assert.equal(
          pair[0]!.kind === "reused" ? "" : pair[0]!.reply,
          pair[1]!.kind === "reused" ? "" : pair[1]!.reply,
        );
      }
      // Different requests under one key, on different scopes (no lock in common).
      const other = await Promise.all(
        Array.from(
          { length: 20 },
          async (_, i) =>
            await Promise.all(stores.map((store, s) =>
              store.writeKeyed(
                { kind: "set", scope: `scope${s}`, entries: [[`k${i}`, "v"]] },
                keyed(`other${i}`, `f${s}`),
              )
            )),
        ),
      );
      for (const pair of other) {
        assert.deepEqual(pair.map((o) => o.kind).sort(), ["applied", "reused"]);
      }
      const [row] = await db.sql`select count(*)::int as n from state_entries`;
      assert.equal(row!.n, 40, "20 keys of scope s, and one write of each other pair");
      for (let i = 0; i < 20; i++) assert.equal((await stores[0]!.get("s", `k${i}`))?.revision, 1);
      // Expired keys go: none yet.
      assert.equal(await stores[1]!.purgeExpiredKeys(100), 0);
    } finally {
      for (const store of stores) await store.close();
    }
  });
});

Deno.test("expired idempotency keys are purged in batches and then count as unused", async () => {
  await withDatabase(async (db) => {
    let now = 1_000_000;
    const store = new PgStateStore(await openPgStateDatabase({ url: db.url, poolSize: 2 }), {
      idempotencyWindowMs: 1000,
      now: () => now,
    });
    try {
      const keyed = (key: string) => ({
        owner: "u",
        key,
        fingerprint: "f",
        reply: (result: unknown) => JSON.stringify(result),
      });
      for (let i = 0; i < 5; i++) {
        await store.writeKeyed(
          { kind: "set", scope: "s", entries: [["k", `${i}`]] },
          keyed(`K${i}`),
        );
      }
      assert.equal(
        (await store.writeKeyed({ kind: "set", scope: "s", entries: [["k", "x"]] }, keyed("K0")))
          .kind,
        "replayed",
      );
      now += 1000;
      // Expired: applied again (the row not purged yet is replaced).
      assert.equal(
        (await store.writeKeyed({ kind: "set", scope: "s", entries: [["k", "y"]] }, keyed("K0")))
          .kind,
        "applied",
      );
      assert.equal(await store.purgeExpiredKeys(3), 3);
      assert.equal(await store.purgeExpiredKeys(3), 1);
      assert.equal(await store.purgeExpiredKeys(3), 0);
      const [row] = await db.sql`select count(*)::int as n from state_idempotency_keys`;
      assert.equal(row!.n, 1, "K0's second use is kept");
    } finally {
      await store.close();
    }
  });
});

Deno.test("sessions ended by the server under writes and reads: every request settles, and the next ones succeed", async () => {
  await withDatabase(async (db) => {
    const store = new PgStateStore(await openPgStateDatabase({ url: db.url, poolSize: 4 }));
    /**
     * How `operation` settled, as soon as it does (the next request then goes out at
     * once, as under load); fails the test if it never does.
     */
    const settles = async (operation: Promise<unknown>) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const never = new Promise<string>((_, reject) => {
        timer = setTimeout(() => reject(new Error("a request never settled")), 10_000);
      });
      try {
        return await Promise.race([
          operation.then(() => "ok", (e) => `error: ${e}`),
          never,
        ]);
      } finally {
        clearTimeout(timer);
      }
    };
    try {
      for (let round = 0; round < 15; round++) {
        await settles(store.write({ kind: "set", scope: "s", entries: [["k", "1"]] }));
        await settles(store.get("s", "k"));
        // Every session of the store ends (as a failover or pg_terminate_backend does).
        await db.admin`select pg_terminate_backend(pid) from pg_stat_activity
          where datname = ${db.name} and application_name = 'plantd-state'`;
        // Each request right after the one before failed: the window where a lost session
        // is known to have failed but is not closed yet.
        const writes = [];
        for (let i = 0; i < 3; i++) {
          writes.push(
            await settles(store.write({ kind: "set", scope: "s", entries: [["k", `${i}`]] })),
          );
        }
        const reads = [];
        for (let i = 0; i < 3; i++) reads.push(await settles(store.get("s", "k")));
        // The first of each kind may fail with the lost session; the last ones must not.
        assert.equal(writes[2], "ok", `round ${round} writes: ${writes.join(", ")}`);
        assert.equal(reads[2], "ok", `round ${round} reads: ${reads.join(", ")}`);
      }
    } finally {
      // Bounded too: with a request stuck, closing (which waits for writes) would be.
      await settles(store.close());
    }
  });
});
