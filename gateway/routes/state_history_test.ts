/**
 * `/api/state/{scope}/{key}/history` through `app.request()` (tests/_app.ts,
 * a real state store behind a fake broker client): who changed a key, when,
 * old and new value; paging; deletion for state admins only.
 */
import assert from "node:assert/strict";
import { bearer, tokenWith } from "../../tests/_auth.ts";
import { errorOf, json, withApp } from "../../tests/_app.ts";

Deno.test("GET history names the authenticated writer with old and new values; pages by next_before", async () => {
  await withApp(async ({ request }) => {
    const alice = await tokenWith(["state:*"], { sub: "user:alice" });
    for (const value of ["1", "2", "3"]) {
      const put = await request("PUT", "/api/state/plant/valve", json({ value }, bearer(alice)));
      assert.equal(put.status, 200);
      await put.body?.cancel();
    }
    const reader = await tokenWith(["state:data:read"]);
    const got = await request("GET", "/api/state/plant/valve/history", { headers: bearer(reader) });
    assert.equal(got.status, 200);
    const body = await got.json();
    assert.deepEqual(
      body.entries.map((e: Record<string, unknown>) => [
        e.revision,
        e.op,
        e.old_value,
        e.new_value,
        e.actor,
      ]),
      [
        [3, "set", "2", "3", "user:alice"],
        [2, "set", "1", "2", "user:alice"],
        [1, "set", null, "1", "user:alice"],
      ],
    );
    assert.equal(body.next_before, null, "one page held them all");

    const first = await (await request("GET", "/api/state/plant/valve/history?limit=2", {
      headers: bearer(reader),
    })).json();
    assert.deepEqual(first.entries.map((e: { revision: number }) => e.revision), [3, 2]);
    assert.equal(first.next_before, first.entries[1].id);
    const second = await (await request(
      "GET",
      `/api/state/plant/valve/history?limit=2&before=${first.next_before}`,
      { headers: bearer(reader) },
    )).json();
    assert.deepEqual(second.entries.map((e: { revision: number }) => e.revision), [1]);
    assert.equal(second.next_before, null);

    const nobody = await request("GET", "/api/state/plant/valve/history");
    assert.equal(nobody.status, 401);
    await nobody.body?.cancel();
  }, { auth: true });
});

Deno.test("DELETE history needs state admin: 403 for a deleter, then 200 with the count; empty after", async () => {
  await withApp(async ({ request }) => {
    const writer = await tokenWith(["state:data:write", "state:data:delete", "state:data:read"]);
    const put = await request("PUT", "/api/state/plant/k", json({ value: "a" }, bearer(writer)));
    await put.body?.cancel();
    const refused = await errorOf(
      await request("DELETE", "/api/state/plant/k/history", { headers: bearer(writer) }),
    );
    assert.deepEqual([refused.status, refused.code], [403, "FORBIDDEN"]);

    const admin = await tokenWith(["state:scope:plant:admin"]);
    const deleted = await request("DELETE", "/api/state/plant/k/history", {
      headers: bearer(admin),
    });
    assert.equal(deleted.status, 200);
    assert.deepEqual(await deleted.json(), {
      scope: "plant",
      key: "k",
      status: "deleted",
      deleted: 1,
    });
    const after = await (await request("GET", "/api/state/plant/k/history", {
      headers: bearer(writer),
    })).json();
    assert.deepEqual(after.entries, []);
    // The key itself stays.
    const key = await request("GET", "/api/state/plant/k", { headers: bearer(writer) });
    assert.equal((await key.json()).value, "a");
  }, { auth: true });
});

Deno.test("without authentication the writer is anonymous; a bad page size is a 400 JSON error; documented in OpenAPI", async () => {
  await withApp(async ({ request }) => {
    const put = await request("PUT", "/api/state/plant/k", json({ value: "a" }));
    await put.body?.cancel();
    const got = await (await request("GET", "/api/state/plant/k/history")).json();
    assert.deepEqual(got.entries.map((e: { actor: string }) => e.actor), ["anonymous"]);

    const bad = await errorOf(await request("GET", "/api/state/plant/k/history?limit=0"));
    assert.deepEqual([bad.status, bad.code], [400, "BAD_REQUEST"]);
    assert.match(bad.message, /limit/);

    const doc = await (await request("GET", "/api/openapi.json")).json();
    const path = doc.paths["/api/state/{scope}/{key}/history"];
    assert.ok(path?.get && path?.delete, "GET and DELETE documented");
  });
});
