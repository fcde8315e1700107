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
