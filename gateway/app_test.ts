/**
 * The app's authentication basics through `app.request()` (tests/_app.ts):
 * off, every request is served; on, a request needs a valid token holding
 * the route's permission, and state requests reach the service with a call
 * credential it verifies. Login, sessions and API keys: tests/auth_rest_test.ts.
 */
import assert from "node:assert/strict";
import { STATE_SERVICE } from "../state/operations.ts";
import { errorOf, json, withApp } from "../tests/_app.ts";
import { bearer, tokenWith } from "../tests/_auth.ts";

Deno.test("auth off: no credential needed; an unknown route is a JSON 404", async () => {
  await withApp(async ({ request }) => {
    assert.equal((await request("PUT", "/api/state/plant/k", json({ value: "v" }))).status, 200);
    const read = await request("GET", "/api/state/plant/k");
    assert.equal(read.status, 200);
    await read.body?.cancel();
    assert.deepEqual(await errorOf(await request("GET", "/api/nothing")), {
      status: 404,
      code: "NOT_FOUND",
      message: "No route for GET /api/nothing",
    });
  });
});

Deno.test("auth on: 401 without a credential or with a bad one, 403 without the permission, 200 with it", async () => {
  await withApp(async ({ request, calls }) => {
    const anonymous = await request("GET", "/api/state/plant/k");
    assert.equal(anonymous.headers.get("www-authenticate"), 'Bearer realm="plantd"');
    const required = await errorOf(anonymous);
    assert.deepEqual([required.status, required.code], [401, "UNAUTHENTICATED"]);

    const forged = await request("GET", "/api/state/plant/k", {
      headers: bearer("not-a-token"),
    });
    assert.deepEqual(
      [forged.status, (await errorOf(forged)).code],
      [401, "UNAUTHENTICATED"],
    );

    const reader = await tokenWith(["state:data:read"]);
    const write = await errorOf(
      await request("PUT", "/api/state/plant/k", json({ value: "v" }, bearer(reader))),
    );
    assert.deepEqual([write.status, write.code], [403, "FORBIDDEN"]);
    assert.equal(calls.length, 0, "nothing reached the state service");

    const writer = await tokenWith(["state:data:write"]);
    const written = await request(
      "PUT",
      "/api/state/plant/k",
      json({ value: "v" }, bearer(writer)),
    );
    assert.equal(written.status, 200);
    await written.body?.cancel();
    const read = await request("GET", "/api/state/plant/k", { headers: bearer(reader) });
    assert.equal(read.status, 200);
    assert.equal((await read.json()).value, "v");

    // The state service verified a call credential for each request (not the caller's token).
    const sent = calls.filter((c) => c.service === STATE_SERVICE).map((c) =>
      JSON.parse(c.body[1]!)
    );
    assert.equal(sent.length, 2);
    for (const request of sent) {
      assert.equal(typeof request.token, "string");
      assert.notEqual(request.token, reader);
      assert.notEqual(request.token, writer);
    }
  }, { auth: true });
});

Deno.test("the app fuses its request pipeline with each route of one handler (gateway/fusing_router.ts)", async () => {
  await withApp(async ({ app }) => {
    // The hot read and the probes: the pipeline and the route in one handler, no compose.
    for (const [method, path] of [["GET", "/api/state/plant/k"], ["GET", "/livez"]] as const) {
      assert.equal(app.router.match(method, path)[0].length, 1, `${method} ${path}`);
    }
    const probe = app.request("/livez");
    assert.ok(probe instanceof Response, "answered without a promise");
    assert.equal(probe.status, 200);
    await probe.body?.cancel();
    // Routes with validators keep Hono's compose.
    assert.ok(app.router.match("PUT", "/api/state/plant/k")[0].length > 2);
  });
});

Deno.test("the gateway answers a write method on its health and metrics paths with 405 and Allow, auth off and on (#21: POST /healthz was 404)", async () => {
  for (const auth of [false, true]) {
    await withApp(async ({ request }) => {
      for (
        const [method, path] of [["POST", "/healthz"], ["PUT", "/livez"], ["DELETE", "/metrics"]]
      ) {
        const response = await request(method!, path!);
        assert.equal(response.status, 405, `${method} ${path} (auth ${auth})`);
        assert.equal(response.headers.get("allow"), "GET, HEAD");
        assert.equal((await response.json()).error.code, "METHOD_NOT_ALLOWED");
      }
    }, { auth });
  }
});
