import assert from "node:assert/strict";
import { waitAtMost } from "./wait_at_most.ts";

Deno.test("waitAtMost ends with the promise, at the bound, or with the promise's rejection, and leaves no timer", async () => {
  let settled = false;
  await waitAtMost(Promise.resolve().then(() => settled = true), 60_000);
  assert.ok(settled, "ended when the promise settled, long before the bound");
  // A promise that never settles: only the bound ends the wait.
  await waitAtMost(new Promise<void>(() => {}), 20);
  await assert.rejects(waitAtMost(Promise.reject(new Error("boom")), 60_000), /boom/);
  // The test sanitizer fails the test if any of the three left its 60 s timer running.
});
