import assert from "node:assert/strict";
import { StateCache } from "./state_read_cache.ts";

function clock(start = 1000) {
  const time = { now: start };
  return { time, now: () => time.now };
}

Deno.test("StateCache serves an entry until its TTL, then misses", () => {
  const { time, now } = clock();
  const cache = new StateCache({ ttlMs: 100, now });
  cache.put("s", "k", { value: "v", revision: 1, updated_at: 1 });
  assert.equal(cache.get("s", "k")?.value, "v");
  time.now += 100;
  assert.equal(cache.get("s", "k"), undefined);
});

Deno.test("StateCache applies change events and ignores reads older than what it knows", () => {
  const cache = new StateCache({ ttlMs: 10_000 });
  const at = new Date().toISOString();
  cache.apply({ op: "set", scope: "s", key: "k", value: "new", revision: 3, timestamp: at });
  // A read that left the service before the change must not bring the old value back.
  cache.put("s", "k", { value: "old", revision: 2, updated_at: 0 });
  assert.equal(cache.get("s", "k")?.value, "new");
  cache.apply({ op: "delete", scope: "s", key: "k", value: null, revision: null, timestamp: at });
  assert.equal(cache.get("s", "k"), undefined);
  cache.put("s", "a", null);
  cache.put("s", "b", { value: "x", revision: 1, updated_at: 0 });
  cache.put("s2", "a", { value: "y", revision: 1, updated_at: 0 });
  assert.equal(cache.get("s", "a"), null, "absence is cached too");
  cache.apply({
    op: "delete-scope",
    scope: "s",
    key: null,
    value: null,
    revision: null,
    timestamp: at,
  });
  assert.equal(cache.get("s", "b"), undefined);
  assert.equal(cache.get("s2", "a")?.value, "y", "other scopes stay");
});

Deno.test("StateCache keeps at most maxEntries, dropping the oldest", () => {
  const cache = new StateCache({ maxEntries: 2 });
  for (const key of ["a", "b", "c"]) {
    cache.put("s", key, { value: key, revision: 1, updated_at: 0 });
  }
  assert.equal(cache.size, 2);
  assert.equal(cache.get("s", "a"), undefined);
  assert.equal(cache.get("s", "c")?.value, "c");
});

Deno.test("StateCache keeps entries coherentTtlMs while coherent, ttlMs otherwise; flush drops all", () => {
  const { time, now } = clock();
  const view = { coherent: true };
  const cache = new StateCache({
    ttlMs: 100,
    coherentTtlMs: 10_000,
    coherent: () => view.coherent,
    now,
  });
  cache.put("s", "long", { value: "v", revision: 1, updated_at: 1 });
  view.coherent = false;
  cache.put("s", "short", { value: "v", revision: 1, updated_at: 1 });
  time.now += 100;
  assert.equal(cache.get("s", "long")?.value, "v");
  assert.equal(cache.get("s", "short"), undefined);
  time.now += 9_899;
  assert.equal(cache.get("s", "long")?.value, "v");
  cache.flush();
  assert.equal(cache.get("s", "long"), undefined);
  assert.equal(cache.size, 0);
});

Deno.test("StateCache with a shared cache never uses the coherent TTL", () => {
  const { time, now } = clock();
  const shared = {
    available: false,
    getMany: () => Promise.resolve([]),
    put: () => Promise.resolve(),
    forget: () => Promise.resolve(),
    forgetScope: () => Promise.resolve(),
  };
  const cache = new StateCache({
    ttlMs: 100,
    coherentTtlMs: 10_000,
    coherent: () => true,
    now,
    shared,
  });
  cache.put("s", "k", { value: "v", revision: 1, updated_at: 1 });
  time.now += 100;
  assert.equal(cache.get("s", "k"), undefined);
});

Deno.test("StateCache keeps no read answered after its key, scope or the whole cache changed", () => {
  const cache = new StateCache({ ttlMs: 10_000 });
  const at = new Date().toISOString();
  const old = { value: "old", revision: 2, updated_at: 0 };
  // A delete has no revision: only the mark tells the read is older.
  let since = cache.mark();
  cache.apply({ op: "delete", scope: "s", key: "k", value: null, revision: null, timestamp: at });
  cache.put("s", "k", old, since);
  assert.equal(cache.get("s", "k"), undefined, "deleted key not brought back");
  since = cache.mark();
  cache.apply({
    op: "delete-scope",
    scope: "s",
    key: null,
    value: null,
    revision: null,
    timestamp: at,
  });
  cache.put("s", "k2", old, since);
  assert.equal(cache.get("s", "k2"), undefined, "deleted scope not brought back");
  since = cache.mark();
  cache.flush();
  cache.put("s", "k3", old, since);
  assert.equal(cache.get("s", "k3"), undefined, "a read in flight over a flush is not kept");
  // Reads marked after the change are kept; other keys' reads are not held back.
  since = cache.mark();
  cache.put("s", "k", old, since);
  assert.equal(cache.get("s", "k")?.value, "old");
  since = cache.mark();
  cache.forget("s", "x");
  cache.put("s", "y", old, since);
  assert.equal(cache.get("s", "y")?.value, "old");
});
