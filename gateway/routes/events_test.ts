/**
 * GET /api/events through app.request(): permissions, input validation and
 * the answer without a store, over a real libSQL events table.
 */
import assert from "node:assert/strict";
import { BUILTIN_ROLES, permissionsOf } from "../../auth/permissions.ts";
import { LibsqlMetricsReader, openLibsqlWriter } from "../../metrics/libsql.ts";
import { withApp } from "../../tests/_app.ts";
import { bearer, tokenWith } from "../../tests/_auth.ts";

const T0 = Date.UTC(2024, 0, 1);

async function withStore(body: (reader: LibsqlMetricsReader) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  const writer = await openLibsqlWriter(`${dir}/m.db`);
  await writer.writeEvents([
    {
      time: T0,
      bus: "event",
      topic: "alarm.p.t",
      device: "p",
      severity: "critical",
      kind: "alarm",
      payload: '{"device":"p","severity":"critical"}',
    },
    {
      time: T0 + 1,
      bus: "event",
      topic: "note",
      device: null,
      severity: null,
      kind: null,
      payload: "[not json",
    },
  ]);
  await writer.close();
  const reader = new LibsqlMetricsReader(`${dir}/m.db`);
  try {
    await body(reader);
  } finally {
    await reader.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("GET /api/events needs events:read; viewers and operators have it", async () => {
  for (const role of ["viewer", "operator", "admin"]) {
    assert.ok(
      permissionsOf([role], BUILTIN_ROLES).some((p) => p === "events:read" || p === "*"),
      role,
    );
  }
  await withStore(async (reader) => {
    await withApp(async ({ request }) => {
      const anonymous = await request("GET", "/api/events");
      assert.equal(anonymous.status, 401);
      await anonymous.body?.cancel();
      const other = await request("GET", "/api/events", {
        headers: bearer(await tokenWith(["metrics:read"])),
      });
      assert.equal(other.status, 403);
      await other.body?.cancel();
      const allowed = await request("GET", "/api/events?limit=1", {
        headers: bearer(await tokenWith(["events:read"])),
      });
      assert.equal(allowed.status, 200);
      const page = await allowed.json();
      assert.deepEqual(page.events.map((e: { payload: unknown }) => e.payload), ["[not json"]);
      assert.match(page.next, /^\d+_\d+$/);
      const next = await request("GET", `/api/events?limit=1&before=${page.next}`, {
        headers: bearer(await tokenWith(["events:read"])),
      });
      const second = await next.json();
      assert.deepEqual(second.events[0].payload, { device: "p", severity: "critical" });
      assert.equal(second.events[0].time, "2024-01-01T00:00:00.000Z");
    }, { auth: true, metricsStore: reader });
  });
});

Deno.test("GET /api/events refuses bad input with 400 and answers 503 without a store", async () => {
  await withStore(async (reader) => {
    await withApp(async ({ request }) => {
      for (
        const query of [
          "from=yesterday",
          "to=2024-13-01T00:00:00Z",
          "from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z",
          "before=12",
          "before=1_x",
          "limit=0",
          "limit=1001",
          "limit=ten",
          `device=${"d".repeat(257)}`,
        ]
      ) {
        const reply = await request("GET", `/api/events?${query}`);
        const body = await reply.json();
        assert.equal(reply.status, 400, `${query}: ${JSON.stringify(body)}`);
        assert.equal(typeof body.error.message, "string");
      }
    }, { metricsStore: reader });
  });
  await withApp(async ({ request }) => {
    const reply = await request("GET", "/api/events");
    assert.equal(reply.status, 503);
    assert.equal((await reply.json()).error.code, "SERVICE_UNAVAILABLE");
    // Documented, with its filters.
    const doc = await (await request("GET", "/api/openapi.json")).json();
    const names = doc.paths["/api/events"].get.parameters.map((p: { name: string }) => p.name);
    assert.deepEqual(names.sort(), [
      "before",
      "bus",
      "device",
      "from",
      "limit",
      "severity",
      "to",
      "topic_prefix",
    ]);
  });
});
