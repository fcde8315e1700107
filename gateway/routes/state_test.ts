/**
 * `/api/state` through `app.request()` with a fake broker client
 * (tests/_app.ts): each route's request to org.plantd.State and how its
 * reply becomes a status, headers and body. The system tests
 * (tests/gateway_test.ts) run the same routes against a real broker.
 */
import assert from "node:assert/strict";
import { STATE_SERVICE } from "../../state/operations.ts";
import { errorOf, json, service, withApp } from "../../tests/_app.ts";
import { bearer, tokenWith } from "../../tests/_auth.ts";
import { StateCache } from "../state_read_cache.ts";

/** The operations (with their JSON) the routes sent to the state service. */
function stateCalls(calls: { service: string; body: string[] }[]): string[] {
  return calls.filter((c) => c.service === STATE_SERVICE).map((c) => c.body[0]!);
}

Deno.test("PUT, GET and DELETE a key: revisions in the body and the ETag, then 404 KEY_NOT_FOUND", async () => {
  await withApp(async ({ request }) => {
    const put = await request("PUT", "/api/state/plant/setpoint", json({ value: "42" }));
    assert.equal(put.status, 200);
    assert.equal(put.headers.get("etag"), '"1"');
    assert.deepEqual(await put.json(), {
      scope: "plant",
      key: "setpoint",
      value: "42",
      revision: 1,
    });

    const get = await request("GET", "/api/state/plant/setpoint");
    assert.equal(get.status, 200);
    assert.equal(get.headers.get("etag"), '"1"');
    const entry = await get.json();
    assert.deepEqual({ ...entry, updated_at: typeof entry.updated_at }, {
      scope: "plant",
      key: "setpoint",
      value: "42",
      revision: 1,
      updated_at: "number",
    });

    const deleted = await request("DELETE", "/api/state/plant/setpoint");
    assert.equal(deleted.status, 200);
    assert.deepEqual(await deleted.json(), { scope: "plant", key: "setpoint", status: "deleted" });

    const gone = await request("GET", "/api/state/plant/setpoint");
    assert.deepEqual(await errorOf(gone), {
      status: 404,
      code: "KEY_NOT_FOUND",
      message: "Key 'setpoint' does not exist in scope 'plant'",
    });
    // Go plantd's delete says "deleted" for a missing key: REST asks first and says 404.
    const again = await request("DELETE", "/api/state/plant/setpoint");
    assert.equal((await errorOf(again)).code, "KEY_NOT_FOUND");
  });
});

Deno.test("PUT takes text/plain as the value itself; a JSON body must be {value}", async () => {
  await withApp(async ({ request }) => {
    const text = await request("PUT", "/api/state/plant/note", {
      body: '{"not": "parsed"}',
      headers: { "content-type": "text/plain" },
    });
    assert.equal(text.status, 200);
    assert.equal((await text.json()).value, '{"not": "parsed"}');

    const bad = await errorOf(
      await request("PUT", "/api/state/plant/note", json({ val: "x" })),
    );
    assert.deepEqual([bad.status, bad.code], [400, "BAD_REQUEST"]);
    assert.match(bad.message, /^value: /, "the validator names the field");
  });
});

Deno.test("If-Match makes a PUT a compare-and-set: 409 REVISION_CONFLICT with the current revision", async () => {
  await withApp(async ({ request, calls }) => {
    const first = await request(
      "PUT",
      "/api/state/plant/k",
      json({ value: "a" }, {
        "if-match": "0",
      }),
    );
    assert.equal(first.status, 200, "If-Match 0: the key must not exist yet");
    assert.equal((await first.json()).revision, 1);

    const stale = await request(
      "PUT",
      "/api/state/plant/k",
      json({ value: "b" }, {
        "if-match": '"0"',
      }),
    );
    const conflict = await errorOf(stale);
    assert.equal(conflict.status, 409);
    assert.equal(conflict.code, "REVISION_CONFLICT");
    assert.equal(conflict.current_revision, 1);

    const fresh = await request(
      "PUT",
      "/api/state/plant/k",
      json({ value: "c" }, {
        "if-match": '"1"',
      }),
    );
    assert.equal(fresh.status, 200);
    assert.equal(fresh.headers.get("etag"), '"2"');
    assert.deepEqual(stateCalls(calls), ["state-cas", "state-cas", "state-cas"]);

    const malformed = await request(
      "PUT",
      "/api/state/plant/k",
      json({ value: "d" }, {
        "if-match": "W/abc",
      }),
    );
    assert.equal((await errorOf(malformed)).status, 400);
  });
});

