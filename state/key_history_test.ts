/**
 * Per-key history (docs/state.md#key-history) on both stores: a row per
 * committed change, written with it (a refused compare-and-set or a replayed
 * write adds none), who made it, retention, paging, deletion, and on
 * PostgreSQL two stores writing one key.
 */
import assert from "node:assert/strict";
import type { Principal } from "../auth/tokens.ts";
import { frame } from "../mdp/protocol.ts";
import { freshDatabase } from "../tests/_postgres.ts";
import type { StateBackend } from "./backend.ts";
import { openStateDatabase } from "./db.ts";
import { openPgStateDatabase } from "./db_pg.ts";
import { type OperationsOptions, StateOperations } from "./operations.ts";
import { PRUNE_EVERY, StateStore, type StoreOptions } from "./store.ts";
import { PgStateStore } from "./store_pg.ts";

type Kind = "libsql" | "postgres";

interface Harness {
  ops: StateOperations;
  store: StateBackend;
  /** Another store on the same database (PostgreSQL only: a second worker). */
  open(): Promise<StateBackend>;
}

async function withStore(
  kind: Kind,
  body: (h: Harness) => Promise<void>,
  options: { store?: StoreOptions; ops?: OperationsOptions } = {},
): Promise<void> {
  const database = kind === "postgres" ? await freshDatabase() : undefined;
  const extra: StateBackend[] = [];
  const open = async (): Promise<StateBackend> =>
    kind === "libsql"
      ? await StateStore.load(await openStateDatabase({ location: ":memory:" }), options.store)
      : new PgStateStore(
        await openPgStateDatabase({ url: database!.url, poolSize: 3 }),
        options.store,
      );
  const store = await open();
  try {
    await body({
      ops: new StateOperations(store, options.ops),
      store,
      open: async () => {
        const another = await open();
        extra.push(another);
        return another;
      },
    });
  } finally {
    for (const s of extra) await s.close();
    await store.close();
    await database?.drop();
  }
}

function both(name: string, body: (kind: Kind) => Promise<void>): void {
  for (const kind of ["libsql", "postgres"] as const) {
    Deno.test(`${kind}: ${name}`, () => body(kind));
  }
}

const call = (ops: StateOperations, operation: string, request: object) =>
  ops.handle([frame(operation), frame(JSON.stringify(request))]);

/** The history rows of `key` as the operation answers them, newest first. */
async function history(
  ops: StateOperations,
  scope: string,
  key: string,
  extra: object = {},
): Promise<Array<Record<string, unknown>>> {
  const reply = JSON.parse(
    await call(ops, "state-history", { service: scope, key, ...extra }),
  );
  assert.equal(reply.success, true, JSON.stringify(reply));
  return reply.data.entries;
}

/** What each row says, without its id and time. */
const changes = (rows: Array<Record<string, unknown>>) =>
  rows.map(({ revision, op, old_value, new_value, actor }) => ({
    revision,
    op,
    old_value,
    new_value,
    actor,
  }));

both("every committed change of a key is in its history, newest first", async (kind) => {
  await withStore(kind, async ({ ops }) => {
    await call(ops, "state-set", { service: "s", key: "k", value: "a" });
    await call(ops, "state-set-many", { service: "s", entries: { k: "b", other: "x" } });
    await call(ops, "state-cas", { service: "s", key: "k", value: "c", revision: 2 });
    await call(ops, "delete", { service: "s", key: "k" });
    await call(ops, "state-set", { service: "s", key: "k", value: "d\u0000e" });
    const rows = await history(ops, "s", "k");
    const anonymous = "anonymous";
    assert.deepEqual(changes(rows), [
      { revision: 1, op: "set", old_value: null, new_value: "d\u0000e", actor: anonymous },
      { revision: 3, op: "delete", old_value: "c", new_value: null, actor: anonymous },
      { revision: 3, op: "set", old_value: "b", new_value: "c", actor: anonymous },
      { revision: 2, op: "set", old_value: "a", new_value: "b", actor: anonymous },
      { revision: 1, op: "set", old_value: null, new_value: "a", actor: anonymous },
    ]);
    const ids = rows.map((row) => row.id as number);
    assert.deepEqual(ids, [...ids].sort((a, b) => b - a));
    for (const row of rows) assert.equal(typeof row.at, "number");
    assert.deepEqual(changes(await history(ops, "s", "other")), [
      { revision: 1, op: "set", old_value: null, new_value: "x", actor: anonymous },
    ]);
    // The reply's shape, byte for byte (ids and times aside).
    const text = await call(ops, "state-history", { service: "s", key: "other" });
    assert.match(
      text,
      /^\{"success":true,"data":\{"entries":\[\{"actor":"anonymous","at":\d+,"id":\d+,"new_value":"x","old_value":null,"op":"set","revision":1\}\],"key":"other","scope":"s"\}\}$/,
    );
  });
});

