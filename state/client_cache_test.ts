/** The state client reads through the gateway's cache (state/client.ts, gateway/state_read_cache.ts). */
import assert from "node:assert/strict";
import { StateCache } from "../gateway/state_read_cache.ts";
import { waitFor } from "../tests/_helpers.ts";
import { StateClient } from "./client.ts";

const encoder = new TextEncoder();

Deno.test("a read answered after its key was deleted does not bring the old value back into the cache", async () => {
  const cache = new StateCache({ ttlMs: 60_000 });
  let answer: (() => void) | undefined;
  let calls = 0;
  const client = new StateClient(
    (_service, body) => {
      calls++;
      const reply = JSON.stringify({
        success: true,
        data: { entries: { valve: { value: "OPEN", revision: 4, updated_at: 0 } } },
      });
      assert.equal(body[0], "state-get-many");
      // Held until the test lets it go: the delete's event arrives meanwhile.
      return new Promise((resolve) => answer = () => resolve([encoder.encode(reply)]));
    },
    { require: () => Promise.resolve() },
    cache,
  );
  const read = client.getMany("plant", ["valve"]);
  await waitFor(() => answer !== undefined, { what: "the read sent" });
  cache.apply({
    op: "delete",
    scope: "plant",
    key: "valve",
    value: null,
    revision: null,
    timestamp: new Date().toISOString(),
  });
  answer!();
  assert.equal((await read).valve?.value, "OPEN", "the caller gets what was read");
  assert.equal(cache.get("plant", "valve"), undefined, "the cache does not keep it");
  assert.equal(calls, 1);
});

Deno.test("readOne answers a cached key at once (no promise), fetches and caches a missing one", async () => {
  const cache = new StateCache({ ttlMs: 60_000 });
  const asked: string[][] = [];
  const client = new StateClient(
    (_service, body) => {
      const request = JSON.parse(body[1]!);
      asked.push(request.keys);
      const entries = Object.fromEntries(
        request.keys.map((
          k: string,
        ) => [k, k === "gone" ? null : { value: `v-${k}`, revision: 1, updated_at: 0 }]),
      );
      return Promise.resolve([
        encoder.encode(JSON.stringify({ success: true, data: { entries } })),
      ]);
    },
    { require: () => Promise.resolve() },
    cache,
  );
  const first = client.readOne("plant", "valve", (entry) => entry?.value);
  assert.ok(first instanceof Promise, "a miss is read from the service");
  assert.equal(await first, "v-valve");
  const second = client.readOne("plant", "valve", (entry) => entry?.value);
  assert.equal(second, "v-valve", "a hit is answered at once");
  assert.equal(await client.readOne("plant", "gone", (entry) => entry), null);
  assert.deepEqual(asked, [["valve"], ["gone"]]);
});
