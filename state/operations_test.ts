/**
 * org.plantd.State replies, byte for byte as Go plantd sends them, and the new
 * operations: every test runs on both stores, the embedded libSQL one and the
 * PostgreSQL one (a fresh database on the test server), and a scripted session
 * gets identical replies from both.
 */
import assert from "node:assert/strict";
import { frame } from "../mdp/protocol.ts";
import { freshDatabase } from "../tests/_postgres.ts";
import type { StateBackend } from "./backend.ts";
import { openStateDatabase } from "./db.ts";
import { openPgStateDatabase } from "./db_pg.ts";
import { StateOperations } from "./operations.ts";
import { type Change, StateStore } from "./store.ts";
import { PgStateStore } from "./store_pg.ts";

type Kind = "libsql" | "postgres";
const KINDS: Kind[] = ["libsql", "postgres"];

/** Where a store lives: a libSQL location, or a PostgreSQL URL. */
interface Place {
  location?: string;
  url?: string;
}

async function openStore(
  kind: Kind,
  place: Place,
  onChanges: (list: Change[]) => void,
): Promise<StateBackend> {
  if (kind === "libsql") {
    const open = await openStateDatabase({ location: place.location ?? ":memory:" });
    return await StateStore.load(open, { onChanges });
  }
  return new PgStateStore(await openPgStateDatabase({ url: place.url!, poolSize: 4 }), {
    onChanges,
  });
}

async function withOps(
  kind: Kind,
  body: (ops: StateOperations, store: StateBackend, changes: Change[]) => Promise<void>,
  options: { maxValueBytes?: number; place?: Place } = {},
): Promise<void> {
  const changes: Change[] = [];
  // A database of its own unless the test keeps one across stores.
  const database = kind === "postgres" && !options.place ? await freshDatabase() : undefined;
  const place = options.place ?? { url: database?.url };
  const store = await openStore(kind, place, (list) => changes.push(...list));
  try {
    await body(
      new StateOperations(store, { maxValueBytes: options.maxValueBytes }),
      store,
      changes,
    );
  } finally {
    await store.close();
    await database?.drop();
  }
}

/** One Deno.test per store. */
function both(
  name: string,
  body: (kind: Kind) => Promise<void>,
): void {
  for (const kind of KINDS) Deno.test(`${kind}: ${name}`, () => body(kind));
}

const call = (ops: StateOperations, ...parts: string[]) => ops.handle(parts.map(frame));

both("state answers the eight plantd operations with Go's exact bytes", async (kind) => {
  await withOps(kind, async (ops) => {
    assert.equal(
      await call(ops, "create-scope", '{"service":"s"}'),
      '{"success":true,"data":{"scope":"s","status":"created"}}',
    );
    assert.equal(
      await call(ops, "create-scope", '{"service":"s"}'),
      `{"success":false,"error":"Scope 's' already exists"}`,
    );
    assert.equal(
      await call(ops, "state-set", '{"service":"s","key":"foo","value":"bar"}'),
      '{"success":true,"data":{"key":"foo","scope":"s","status":"set","value":"bar"}}',
    );
    assert.equal(
      await call(ops, "state-get", '{"service":"s","key":"foo"}'),
      '{"success":true,"data":{"key":"foo","scope":"s","value":"bar"}}',
    );
    assert.equal(
      await call(ops, "state-get", '{"service":"s","key":"nope"}'),
      '{"success":true,"data":{"key":"nope","scope":"s","value":""}}',
    );
    assert.equal(
      await call(ops, "list-keys", '{"service":"s"}'),
      '{"success":true,"data":{"count":1,"keys":["foo"],"scope":"s"}}',
    );
    assert.equal(
      await call(ops, "list-scopes", "{}"),
      '{"success":true,"data":{"count":1,"scopes":["s"]}}',
    );
    assert.equal(
      await call(ops, "delete", '{"service":"s","key":"foo"}'),
      '{"success":true,"data":{"key":"foo","scope":"s","status":"deleted"}}',
    );
    assert.equal(
      await call(ops, "list-keys", '{"service":"s"}'),
      '{"success":true,"data":{"count":0,"keys":[],"scope":"s"}}',
    );
    assert.equal(
      await call(ops, "health", "{}"),
      '{"success":true,"data":{"service":"org.plantd.State","status":"healthy","store_available":true}}',
    );
    assert.equal(
      await call(ops, "delete-scope", '{"service":"s"}'),
      '{"success":true,"data":{"scope":"s","status":"deleted"}}',
    );
    assert.equal(
      await call(ops, "delete-scope", '{"service":"s"}'),
      `{"success":false,"error":"Scope 's' does not exist"}`,
    );
    assert.equal(
      await call(ops, "list-keys", '{"service":"s"}'),
      `{"success":false,"error":"Scope 's' does not exist"}`,
    );
    assert.equal(
      await call(ops, "list-scopes", "{}"),
      '{"success":true,"data":{"count":0,"scopes":[]}}',
    );
  });
});

