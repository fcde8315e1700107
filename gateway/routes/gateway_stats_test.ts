/**
 * GET /api/gateway/stats through app.request(): totals that follow the
 * requests the app served, and the telemetry:read permission.
 */
import assert from "node:assert/strict";
import { withApp } from "../../tests/_app.ts";
import { bearer, tokenWith } from "../../tests/_auth.ts";

Deno.test("GET /api/gateway/stats counts requests, errors and latency of the gateway", async () => {
  await withApp(async ({ request }) => {
    const before = await (await request("GET", "/api/gateway/stats")).json();
    assert.equal((await request("GET", "/api/state")).status, 200);
    assert.equal((await request("GET", "/api/nothing-here")).status, 404);
    assert.equal((await request("GET", "/api/devices")).status, 503);
    const after = await (await request("GET", "/api/gateway/stats")).json();
    // The first stats request, then the three above.
    assert.equal(after.requests - before.requests, 4);
    assert.equal(after.client_errors - before.client_errors, 1);
    assert.equal(after.server_errors - before.server_errors, 1);
    assert.equal(after.latency.count - before.latency.count, 4);
    assert.equal(after.latency.counts.length, after.latency.bounds.length + 1);
    assert.equal(after.latency.counts.at(-1), after.latency.count);
    assert.ok(after.latency.bounds.length > 0);
    assert.ok(after.at >= before.at);
  });
});

Deno.test("GET /api/gateway/stats needs telemetry:read", async () => {
  await withApp(async ({ request }) => {
    assert.equal((await request("GET", "/api/gateway/stats")).status, 401);
    const without = await request("GET", "/api/gateway/stats", {
      headers: bearer(await tokenWith(["metrics:read"])),
    });
    assert.equal(without.status, 403);
    const allowed = await request("GET", "/api/gateway/stats", {
      headers: bearer(await tokenWith(["telemetry:read"])),
    });
    assert.equal(allowed.status, 200);
    assert.ok((await allowed.json()).requests >= 2);
  }, { auth: true });
});
