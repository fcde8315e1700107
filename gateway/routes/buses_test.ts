/**
 * `/api/buses` through `app.request()` (tests/_app.ts): which buses there
 * are, and the checks of a publish. Delivery is the system tests' job
 * (tests/publish_test.ts).
 */
import assert from "node:assert/strict";
import { errorOf, json, withApp } from "../../tests/_app.ts";
import { freePort } from "../../tests/_helpers.ts";

Deno.test("GET /api/buses: none configured, none listed", async () => {
  await withApp(async ({ request }) => {
    const response = await request("GET", "/api/buses");
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { subscribe: [], publish: [] });
  });
});

Deno.test("GET /api/buses lists the buses to subscribe to and those to publish on; a publish is checked before it is sent", async () => {
  // Endpoints nobody listens on: the hub and the outlet only connect.
  const endpoint = () => `tcp://127.0.0.1:${freePort()}`;
  await withApp(async ({ request }) => {
    const response = await request("GET", "/api/buses");
    assert.deepEqual(await response.json(), {
      subscribe: ["events", "metric"],
      publish: ["events"],
    });

    const unknown = await errorOf(
      await request("POST", "/api/buses/metric/messages", json({ topic: "t", payload: "p" })),
    );
    assert.deepEqual([unknown.status, unknown.code], [404, "NOT_FOUND"]);
    assert.match(unknown.message, /^Bus 'metric' takes no messages from clients/);

    const noTopic = await errorOf(
      await request("POST", "/api/buses/events/messages", json({ payload: "p" })),
    );
    assert.deepEqual([noTopic.status, noTopic.code], [400, "BAD_REQUEST"]);
    assert.match(noTopic.message, /^topic: /);

    const badBase64 = await errorOf(
      await request(
        "POST",
        "/api/buses/events/messages",
        json({ topic: "t", payload: "***", encoding: "base64" }),
      ),
    );
    assert.deepEqual([badBase64.status, badBase64.message], [400, "payload is not valid base64"]);

    const sent = await request(
      "POST",
      "/api/buses/events/messages",
      json({ topic: "org.plantd.Event.alarm", payload: "aGk=", encoding: "base64" }),
    );
    assert.equal(sent.status, 202);
    assert.deepEqual(await sent.json(), {
      bus: "events",
      topic: "org.plantd.Event.alarm",
      bytes: 2,
    });
  }, {
    buses: { events: endpoint(), metric: endpoint() },
    publishBuses: { events: endpoint() },
  });
});