both("state-set on a missing scope creates it (Go hangs there)", async (kind) => {
  await withOps(kind, async (ops, store) => {
    await call(ops, "state-set", '{"service":"new","key":"k","value":"v"}');
    assert.deepEqual(await store.keys("new"), ["k"]);
    assert.equal((await store.get("new", "k"))?.value, "v");
  });
});

both("state gives Go's error replies for malformed requests and keeps serving", async (kind) => {
  await withOps(kind, async (ops) => {
    assert.equal(await call(ops, "state-get"), '{"error": "Invalid message format"}');
    assert.equal(await call(ops, "frobnicate", "{}"), '{"error": "Invalid operation"}');
    assert.equal(
      await call(ops, "state-get", '{"service":"s"}'),
      '{"error": "Operation failed: key parameter missing"}',
    );
    assert.equal(
      await call(ops, "state-set", '{"key":"k","value":"v"}'),
      '{"error": "Operation failed: service parameter missing"}',
    );
    assert.equal(
      await call(ops, "state-set", '{"service":"s","key":"k"}'),
      '{"error": "Operation failed: value parameter missing"}',
    );
    assert.equal(
      await call(ops, "state-set", '{"service":"s","key":"k","value":7}'),
      '{"error": "Operation failed: value parameter missing"}',
    );
    assert.equal(
      await call(ops, "state-get", '{"service":"s","key":""}'),
      '{"error": "Operation failed: empty key"}',
    );
    assert.equal(
      await call(ops, "state-get", '{"service":"","key":"k"}'),
      '{"error": "Operation failed: empty service scope"}',
    );
    assert.match(
      await call(ops, "state-get", "not json"),
      /^\{"error": "Operation failed: invalid request JSON/,
    );
    assert.equal(
      await call(ops, "state-get", "[1,2]"),
      '{"error": "Operation failed: request must be a JSON object"}',
    );
    assert.equal(
      await call(ops, "state-set", '{"service":"s","key":"k","value":"fine"}'),
      '{"success":true,"data":{"key":"k","scope":"s","status":"set","value":"fine"}}',
    );
  });
});

both("state refuses values over the size limit with a clear error", async (kind) => {
  await withOps(kind, async (ops, store) => {
    const reply = JSON.parse(
      await call(
        ops,
        "state-set",
        JSON.stringify({ service: "s", key: "big", value: "é".repeat(40) }),
      ),
    );
    assert.deepEqual(reply, {
      success: false,
      error: "Value for key 'big' is 80 bytes, more than the limit of 64",
    });
    assert.equal(await store.get("s", "big"), undefined);
  }, { maxValueBytes: 64 });
});

both(
  "state-cas sets at the expected revision and reports the current one on a mismatch",
  async (kind) => {
    await withOps(kind, async (ops) => {
      const created = JSON.parse(
        await call(ops, "state-cas", '{"service":"s","key":"k","value":"a","revision":0}'),
      );
      assert.deepEqual(created, {
        success: true,
        data: { key: "k", revision: 1, scope: "s", status: "set", value: "a" },
      });
      const stale = await call(
        ops,
        "state-cas",
        '{"service":"s","key":"k","value":"b","revision":0}',
      );
      assert.equal(
        stale,
        `{"success":false,"error":"Revision mismatch for key 'k': expected 0, current 1","data":{"current_revision":1,"key":"k","scope":"s"}}`,
      );
      const next = JSON.parse(
        await call(ops, "state-cas", '{"service":"s","key":"k","value":"b","revision":1}'),
      );
      assert.equal(next.data.revision, 2);
      assert.equal(
        await call(ops, "state-cas", '{"service":"s","key":"k","value":"b"}'),
        '{"error": "Operation failed: revision parameter missing (0 for a key that must not exist)"}',
      );
    });
  },
);

both("state-set-many is atomic and state-get-many returns values with revisions", async (kind) => {
  await withOps(kind, async (ops) => {
    const set = JSON.parse(
      await call(ops, "state-set-many", '{"service":"s","entries":{"b":"2","a":"1"}}'),
    );
    assert.deepEqual(set, {
      success: true,
      data: { revisions: { a: 1, b: 1 }, scope: "s", status: "set" },
    });
    await call(ops, "state-set", '{"service":"s","key":"a","value":"1b"}');
    const got = JSON.parse(
      await call(ops, "state-get-many", '{"service":"s","keys":["a","b","c"]}'),
    );
    assert.equal(got.success, true);
    assert.equal(got.data.entries.a.value, "1b");
    assert.equal(got.data.entries.a.revision, 2);
    assert.equal(got.data.entries.b.revision, 1);
    assert.equal(got.data.entries.c, null);
    assert.equal(typeof got.data.entries.a.updated_at, "number");
    // A batch with one bad value changes nothing.
    const bad = await call(ops, "state-set-many", '{"service":"s","entries":{"a":"x","b":5}}');
    assert.equal(bad, '{"error": "Operation failed: value parameter missing"}');
    const after = JSON.parse(await call(ops, "state-get-many", '{"service":"s","keys":["a"]}'));
    assert.equal(after.data.entries.a.value, "1b");
  });
});

both(
  "concurrent writes share commits, get distinct revisions, and emit change events in order",
  async (kind) => {
    await withOps(kind, async (ops, store, changes) => {
      const replies = await Promise.all(
        Array.from(
          { length: 300 },
          (_, i) =>
            call(
              ops,
              "state-set",
              JSON.stringify({ service: "s", key: `k${i % 10}`, value: String(i) }),
            ),
        ),
      );
      assert.ok(replies.every((r) => r.startsWith('{"success":true')));
      for (let k = 0; k < 10; k++) {
        const entry = (await store.get("s", `k${k}`))!;
        assert.equal(entry.revision, 30);
        assert.equal(entry.value, String(290 + k));
      }
      const sets = changes.filter((c) => c.op === "set" && c.key === "k3");
      assert.deepEqual(sets.map((c) => c.revision), Array.from({ length: 30 }, (_, i) => i + 1));
      assert.equal(changes[0]!.op, "create-scope");
    });
  },
);

both(
  "state survives a restart: every acknowledged write is read back from the database",
  async (kind) => {
    const dir = await Deno.makeTempDir();
    const database = kind === "postgres" ? await freshDatabase() : undefined;
    const place = { location: `${dir}/state.db`, url: database?.url };
    try {
      await withOps(kind, async (ops) => {
        await Promise.all(
          Array.from({ length: 100 }, (_, i) =>
            call(
              ops,
              "state-set",
              JSON.stringify({ service: `s${i % 3}`, key: `k${i}`, value: `v${i}` }),
            )),
        );
        await call(ops, "delete-scope", '{"service":"s2"}');
        await call(ops, "delete", '{"service":"s0","key":"k0"}');
      }, { place });
      await withOps(kind, async (_ops, store) => {
        assert.deepEqual(await store.scopes(), ["s0", "s1"]);
        assert.equal(await store.get("s0", "k0"), undefined);
        assert.equal((await store.get("s0", "k3"))?.value, "v3");
        assert.equal((await store.get("s1", "k4"))?.revision, 1);
        assert.equal((await store.keys("s1"))?.length, 33);
      }, { place });
    } finally {
      await database?.drop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/**
 * A session of phases, each a set of requests sent at once (so the writes of
 * a phase share a commit; reads have phases of their own, as their order
 * against a commit in flight is not defined): creation, deletion and
 * re-creation of a scope in one group, compare-and-set races, batches,
 * hostile names.
 */
const SESSION: Array<Array<[string, Record<string, unknown> | string]>> = [
  [["create-scope", { service: "a" }], ["create-scope", { service: "a" }]],
  [["list-scopes", {}]],
  [
    ["state-cas", { service: "a", key: "k", value: "1", revision: 0 }],
    ["state-cas", { service: "a", key: "k", value: "2", revision: 0 }],
    ["state-cas", { service: "a", key: "k", value: "3", revision: 1 }],
    ["state-set", { service: "b", key: "x", value: "y" }],
  ],
  [
    ["state-get-many", { service: "a", keys: ["k", "missing"] }],
    ["state-get-many", { service: "nope", keys: ["k"] }],
    ["state-get", { service: "nope", key: "k" }],
  ],
  [
    ["delete-scope", { service: "b" }],
    ["state-set", { service: "b", key: "x2", value: "again" }],
    ["delete", { service: "a", key: "k" }],
    ["state-set", { service: "a", key: "k", value: "reborn" }],
    ["delete", { service: "a", key: "never" }],
  ],
  [
    ["list-keys", { service: "a" }],
    ["list-keys", { service: "b" }],
    ["state-get-many", { service: "a", keys: ["k"] }],
    ["state-get-many", { service: "b", keys: ["x", "x2"] }],
  ],
  [
    ["state-set-many", {
      service: "u",
      entries: { "nul\u0000in": "v\u0000", "🌡️": "温度", "é": "1" },
    }],
    ["state-set", { service: "u", key: "\uffff", value: "" }],
    ["state-set", {
      service: "u\u0000",
      key: "'; DROP TABLE state_entries;--",
      value: "\ufeffbom",
    }],
  ],
  [
    ["list-keys", { service: "u" }],
    ["list-scopes", {}],
    ["state-get-many", { service: "u", keys: ["nul\u0000in", "🌡️", "é", "\uffff"] }],
    ["state-get", { service: "u\u0000", key: "'; DROP TABLE state_entries;--" }],
  ],
  [
    ["delete-scope", { service: "u" }],
    ["delete-scope", { service: "u" }],
    ["create-scope", { service: "u" }],
    ["state-cas", { service: "a", key: "k", value: "late", revision: 7 }],
    ["state-set", "not json"],
    ["frobnicate", {}],
  ],
  [["list-keys", { service: "u" }], ["list-scopes", {}]],
  [
    ["state-set", { service: "a", key: "kk", value: "1", idempotency_key: "K" }],
    ["state-set", { service: "a", key: "kk", value: "1", idempotency_key: "K" }],
    ["state-set", { service: "a", key: "kk", value: "2", idempotency_key: "K" }],
    ["delete", { service: "a", key: "nope", idempotency_key: "D" }],
  ],
  [
    ["state-set", { service: "a", key: "kk", value: "1", idempotency_key: "K" }],
    ["delete", { service: "a", key: "nope", idempotency_key: "D" }],
    ["state-cas", { service: "a", key: "kk", value: "3", revision: 9, idempotency_key: "C" }],
  ],
  [["state-cas", { service: "a", key: "kk", value: "3", revision: 9, idempotency_key: "C" }]],
];

/** The replies and change events of {@link SESSION} on a store, `updated_at` left out. */
async function session(kind: Kind): Promise<{ replies: string[][]; changes: unknown[] }> {
  const replies: string[][] = [];
  let changes: unknown[] = [];
  await withOps(kind, async (ops, _store, seen) => {
    for (const phase of SESSION) {
      replies.push(
        (await Promise.all(
          phase.map(([operation, request]) =>
            call(ops, operation, typeof request === "string" ? request : JSON.stringify(request))
          ),
        )).map((reply) => reply.replace(/"updated_at":\d+/g, '"updated_at":0')),
      );
    }
    changes = seen.map(({ op, scope, key, value, revision }) => ({
      op,
      scope,
      key,
      value,
      revision,
    }));
  });
  return { replies, changes };
}

Deno.test("libSQL and PostgreSQL stores give identical replies and change events to one session", async () => {
  const libsql = await session("libsql");
  const postgres = await session("postgres");
  assert.deepEqual(postgres.replies, libsql.replies);
  assert.deepEqual(postgres.changes, libsql.changes);
  // The session did what it says: a race with one winner, a scope deleted and re-created.
  assert.equal(libsql.replies[2]!.filter((r) => r.startsWith('{"success":true')).length, 3);
  assert.ok(libsql.changes.length > 15);
});

both(
  "idempotency_key: a retry gets the first reply marked replayed, another request with the key is refused, a bad key is a clear error",
  async (kind) => {
    const counts: Record<string, number> = {};
    const database = kind === "postgres" ? await freshDatabase() : undefined;
    const store = await openStore(kind, { url: database?.url }, () => {});
    const ops = new StateOperations(store, {}, {
      idempotent: (outcome) => counts[outcome] = (counts[outcome] ?? 0) + 1,
    });
    try {
      const first = await call(
        ops,
        "state-set-many",
        '{"service":"s","entries":{"a":"1","b":"2"},"idempotency_key":"K1"}',
      );
      assert.equal(
        first,
        '{"success":true,"data":{"revisions":{"a":1,"b":1},"scope":"s","status":"set"}}',
      );
      // Field and entry order do not change the request: the same fingerprint.
      assert.equal(
        await call(
          ops,
          "state-set-many",
          '{"idempotency_key":"K1","entries":{"b":"2","a":"1"},"service":"s"}',
        ),
        '{"success":true,"data":{"revisions":{"a":1,"b":1},"scope":"s","status":"set"},"replayed":true}',
      );
      assert.equal((await store.get("s", "a"))?.revision, 1, "applied once");
      // A domain failure is the first use's reply too: a retry does not re-evaluate it.
      const conflict = await call(
        ops,
        "state-cas",
        '{"service":"s","key":"a","value":"x","revision":5,"idempotency_key":"K2"}',
      );
      assert.match(conflict, /^\{"success":false,"error":"Revision mismatch/);
      assert.equal(
        await call(
          ops,
          "state-cas",
          '{"service":"s","key":"a","value":"x","revision":5,"idempotency_key":"K2"}',
        ),
        conflict.slice(0, -1) + ',"replayed":true}',
      );
      // The same key with another value, or another operation: refused, nothing written.
      for (
        const [operation, json] of [
          ["state-set-many", '{"service":"s","entries":{"a":"1","b":"3"},"idempotency_key":"K1"}'],
          ["state-set", '{"service":"s","key":"a","value":"1","idempotency_key":"K1"}'],
        ] as const
      ) {
        const reply = JSON.parse(await call(ops, operation, json));
        assert.equal(reply.error, "IDEMPOTENCY_KEY_REUSED", operation);
        assert.match(reply.message, /'K1' was used for a different request/);
      }
      assert.equal((await store.get("s", "b"))?.value, "2");
      for (const bad of ['""', '"x'.padEnd(257, "x") + '"', '"tab\\there"', '"é"', "7"]) {
        assert.match(
          await call(ops, "delete", `{"service":"s","key":"a","idempotency_key":${bad}}`),
          /^\{"error": "Operation failed: idempotency_key /,
          bad,
        );
      }
      assert.equal((await store.get("s", "a"))?.value, "1", "a refused key deletes nothing");
      // Reads ignore a key; without one, writes answer exactly as before.
      assert.equal(
        await call(ops, "state-get", '{"service":"s","key":"a","idempotency_key":"K1"}'),
        '{"success":true,"data":{"key":"a","scope":"s","value":"1"}}',
      );
      assert.deepEqual(counts, { applied: 2, replayed: 2, reused: 2 });
    } finally {
      await store.close();
      await database?.drop();
    }
  },
);