both("writes grouped in one commit each get their row, in order", async (kind) => {
  await withStore(kind, async ({ ops }) => {
    // Sent together: they share a group (and a transaction).
    await Promise.all(
      ["1", "2", "3", "4"].map((value) =>
        call(ops, "state-set", { service: "s", key: "k", value })
      ),
    );
    assert.deepEqual(
      (await history(ops, "s", "k")).map((row) => [row.revision, row.old_value, row.new_value]),
      [[4, "3", "4"], [3, "2", "3"], [2, "1", "2"], [1, null, "1"]],
    );
  });
});

both("a refused compare-and-set and a replayed write add no row", async (kind) => {
  await withStore(kind, async ({ ops }) => {
    await call(ops, "state-set", { service: "s", key: "k", value: "a" });
    const refused = JSON.parse(
      await call(ops, "state-cas", { service: "s", key: "k", value: "b", revision: 7 }),
    );
    assert.equal(refused.success, false);
    const keyed = { service: "s", key: "k", value: "c", idempotency_key: "once" };
    await call(ops, "state-set", keyed);
    await call(ops, "state-set", keyed);
    assert.deepEqual(
      (await history(ops, "s", "k")).map((row) => [row.revision, row.new_value]),
      [[2, "c"], [1, "a"]],
    );
  });
});

both("the actor is the verified caller", async (kind) => {
  const alice: Principal = {
    id: "user:alice",
    name: "alice",
    kind: "user",
    roles: ["admin"],
    permissions: ["*"],
  };
  await withStore(kind, async ({ ops }) => {
    // A name in the request is not the caller's: only the verified principal counts.
    await call(ops, "state-set", {
      service: "s",
      key: "k",
      value: "a",
      token: "t",
      actor: "mallory",
    });
    assert.deepEqual((await history(ops, "s", "k", { token: "t" })).map((row) => row.actor), [
      "user:alice",
    ]);
  }, { ops: { verify: () => Promise.resolve(alice) } });
});

both("deleting a key's history needs state admin, and empties it", async (kind) => {
  const grants = { current: ["state:data:read", "state:data:write", "state:data:delete"] };
  const verify = () =>
    Promise.resolve<Principal>({
      id: "user:bob",
      name: "bob",
      kind: "user",
      roles: [],
      permissions: grants.current,
    });
  await withStore(kind, async ({ ops }) => {
    const request = { service: "s", key: "k", token: "t" };
    await call(ops, "state-set", { ...request, value: "a" });
    await call(ops, "state-set", { ...request, key: "kept", value: "a" });
    assert.equal(
      await call(ops, "state-history-delete", request),
      '{"error": "PERMISSION_DENIED", "message": "Insufficient permissions"}',
    );
    assert.equal((await history(ops, "s", "k", { token: "t" })).length, 1);
    grants.current = ["state:scope:s:admin"];
    assert.equal(
      await call(ops, "state-history-delete", request),
      '{"success":true,"data":{"deleted":1,"key":"k","scope":"s","status":"deleted"}}',
    );
    assert.deepEqual(await history(ops, "s", "k", { token: "t" }), []);
    // Another key's history stays.
    assert.equal((await history(ops, "s", "kept", { token: "t" })).length, 1);
  }, { ops: { verify } });
});