Deno.test("scopes: PUT 201 then 409 SCOPE_EXISTS, POST sets many, ?keys= reads several, DELETE then 404 SCOPE_NOT_FOUND", async () => {
  await withApp(async ({ request }) => {
    assert.equal((await request("PUT", "/api/state/line")).status, 201);
    assert.deepEqual(await errorOf(await request("PUT", "/api/state/line")), {
      status: 409,
      code: "SCOPE_EXISTS",
      message: "Scope 'line' already exists",
    });

    const many = await request("POST", "/api/state/line", json({ entries: { a: "1", b: "2" } }));
    assert.equal(many.status, 200);
    assert.deepEqual(await many.json(), { scope: "line", revisions: { a: 1, b: 1 } });
    const empty = await request("POST", "/api/state/line", json({ entries: {} }));
    assert.equal((await errorOf(empty)).status, 400);

    const keys = await request("GET", "/api/state/line");
    assert.deepEqual(await keys.json(), { scope: "line", count: 2, keys: ["a", "b"] });
    const read = await (await request("GET", "/api/state/line?keys=a,zz")).json();
    assert.equal(read.entries.a.value, "1");
    assert.equal(read.entries.zz, null);
    assert.deepEqual((await (await request("GET", "/api/state")).json()).scopes, ["line"]);

    assert.equal((await request("DELETE", "/api/state/line")).status, 200);
    assert.deepEqual(await errorOf(await request("GET", "/api/state/line")), {
      status: 404,
      code: "SCOPE_NOT_FOUND",
      message: "Scope 'line' does not exist",
    });
  });
});

