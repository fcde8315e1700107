import assert from "node:assert/strict";
import { waitFor } from "../../tests/_helpers.ts";
import { StateCache } from "../state_read_cache.ts";
import { withLink } from "../../tests/_redis.ts";
import { redisStateCache, type SharedStateCache } from "./redis_state_cache.ts";

const entry = (value: string, revision: number) => ({ value, revision, updated_at: 1 });

Deno.test("state cache in Redis: shared by replicas, newer revisions win, change events invalidate", async () => {
  await withLink(async (link) => {
    const a = new StateCache({ ttlMs: 60_000, shared: redisStateCache(link, 60_000) });
    const b = new StateCache({ ttlMs: 60_000, shared: redisStateCache(link, 60_000) });
    await a.put("plant", "sp", entry("42", 2));
    await a.put("plant", "none", null);
    assert.deepEqual(await b.lookupMany("plant", ["sp", "none", "other"]), [
      entry("42", 2),
      null,
      undefined,
    ]);
    // A late read of an older revision does not bring it back.
    await b.put("plant", "sp", entry("41", 1));
    assert.deepEqual(await a.lookupMany("plant", ["sp"]), [entry("42", 2)]);
    await a.apply({
      op: "set",
      scope: "plant",
      key: "sp",
      value: "43",
      revision: 3,
      timestamp: new Date(5).toISOString(),
    });
    assert.deepEqual(
      await b.lookupMany("plant", ["sp"]),
      [entry("43", 3)].map((e) => ({
        ...e,
        updated_at: 5,
      })),
    );
    await b.apply({
      op: "delete",
      scope: "plant",
      key: "sp",
      value: null,
      revision: null,
      timestamp: "",
    });
    assert.deepEqual(await a.lookupMany("plant", ["sp", "none"]), [undefined, null]);
    await a.apply({
      op: "delete-scope",
      scope: "plant",
      key: null,
      value: null,
      revision: null,
      timestamp: "",
    });
    assert.deepEqual(await b.lookupMany("plant", ["none"]), [undefined]);
    assert.equal(await link.redis.exists(link.key("state-cache", "plant")), 0);
  });
});

Deno.test("state cache in Redis: entries expire after the TTL", async () => {
  await withLink(async (link) => {
    const cache = new StateCache({ ttlMs: 60_000, shared: redisStateCache(link, 50) });
    await cache.put("s", "k", entry("v", 1));
    assert.deepEqual(
      await new StateCache({ shared: redisStateCache(link, 50) }).lookupMany("s", ["k"]),
      [
        entry("v", 1),
      ],
    );
    await waitFor(async () =>
      (await new StateCache({ shared: redisStateCache(link, 50) }).lookupMany("s", ["k"]))[0] ===
        undefined
    );
  });
});

Deno.test("StateCache serves from process while the shared cache is unavailable or fails", async () => {
  let available = false;
  const failing: SharedStateCache = {
    get available() {
      return available;
    },
    getMany: () => Promise.reject(new Error("down")),
    put: () => Promise.reject(new Error("down")),
    forget: () => Promise.reject(new Error("down")),
    forgetScope: () => Promise.reject(new Error("down")),
  };
  const cache = new StateCache({ ttlMs: 60_000, shared: failing });
  await cache.put("s", "k", entry("v", 1)); // never throws
  const local = cache.lookupMany("s", ["k", "x"]);
  assert.ok(Array.isArray(local), "synchronous while unavailable");
  assert.deepEqual(local, [entry("v", 1), undefined]);
  available = true;
  assert.deepEqual(await cache.lookupMany("s", ["k"]), [entry("v", 1)], "a failure falls back");
  await cache.forget("s", "k");
  assert.deepEqual(await cache.lookupMany("s", ["k"]), [undefined]);
});