both("a deleted scope's keys each get a delete row; the history outlives them", async (kind) => {
  await withStore(kind, async ({ ops }) => {
    await call(ops, "state-set-many", { service: "s", entries: { a: "1", b: "2" } });
    await call(ops, "delete-scope", { service: "s" });
    for (const [key, value] of [["a", "1"], ["b", "2"]]) {
      assert.deepEqual(
        changes(await history(ops, "s", key!)).map((row) => [row.op, row.old_value]),
        [["delete", value], ["set", null]],
      );
    }
  });
});

both(
  "retention keeps the newest rows of each key, pruned every PRUNE_EVERY-th revision; pages go back by id",
  async (kind) => {
    await withStore(kind, async ({ ops }) => {
      const set = (value: number) =>
        call(ops, "state-set", { service: "s", key: "k", value: String(value) });
      for (let i = 1; i < PRUNE_EVERY; i++) await set(i);
      // Not pruned yet: every row is there until the next multiple.
      assert.equal((await history(ops, "s", "k", { limit: 1000 })).length, PRUNE_EVERY - 1);
      await set(PRUNE_EVERY);
      const newest = (n: number) => Array.from({ length: n }, (_, i) => PRUNE_EVERY - i);
      assert.deepEqual((await history(ops, "s", "k")).map((row) => row.revision), newest(4));
      const first = await history(ops, "s", "k", { limit: 2 });
      assert.deepEqual(first.map((row) => row.revision), newest(2));
      const next = await history(ops, "s", "k", { limit: 2, before: first[1]!.id });
      assert.deepEqual(next.map((row) => row.revision), newest(4).slice(2));
      // A delete prunes too, whatever its revision: the newest 4 rows, the delete among them.
      await set(PRUNE_EVERY + 1);
      await call(ops, "delete", { service: "s", key: "k" });
      const last = PRUNE_EVERY + 1;
      assert.deepEqual(
        (await history(ops, "s", "k")).map((row) => `${row.op}:${row.revision}`),
        [`delete:${last}`, `set:${last}`, `set:${last - 1}`, `set:${last - 2}`],
      );
      assert.equal(
        await call(ops, "state-history", { service: "s", key: "k", limit: 0 }),
        '{"error": "Operation failed: limit must be an integer from 1 to 1000"}',
      );
    }, { store: { historyPerKey: 4 } });
  },
);

both("history_per_key 0 keeps no history", async (kind) => {
  await withStore(kind, async ({ ops }) => {
    await call(ops, "state-set", { service: "s", key: "k", value: "a" });
    assert.deepEqual(await history(ops, "s", "k"), []);
  }, { store: { historyPerKey: 0 } });
});

Deno.test("postgres: two stores writing one key leave one row per committed revision, in order", async () => {
  await withStore("postgres", async ({ ops, open }) => {
    const other = new StateOperations(await open());
    const writers = [ops, other];
    const perWriter = 15;
    await Promise.all(writers.map(async (writer, w) => {
      for (let i = 0; i < perWriter; i++) {
        const reply = JSON.parse(
          await call(writer, "state-set", { service: "s", key: "k", value: `${w}-${i}` }),
        );
        assert.equal(reply.success, true, JSON.stringify(reply));
      }
    }));
    const rows = (await history(ops, "s", "k", { limit: 1000 })).reverse();
    const total = writers.length * perWriter;
    assert.deepEqual(
      rows.map((row) => row.revision),
      Array.from({ length: total }, (_, i) => i + 1),
    );
    // Each row's old value is the value of the row before it: no commit was missed or reordered.
    rows.forEach((row, i) => assert.equal(row.old_value, i === 0 ? null : rows[i - 1]!.new_value));
  });
});
