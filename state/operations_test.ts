/** org.plantd.State replies, byte for byte as Go plantd sends them, and the new operations. */
import assert from "node:assert/strict";
import { frame } from "../mdp/protocol.ts";
import { openStateDatabase } from "./db.ts";
import { StateOperations } from "./operations.ts";
import { type Change, StateStore } from "./store.ts";

async function withOps(
  body: (ops: StateOperations, store: StateStore, changes: Change[]) => Promise<void>,
  options: { maxValueBytes?: number; location?: string } = {},
): Promise<void> {
  const changes: Change[] = [];
  const open = await openStateDatabase({ location: options.location ?? ":memory:" });
  const store = await StateStore.load(open, { onChanges: (list) => changes.push(...list) });
  try {
    await body(
      new StateOperations(store, { maxValueBytes: options.maxValueBytes }),
      store,
      changes,
    );
  } finally {
    await store.close();
  }
}

const call = (ops: StateOperations, ...parts: string[]) => ops.handle(parts.map(frame));

Deno.test("state answers the eight plantd operations with Go's exact bytes", async () => {
  await withOps(async (ops) => {
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

Deno.test("state-set on a missing scope creates it (Go hangs there)", async () => {
  await withOps(async (ops, store) => {
    await call(ops, "state-set", '{"service":"new","key":"k","value":"v"}');
    assert.equal(store.hasScope("new"), true);
    assert.equal(store.get("new", "k")?.value, "v");
  });
});

Deno.test("state gives Go's error replies for malformed requests and keeps serving", async () => {
  await withOps(async (ops) => {
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

Deno.test("state refuses values over the size limit with a clear error", async () => {
  await withOps(async (ops, store) => {
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
    assert.equal(store.get("s", "big"), undefined);
  }, { maxValueBytes: 64 });
});

Deno.test("state-cas sets at the expected revision and reports the current one on a mismatch", async () => {
  await withOps(async (ops) => {
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
});

Deno.test("state-set-many is atomic and state-get-many returns values with revisions", async () => {
  await withOps(async (ops) => {
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

Deno.test("concurrent writes share commits, get distinct revisions, and emit change events in order", async () => {
  await withOps(async (ops, store, changes) => {
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
      const entry = store.get("s", `k${k}`)!;
      assert.equal(entry.revision, 30);
      assert.equal(entry.value, String(290 + k));
    }
    const sets = changes.filter((c) => c.op === "set" && c.key === "k3");
    assert.deepEqual(sets.map((c) => c.revision), Array.from({ length: 30 }, (_, i) => i + 1));
    assert.equal(changes[0]!.op, "create-scope");
  });
});

Deno.test("state survives a restart: every acknowledged write is read back from the file", async () => {
  const dir = await Deno.makeTempDir();
  const location = `${dir}/state.db`;
  try {
    await withOps(async (ops) => {
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
    }, { location });
    await withOps((_ops, store) => {
      assert.deepEqual(store.scopes(), ["s0", "s1"]);
      assert.equal(store.get("s0", "k0"), undefined);
      assert.equal(store.get("s0", "k3")?.value, "v3");
      assert.equal(store.get("s1", "k4")?.revision, 1);
      assert.equal(store.keys("s1")?.length, 33);
      return Promise.resolve();
    }, { location });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("idempotency_key: a retry gets the first reply marked replayed, another request with the key is refused, a bad key is a clear error", async () => {
  const counts: Record<string, number> = {};
  const open = await openStateDatabase({ location: ":memory:" });
  const store = await StateStore.load(open);
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
    assert.equal(store.get("s", "a")?.revision, 1, "applied once");
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
    assert.equal(store.get("s", "b")?.value, "2");
    for (const bad of ['""', '"x'.padEnd(257, "x") + '"', '"tab\\there"', '"é"', "7"]) {
      assert.match(
        await call(ops, "delete", `{"service":"s","key":"a","idempotency_key":${bad}}`),
        /^\{"error": "Operation failed: idempotency_key /,
        bad,
      );
    }
    assert.equal(store.get("s", "a")?.value, "1", "a refused key deletes nothing");
    // Reads ignore a key; without one, writes answer exactly as before.
    assert.equal(
      await call(ops, "state-get", '{"service":"s","key":"a","idempotency_key":"K1"}'),
      '{"success":true,"data":{"key":"a","scope":"s","value":"1"}}',
    );
    assert.deepEqual(counts, { applied: 2, replayed: 2, reused: 2 });
  } finally {
    await store.close();
  }
});
