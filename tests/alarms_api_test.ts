/**
 * `/api/alarms` over app.request(): permissions, the acknowledging user sent
 * to the service (never a credential) and audited, validation before any call.
 */
import assert from "node:assert/strict";
import { ALARMS_SERVICE } from "../alarms/rules.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { type Call, errorOf, json, service, withApp } from "./_app.ts";
import { bearer, tokenWith } from "./_auth.ts";

const ALARM = {
  id: "hot.abc",
  rule: "hot",
  device: "boiler",
  channel: "temp",
  kind: "above",
  severity: "critical",
  state: "acknowledged",
  message: "boiler/temp above 80",
  value: 90,
  last_value: 90,
  raised_at: "2026-01-01T00:00:00.000Z",
  acknowledged_at: "2026-01-01T00:01:00.000Z",
  acknowledged_by: "user:ann",
};

/** The alarms service as the routes see it: a scripted reply per operation. */
function alarmsAnswer(call: Call) {
  if (call.service !== ALARMS_SERVICE) return undefined;
  const request = JSON.parse(call.body[1] ?? "{}");
  switch (call.body[0]) {
    case "list":
      return [JSON.stringify({
        success: true,
        data: { count: 1, alarms: [ALARM], counts: { active: 0, acknowledged: 1, cleared: 0 } },
      })];
    case "ack":
      if (request.id === "gone") {
        return [JSON.stringify({ success: false, code: "NOT_FOUND", error: "No alarm 'gone'" })];
      }
      return [JSON.stringify({ success: true, data: { ...ALARM, acknowledged_by: request.by } })];
    case "rule-set":
      return [JSON.stringify({
        success: true,
        data: { deadband: 0, severity: "warning", enabled: true, ...request.rule },
      })];
    default:
      return [JSON.stringify({ success: false, code: "BAD_REQUEST", error: "unexpected" })];
  }
}

const services = [service(STATE_SERVICE), service(ALARMS_SERVICE)];

Deno.test("alarms API: read, acknowledge as the caller (audited), permissions", async () => {
  await withApp(async ({ request, calls, store }) => {
    const viewer = bearer(await tokenWith(["alarms:read"], { sub: "user:vic" }));
    const operator = bearer(
      await tokenWith(["alarms:read", "alarms:ack"], { sub: "user:ann" }),
    );

    const list = await request("GET", "/api/alarms?state=open&limit=5", { headers: viewer });
    assert.equal(list.status, 200);
    assert.equal((await list.json()).alarms[0].id, "hot.abc");
    assert.deepEqual(JSON.parse(calls.at(-1)!.body[1]!), { state: "open", limit: 5 });

    const bad = await request("GET", "/api/alarms?state=weird", { headers: viewer });
    assert.equal(bad.status, 400);
    assert.equal((await request("GET", "/api/alarms")).status, 401);

    const denied = await request("POST", "/api/alarms/hot.abc/ack", json({}, viewer));
    assert.equal(denied.status, 403);

    const before = calls.length;
    const plain = await request("POST", "/api/alarms/hot.abc/ack", {
      headers: { ...operator, "content-type": "text/plain" },
      body: "{}",
    });
    assert.equal(plain.status, 415, "acknowledging is JSON-only");
    assert.equal(calls.length, before);

    const ack = await request(
      "POST",
      "/api/alarms/hot.abc/ack",
      json({ comment: "on it" }, operator),
    );
    assert.equal(ack.status, 200, await ack.clone().text());
    assert.equal((await ack.json()).acknowledged_by, "user:ann");
    const sent = JSON.parse(calls.at(-1)!.body[1]!);
    assert.deepEqual(sent, { id: "hot.abc", by: "user:ann" }, "the user's id, no credential");

    const events = await store.queryAudit({ action: "alarm.ack", limit: 10 });
    assert.equal(events.length, 1);
    assert.equal(events[0]!.actor, "user:ann");
    assert.equal(events[0]!.target, "alarm:hot.abc");
    assert.equal(events[0]!.details?.comment, "on it");

    const gone = await request("POST", "/api/alarms/gone/ack", json({}, operator));
    assert.equal((await errorOf(gone)).status, 404);
  }, { auth: true, services, answer: alarmsAnswer });
});

Deno.test("alarms API: rules are validated before the service is asked", async () => {
  await withApp(async ({ request, calls }) => {
    const writer = bearer(await tokenWith(["alarms:write"], { sub: "user:eng" }));
    const reader = bearer(await tokenWith(["alarms:read"]));
    const rule = { device: "boiler", channel: "temp", kind: "above", threshold: 80 };

    assert.equal((await request("PUT", "/api/alarms/rules/hot", json(rule, reader))).status, 403);
    const before = calls.length;
    for (
      const body of [
        { ...rule, kind: "sideways" },
        { ...rule, threshold: "high" },
        { ...rule, kind: "rate", threshold: 0 },
        { ...rule, extra: true },
      ]
    ) {
      const refused = await request("PUT", "/api/alarms/rules/hot", json(body, writer));
      assert.equal(refused.status, 400, JSON.stringify(body));
    }
    const badId = await request("PUT", "/api/alarms/rules/a%2Fb", json(rule, writer));
    assert.equal(badId.status, 400);
    assert.equal(calls.length, before, "nothing malformed reached the service");

    const put = await request("PUT", "/api/alarms/rules/hot", json(rule, writer));
    assert.equal(put.status, 200, await put.clone().text());
    assert.deepEqual(JSON.parse(calls.at(-1)!.body[1]!), {
      rule: { ...rule, id: "hot", deadband: 0, severity: "warning", enabled: true },
    });
    assert.equal((await put.json()).severity, "warning");
  }, { auth: true, services, answer: alarmsAnswer });
});

Deno.test("the service bridge: alarms operations need the alarms permissions, ack names the caller", async () => {
  await withApp(async ({ request, calls }) => {
    const caller = bearer(
      await tokenWith([`service:call:${ALARMS_SERVICE}`, "alarms:read"], { sub: "user:eve" }),
    );
    const path = `/api/services/${ALARMS_SERVICE}/ack`;
    const refused = await request("POST", path, json({ id: "hot.abc", by: "user:boss" }, caller));
    assert.equal(refused.status, 403, "ack needs alarms:ack through the bridge too");

    const acker = bearer(
      await tokenWith([`service:call:${ALARMS_SERVICE}`, "alarms:ack"], { sub: "user:eve" }),
    );
    const ok = await request("POST", path, json({ id: "hot.abc", by: "user:boss" }, acker));
    assert.equal(ok.status, 200, await ok.clone().text());
    assert.equal(JSON.parse(calls.at(-1)!.body[1]!).by, "user:eve", "a forged `by` is replaced");
  }, { auth: true, services, answer: alarmsAnswer });
});

Deno.test("alarms API: documented in the OpenAPI document", async () => {
  await withApp(async ({ request }) => {
    const doc = await (await request("GET", "/api/openapi.json")).json();
    for (const path of ["/api/alarms", "/api/alarms/{id}/ack", "/api/alarms/rules/{id}"]) {
      assert.ok(doc.paths[path], `${path} documented`);
    }
    const body = doc.paths["/api/alarms/rules/{id}"].put.requestBody.content["application/json"];
    assert.deepEqual(body.schema.properties.kind.enum, ["above", "below", "rate"]);
  });
});
