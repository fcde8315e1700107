/**
 * GET/PUT /api/console/layout through app.request(), stored by the real
 * state operations: one layout per principal, shared with authentication
 * off, validated and bounded, and kept without any state permission.
 */
import assert from "node:assert/strict";
import { errorOf, json, withApp } from "../../tests/_app.ts";
import { bearer, tokenWith } from "../../tests/_auth.ts";
import { LAYOUT_SCOPE, MAX_PANELS, MAX_SERIES_PER_PANEL } from "./layout.ts";

const LAYOUT = {
  panels: [
    {
      window: "1h",
      series: [{ device: "press", channel: "temperature" }, {
        device: "press",
        channel: "pressure",
      }],
    },
    { window: "24h", series: [] },
  ],
};

Deno.test("the console layout is saved, read back, validated and bounded", async () => {
  await withApp(async ({ request, ops }) => {
    const none = await request("GET", "/api/console/layout");
    assert.equal(none.status, 200);
    assert.deepEqual(await none.json(), { layout: null });

    const saved = await request("PUT", "/api/console/layout", json(LAYOUT));
    assert.equal(saved.status, 200, await saved.clone().text());
    assert.deepEqual(await (await request("GET", "/api/console/layout")).json(), {
      layout: LAYOUT,
    });
    // Kept in the state service, under the (anonymous) principal's id.
    const stored = await ops.handle(
      ["state-get", JSON.stringify({ service: LAYOUT_SCOPE, key: "anonymous" })].map((f) =>
        new TextEncoder().encode(f)
      ),
    );
    assert.match(stored, /temperature/);

    const panel = { window: "1h", series: [] };
    const series = { device: "d", channel: "c" };
    const bad: Array<[unknown, RegExp]> = [
      [{ panels: Array(MAX_PANELS + 1).fill(panel) }, /panels/],
      [
        { panels: [{ window: "1h", series: Array(MAX_SERIES_PER_PANEL + 1).fill(series) }] },
        /series/,
      ],
      [{ panels: [{ window: "1y", series: [] }] }, /window/],
      [{ panels: [{ window: "1h", series: [{ device: "", channel: "c" }] }] }, /device/],
      [{ panels: [], extra: 1 }, /extra|unrecognized/i],
      [[], /expected object|request/],
    ];
    for (const [body, message] of bad) {
      const refused = await errorOf(await request("PUT", "/api/console/layout", json(body)));
      assert.equal(refused.status, 400, JSON.stringify(body));
      assert.match(refused.message, message, JSON.stringify(body));
    }
    const text = await request("PUT", "/api/console/layout", {
      body: JSON.stringify(LAYOUT),
      headers: { "content-type": "text/plain" },
    });
    assert.equal(text.status, 415);
    // Nothing refused replaced the saved layout.
    assert.deepEqual((await (await request("GET", "/api/console/layout")).json()).layout, LAYOUT);
  });
});

Deno.test("each principal has its own layout, with metrics:read and no state permission", async () => {
  await withApp(async ({ request }) => {
    const alice = bearer(await tokenWith(["metrics:read"], { sub: "user:alice" }));
    const bob = bearer(await tokenWith(["metrics:read"], { sub: "user:bob" }));
    const saved = await request("PUT", "/api/console/layout", json(LAYOUT, alice));
    assert.equal(saved.status, 200, await saved.clone().text());
    const mine = await request("GET", "/api/console/layout", { headers: alice });
    assert.deepEqual((await mine.json()).layout, LAYOUT);
    const theirs = await request("GET", "/api/console/layout", { headers: bob });
    assert.deepEqual(await theirs.json(), { layout: null });

    const stranger = bearer(await tokenWith(["state:*"]));
    assert.equal((await request("GET", "/api/console/layout", { headers: stranger })).status, 403);
    const put = await request("PUT", "/api/console/layout", json(LAYOUT, stranger));
    assert.equal(put.status, 403);
    assert.equal((await request("GET", "/api/console/layout")).status, 401);
  }, { auth: true });
});
