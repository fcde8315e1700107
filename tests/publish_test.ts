/**
 * Publishing through the gateway: REST and WebSocket messages reach
 * subscribers whole, as [topic, payload] by default (Go plantd's single
 * frame when asked for); the state bus
 * and unknown buses take nothing; with authentication on, a topic needs its
 * `bus:publish` grant.
 */
import assert from "node:assert/strict";
import { Subscriber } from "../bus/subscriber.ts";
import { text } from "../mdp/protocol.ts";
import { startSystem } from "./_system.ts";
import { bearer, tokenWith, withSecuredSystem } from "./_auth.ts";
import { openWs } from "./_ws.ts";
import { waitFor } from "./_helpers.ts";

Deno.test("REST and WebSocket publishing reach bus subscribers", async () => {
  const system = await startSystem();
  const subscriber = new Subscriber(system.backends.event!, { bus: "event" });
  subscriber.subscribe("alarm.");
  const ws = await openWs(system.url);
  // A WebSocket subscriber of the gateway too (#21: it got topic 'alarm.', payload 'boiler…').
  const watcher = await openWs(system.url);
  try {
    watcher.send({ type: "subscribe", id: "w", bus: "event", prefix: "alarm." });
    await watcher.nextOf("subscribed", "w");
    const buses = await (await fetch(`${system.url}/api/buses`)).json();
    assert.deepEqual(buses.publish.sort(), ["event", "metric"]);
    const received: string[] = [];
    const pump = (async () => {
      for await (const message of subscriber) {
        received.push(`${message.topic}|${text(message.payload)}|${message.form}`);
      }
    })();
    // Until the subscription has reached the bus, messages are dropped: repeat.
    await waitFor(async () => {
      const reply = await fetch(`${system.url}/api/buses/event/messages`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ topic: "alarm.boiler", payload: "hot" }),
      });
      assert.equal(reply.status, 202);
      assert.deepEqual(await reply.json(), { bus: "event", topic: "alarm.boiler", bytes: 3 });
      return received.length > 0 && watcher.received.some((m) => m.type === "message");
    });
    // The default form keeps the whole topic (#21: a single frame was cut at the prefix).
    assert.equal(received[0], "alarm.boiler|hot|frames");
    const whole = await watcher.nextOf("message", "w");
    assert.deepEqual([whole.topic, whole.payload], ["alarm.boiler", "hot"]);
    // Go plantd's single frame on request: it has no topic boundary, so a subscriber
    // splits it at the longest envelope or subscription it knows (docs/websocket.md).
    const single = await fetch(`${system.url}/api/buses/event/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ topic: "alarm.boiler", payload: "hot", form: "single" }),
    });
    assert.equal(single.status, 202);
    await single.body?.cancel();
    await waitFor(() => received.includes("alarm.|boilerhot|single"));
    await waitFor(() =>
      watcher.received.some((m) =>
        m.type === "message" && m.topic === "alarm." && m.payload === "boilerhot"
      )
    );

    ws.socket.send(JSON.stringify({
      type: "publish",
      id: "p1",
      bus: "event",
      topic: "alarm.pump",
      payload: btoa("\u0000\u00ff"),
      encoding: "base64",
      form: "frames",
    }));
    const published = await ws.nextOf("published", "p1");
    assert.equal(published.bytes, 2);
    await waitFor(() => received.some((r) => r.startsWith("alarm.pump") && r.endsWith("|frames")));

    // The state bus and unknown buses take nothing.
    for (const bus of ["state", "nope"]) {
      const refused = await fetch(`${system.url}/api/buses/${bus}/messages`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ topic: "x", payload: "y" }),
      });
      assert.equal(refused.status, 404);
      assert.equal((await refused.json()).error.code, "NOT_FOUND");
    }
    const bad = await fetch(`${system.url}/api/buses/event/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ topic: "x", payload: "***", encoding: "base64" }),
    });
    assert.equal(bad.status, 400);
    await bad.body?.cancel();
    subscriber.close();
    await pump;
  } finally {
    subscriber.close();
    await ws.close();
    await watcher.close();
    await system.stop();
  }
});

Deno.test("publishing needs bus:publish for the topic (REST and WebSocket)", async () => {
  await withSecuredSystem(async ({ url }) => {
    const token = await tokenWith(["bus:publish:event:line1."]);
    const post = (topic: string) =>
      fetch(`${url}/api/buses/event/messages`, {
        method: "POST",
        headers: { ...bearer(token), "content-type": "application/json" },
        body: JSON.stringify({ topic, payload: "1" }),
      });
    const allowed = await post("line1.start");
    assert.equal(allowed.status, 202);
    await allowed.body?.cancel();
    const denied = await post("line2.start");
    assert.equal(denied.status, 403);
    await denied.body?.cancel();

    const ws = await openWs(url, bearer(token));
    try {
      ws.socket.send(
        JSON.stringify({ type: "publish", id: "a", bus: "event", topic: "line1.x", payload: "" }),
      );
      await ws.nextOf("published", "a");
      ws.socket.send(
        JSON.stringify({ type: "publish", id: "b", bus: "metric", topic: "line1.x", payload: "" }),
      );
      assert.equal((await ws.nextOf("error", "b")).code, "FORBIDDEN");
    } finally {
      await ws.close();
    }
  });
});
