/**
 * GET /api/devices through app.request(): the series of a real libSQL
 * metrics file grouped by device, the limit, 503 without a store, and the
 * metrics:read permission.
 */
import assert from "node:assert/strict";
import { LibsqlMetricsReader, openLibsqlWriter } from "../../metrics/libsql.ts";
import { errorOf, withApp } from "../../tests/_app.ts";
import { bearer, tokenWith } from "../../tests/_auth.ts";

const T0 = Date.UTC(2024, 0, 1);

async function withStore(body: (reader: LibsqlMetricsReader) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  const writer = await openLibsqlWriter(`${dir}/metrics.db`);
  await writer.write([
    { time: T0, device: "press", channel: "temperature", value: 20, tags: null },
    { time: T0 + 1000, device: "press", channel: "temperature", value: 21, tags: null },
    { time: T0 + 500, device: "press", channel: "pressure", value: 3, tags: null },
    { time: T0 + 2000, device: "boiler", channel: "level", value: 0.5, tags: null },
  ]);
  await writer.close();
  const reader = new LibsqlMetricsReader(`${dir}/metrics.db`);
  try {
    await body(reader);
  } finally {
    await reader.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("GET /api/devices lists devices with their channels' newest value and time", async () => {
  await withStore(async (reader) => {
    await withApp(async ({ request }) => {
      const all = await request("GET", "/api/devices");
      assert.equal(all.status, 200);
      assert.deepEqual(await all.json(), {
        devices: [
          {
            device: "boiler",
            channels: [
              { channel: "level", last_value: 0.5, last_time: "2024-01-01T00:00:02.000Z" },
            ],
          },
          {
            device: "press",
            channels: [
              { channel: "pressure", last_value: 3, last_time: "2024-01-01T00:00:00.500Z" },
              { channel: "temperature", last_value: 21, last_time: "2024-01-01T00:00:01.000Z" },
            ],
          },
        ],
        truncated: false,
      });
      const two = await (await request("GET", "/api/devices?limit=2")).json();
      assert.equal(two.truncated, true);
      assert.deepEqual(
        two.devices.map((
          d: { device: string; channels: unknown[] },
        ) => [d.device, d.channels.length]),
        [["boiler", 1], ["press", 1]],
      );
      for (const bad of ["limit=0", "limit=x", "limit=10001"]) {
        const refused = await errorOf(await request("GET", `/api/devices?${bad}`));
        assert.equal(refused.status, 400, bad);
        assert.match(refused.message, /limit/, bad);
      }
    }, { metricsStore: reader });
  });
});

Deno.test("GET /api/devices answers 503 without a metrics store", async () => {
  await withApp(async ({ request }) => {
    const refused = await errorOf(await request("GET", "/api/devices"));
    assert.equal(refused.status, 503);
    assert.equal(refused.code, "SERVICE_UNAVAILABLE");
  });
});

Deno.test("GET /api/devices needs metrics:read", async () => {
  await withStore(async (reader) => {
    await withApp(async ({ request }) => {
      assert.equal((await request("GET", "/api/devices")).status, 401);
      const without = await request("GET", "/api/devices", {
        headers: bearer(await tokenWith(["state:*"])),
      });
      assert.equal(without.status, 403);
      const allowed = await request("GET", "/api/devices", {
        headers: bearer(await tokenWith(["metrics:read"])),
      });
      assert.equal(allowed.status, 200);
      assert.equal((await allowed.json()).devices.length, 2);
    }, { metricsStore: reader, auth: true });
  });
});