Deno.test("413 for a body over max_body_bytes and for a value over the service's limit; 415 for another body type", async () => {
  await withApp(async ({ request, calls }) => {
    const body = await request("PUT", "/api/state/plant/big", json({ value: "x".repeat(300) }));
    assert.deepEqual(await errorOf(body), {
      status: 413,
      code: "PAYLOAD_TOO_LARGE",
      message: "Body over 256 bytes",
    });
    assert.deepEqual(calls, [], "refused before any call");

    const value = await request("PUT", "/api/state/plant/big", json({ value: "x".repeat(100) }));
    const tooLarge = await errorOf(value);
    assert.equal(tooLarge.status, 413);
    assert.equal(tooLarge.code, "PAYLOAD_TOO_LARGE");
    assert.match(tooLarge.message, /^Value for key 'big' is 100 bytes/);

    const form = await request("PUT", "/api/state/plant/k", {
      body: "value=1",
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    const unsupported = await errorOf(form);
    assert.equal(unsupported.status, 415);
    assert.equal(unsupported.code, "UNSUPPORTED_MEDIA_TYPE");
    const post = await request("POST", "/api/state/plant", {
      body: '{"entries":{"a":"1"}}',
      headers: { "content-type": "text/plain" },
    });
    assert.equal(post.status, 415, "a text/plain POST is a simple cross-site request");
    assert.equal(post.headers.get("accept-post"), "application/json");
  }, { maxBodyBytes: 256, maxValueBytes: 64 });
});

Deno.test("Idempotency-Key: a retry gets the first reply marked Idempotent-Replayed, another body 422", async () => {
  await withApp(async ({ request, calls }) => {
    const key = { "idempotency-key": '"order-7"' };
    const first = await request("PUT", "/api/state/plant/k", json({ value: "a" }, key));
    assert.equal(first.status, 200);
    assert.equal(first.headers.get("idempotent-replayed"), null);
    const sent = JSON.parse(calls.at(-1)!.body[1]!);
    assert.equal(sent.idempotency_key, "order-7", "the key goes to the service in the request");

    const retry = await request("PUT", "/api/state/plant/k", json({ value: "a" }, key));
    assert.equal(retry.status, 200);
    assert.equal(retry.headers.get("idempotent-replayed"), "true");
    assert.equal((await retry.json()).revision, 1, "applied once");

    const reused = await request("PUT", "/api/state/plant/k", json({ value: "b" }, key));
    const refused = await errorOf(reused);
    assert.equal(refused.status, 422);
    assert.equal(refused.code, "IDEMPOTENCY_KEY_REUSED");

    // A failure is replayed too, with the mark.
    assert.equal((await request("PUT", "/api/state/line")).status, 201);
    const scopeKey = { "idempotency-key": "create-line" };
    const exists = await request("PUT", "/api/state/line", { headers: scopeKey });
    assert.equal(exists.status, 409);
    assert.equal(exists.headers.get("idempotent-replayed"), null);
    await exists.body?.cancel();
    const replayed = await request("PUT", "/api/state/line", { headers: scopeKey });
    assert.equal(replayed.status, 409);
    assert.equal(replayed.headers.get("idempotent-replayed"), "true");
    await replayed.body?.cancel();

    const malformed = await request(
      "PUT",
      "/api/state/plant/k",
      json({ value: "a" }, {
        "idempotency-key": "",
      }),
    );
    assert.equal((await errorOf(malformed)).status, 400);
  });
});

Deno.test("a state reply that is not JSON is 502; no state worker is 503; a connection known down is 503 with Retry-After", async () => {
  let down = false;
  await withApp(async ({ request }) => {
    assert.deepEqual(await errorOf(await request("GET", "/api/state")), {
      status: 502,
      code: "UPSTREAM_ERROR",
      message: "The state service sent a reply that is not JSON",
    });
    down = true;
    const refused = await request("GET", "/api/state");
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get("retry-after"), "1");
    assert.equal((await errorOf(refused)).code, "SERVICE_UNAVAILABLE");
  }, {
    answer: (call) => call.service === STATE_SERVICE ? ["not json"] : undefined,
    connected: () => !down,
  });

  await withApp(async ({ request, calls }) => {
    assert.deepEqual(await errorOf(await request("GET", "/api/state/plant/k")), {
      status: 503,
      code: "SERVICE_UNAVAILABLE",
      message: `No worker serves '${STATE_SERVICE}'`,
      service: STATE_SERVICE,
    });
    assert.deepEqual(calls, []);
  }, { services: [service("org.plantd.module.Echo")] });
});

Deno.test("a cached read is answered from the cache, without a call and without a promise", async () => {
  await withApp(async ({ app, request, calls }) => {
    assert.equal((await request("PUT", "/api/state/plant/k", json({ value: "v" }))).status, 200);
    const before = calls.length;
    const answer = app.request("/api/state/plant/k");
    assert.ok(answer instanceof Response, "a synchronous answer");
    assert.equal(answer.status, 200);
    assert.equal((await answer.json()).value, "v");
    assert.equal(calls.length, before, "no call to the state service");
  }, { stateCache: new StateCache({ ttlMs: 60_000 }) });
});

Deno.test("every cached read gets a whole reply of its own: body, ETag and security headers; a new revision its own", async () => {
  await withApp(async ({ request }) => {
    assert.equal((await request("PUT", "/api/state/plant/k", json({ value: "v" }))).status, 200);
    const read = async () => {
      const answer = await request("GET", "/api/state/plant/k");
      return { headers: Object.fromEntries(answer.headers), body: await answer.json() };
    };
    const first = await read();
    assert.equal(first.body.value, "v");
    assert.equal(first.headers.etag, '"1"');
    assert.equal(first.headers["x-content-type-options"], "nosniff");
    assert.equal(
      first.headers["content-security-policy"],
      "default-src 'none'; frame-ancestors 'none'",
    );
    // The reply is built once per entry: a second and third read must not find it used up.
    assert.deepEqual(await read(), first);
    assert.deepEqual(await read(), first);
    assert.equal((await request("PUT", "/api/state/plant/k", json({ value: "w" }))).status, 200);
    const changed = await read();
    assert.equal(changed.body.value, "w");
    assert.equal(changed.headers.etag, '"2"');
  }, { stateCache: new StateCache({ ttlMs: 60_000 }) });
});

Deno.test("a cached read is refused at once when its user's token or API key is revoked, after being served", async () => {
  await withApp(async ({ request, store }) => {
    const admin = bearer(await tokenWith(["*"], { sub: "user:root" }));
    const as = (headers: Record<string, string>, init: RequestInit = {}) => ({
      ...init,
      headers: { ...headers, ...(init.headers as Record<string, string> | undefined) },
    });
    assert.equal(
      (await request("PUT", "/api/state/plant/k", as(admin, json({ value: "v" })))).status,
      200,
    );
    await store.createUser("ada", "correct horse battery", ["viewer"]);
    await store.createUser("boss", "correct horse battery", ["admin"]);
    const login = await request(
      "POST",
      "/api/auth/login",
      json({ username: "ada", password: "correct horse battery" }),
    );
    assert.equal(login.status, 200);
    const ada = bearer((await login.json()).access_token);
    const { key } = await store.createApiKey("robot", ["viewer"], "user:boss");
    const robot = bearer(key);
    const read = async (who: Record<string, string>) => {
      const answer = await request("GET", "/api/state/plant/k", as(who));
      await answer.body?.cancel();
      return answer.status;
    };
    const disable = async (username: string) => {
      const patched = await request(
        "PATCH",
        `/api/auth/users/${username}`,
        as(admin, json({ disabled: true })),
      );
      assert.equal(patched.status, 200);
    };
    // Served twice: the credential and the reader's client are remembered by now.
    for (const who of [ada, robot]) {
      assert.equal(await read(who), 200);
      assert.equal(await read(who), 200);
    }
    await disable("ada");
    assert.equal(await read(ada), 401, "a disabled user's token");
    assert.equal(await read(robot), 200, "another owner's key is not affected");
    await disable("boss");
    assert.equal(await read(robot), 401, "the API key of a disabled user");
  }, { auth: true, revocations: true, stateCache: new StateCache({ ttlMs: 60_000 }) });
});

Deno.test("storage failures of the state service: full is 507; unavailable, read-only, busy and I/O are 503 with Retry-After, naming the class", async () => {
  let error = "STORAGE_FULL";
  await withApp(async ({ request }) => {
    const full = await request("PUT", "/api/state/plant/k", json({ value: "v" }));
    assert.equal(full.status, 507);
    for (
      const passing of ["STORAGE_UNAVAILABLE", "STORAGE_READONLY", "STORAGE_BUSY", "STORAGE_IO"]
    ) {
      error = passing;
      const response = await request("PUT", "/api/state/plant/k", json({ value: "v" }));
      assert.equal(response.status, 503, passing);
      assert.equal(response.headers.get("retry-after"), "1");
      const body = await errorOf(response);
      assert.equal(body.code, "SERVICE_UNAVAILABLE");
      assert.equal(body.storage, passing);
      assert.match(String(body.message), new RegExp(passing));
    }
  }, {
    answer: (call) =>
      call.service === STATE_SERVICE
        ? [JSON.stringify({ error, message: "the database said no" })]
        : undefined,
  });
});
