/**
 * The alarms component against the whole system (broker, buses, state
 * service, gateway, real sockets): a rule set over REST raises on a crossing
 * point published on the metric bus, the `alarm.` events arrive on the event
 * bus, acknowledging and clearing show in the list, and a restart of the
 * alarms process keeps what happened. Malformed points and rules are counted
 * and skipped.
 */
import assert from "node:assert/strict";
import { Publisher } from "../bus/publisher.ts";
import { Subscriber } from "../bus/subscriber.ts";
import { startAlarms } from "../roles/alarms.ts";
import { alarmsSettings } from "./_alarms.ts";
import { waitFor } from "./_helpers.ts";
import { plant } from "./_cli.ts";
import { startSystem, type System } from "./_system.ts";

function alarmsFor(system: System) {
  return startAlarms(alarmsSettings(system));
}

const api = async (system: System, method: string, path: string, body?: unknown) => {
  const response = await fetch(system.url + path, {
    method,
    ...(body !== undefined
      ? { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }
      : {}),
  });
  return { status: response.status, body: await response.json() };
};

Deno.test("alarms: raise on a crossing point, acknowledge, clear; survives a restart", async () => {
  const system = await startSystem({ gateway: { request_timeout_ms: 10_000 } });
  let alarms = alarmsFor(system);
  const metrics = new Publisher(system.frontends.metric!, { sendHighWaterMark: 0 });
  const events = new Subscriber(system.backends.event!, { bus: "event" });
  events.subscribe("alarm.");
  const received: Array<{ topic: string; event: Record<string, unknown> }> = [];
  const reading = (async () => {
    for await (const message of events) {
      received.push({
        topic: message.topic,
        event: JSON.parse(new TextDecoder().decode(message.payload)),
      });
    }
  })();
  const point = (value: unknown) =>
    metrics.publish(
      "org.plantd.Metric",
      JSON.stringify({ time: new Date().toISOString(), device: "boiler", channel: "temp", value }),
    );
  const eventIn = (state: string) => received.find((r) => r.event.state === state);
  try {
    await waitFor(() => alarms.service.ready, { timeoutMs: 20_000, what: "rules loaded" });
    const put = await api(system, "PUT", "/api/alarms/rules/boiler-hot", {
      device: "boiler",
      channel: "temp",
      kind: "above",
      threshold: 80,
      deadband: 5,
      severity: "critical",
    });
    assert.equal(put.status, 200, JSON.stringify(put.body));

    // Malformed points are counted and skipped; the point after them still counts.
    await waitFor(() => {
      metrics.publish("org.plantd.Metric", "{not json");
      metrics.publish("org.plantd.Metric", JSON.stringify({ device: "boiler", channel: "temp" }));
      point(90);
      return eventIn("raised") !== undefined;
    }, { timeoutMs: 20_000, intervalMs: 100, what: "the raised event" });
    const raised = eventIn("raised")!;
    assert.equal(raised.topic, "alarm.boiler.temp");
    assert.deepEqual(Object.keys(raised.event).sort(), [
      "channel",
      "device",
      "kind",
      "message",
      "rule",
      "severity",
      "state",
      "time",
      "value",
    ]);
    assert.equal(raised.event.kind, "alarm");
    assert.equal(raised.event.severity, "critical");
    assert.equal(raised.event.rule, "boiler-hot");
    assert.equal(raised.event.value, 90);
    assert.ok(!Number.isNaN(Date.parse(String(raised.event.time))));
    assert.ok((alarms.service.stats.rejected.not_json ?? 0) > 0);
    assert.ok((alarms.service.stats.rejected.value ?? 0) > 0);

    const active = await api(system, "GET", "/api/alarms?state=active");
    assert.equal(active.status, 200);
    assert.equal(active.body.count, 1);
    const id = active.body.alarms[0].id;

    const ack = await api(system, "POST", `/api/alarms/${id}/ack`, {});
    assert.equal(ack.status, 200, JSON.stringify(ack.body));
    assert.equal(ack.body.state, "acknowledged");
    assert.equal(ack.body.acknowledged_by, "anonymous");
    await waitFor(() => eventIn("acknowledged") !== undefined, { what: "the acknowledged event" });
    assert.equal(eventIn("acknowledged")!.event.by, "anonymous");
    const again = await api(system, "POST", `/api/alarms/${id}/ack`, {});
    assert.equal(again.status, 409);

    // Inside the deadband it stays; below it clears.
    await waitFor(() => {
      point(60);
      return eventIn("cleared") !== undefined;
    }, { timeoutMs: 20_000, intervalMs: 100, what: "the cleared event" });
    const cleared = await api(system, "GET", "/api/alarms?state=cleared");
    assert.equal(cleared.body.alarms[0].id, id);
    assert.equal(cleared.body.alarms[0].acknowledged_by, "anonymous");

    // A rule that is not one, written past the alarms API, is skipped and counted.
    const bad = await fetch(system.url + "/api/state/org.plantd.Alarms/broken", {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ value: '{"device":"x","kind":"sideways"}' }),
    });
    assert.equal(bad.status, 200, await bad.text());
    await waitFor(async () => (await api(system, "GET", "/api/alarms/rules")).body.invalid === 1, {
      timeoutMs: 10_000,
      what: "the malformed rule counted",
    });

    // A restart reads the alarm back, acknowledgement and all, and the rule.
    await alarms.service.flushed();
    await alarms.close();
    alarms = alarmsFor(system);
    await waitFor(() => alarms.service.ready, { timeoutMs: 20_000, what: "reloaded" });
    await waitFor(() => alarms.service.engine.rules.length === 1, { what: "the rule reloaded" });
    const after = await api(system, "GET", "/api/alarms");
    assert.equal(after.status, 200, JSON.stringify(after.body));
    assert.equal(after.body.alarms[0].id, id);
    assert.equal(after.body.alarms[0].state, "cleared");
    assert.equal(after.body.alarms[0].acknowledged_by, "anonymous");
  } finally {
    await events.close();
    await reading;
    await metrics.close();
    await alarms.close();
    await system.stop();
  }
});

/** `plant args…` against the gateway at `url`. */
const plantAt = (url: string, ...args: string[]) => plant(["--gateway", url, ...args]);

Deno.test("plant alarms: rules, list and acknowledge from the command line", async () => {
  const system = await startSystem({ gateway: { request_timeout_ms: 10_000 } });
  const alarms = alarmsFor(system);
  const metrics = new Publisher(system.frontends.metric!, { sendHighWaterMark: 0 });
  try {
    await waitFor(() => alarms.service.ready, { timeoutMs: 20_000, what: "rules loaded" });
    const set = await plantAt(
      system.url,
      "alarms",
      "rule-set",
      "low-level",
      '{"device":"tank","channel":"level","kind":"below","threshold":10,"severity":"warning"}',
    );
    assert.equal(set.code, 0, set.stderr);
    const rules = await plantAt(system.url, "--json", "alarms", "rules");
    assert.equal(JSON.parse(rules.stdout).rules[0].id, "low-level");

    await waitFor(() => {
      metrics.publish(
        "org.plantd.Metric",
        JSON.stringify({ device: "tank", channel: "level", value: 3 }),
      );
      return alarms.service.engine.counts().active === 1;
    }, { timeoutMs: 20_000, intervalMs: 100, what: "the alarm raised" });
    const listed = await plantAt(system.url, "--json", "alarms", "ls", "active");
    assert.equal(listed.code, 0, listed.stderr);
    const [alarm] = JSON.parse(listed.stdout).alarms;
    assert.equal(alarm.rule, "low-level");

    const ack = await plantAt(system.url, "alarms", "ack", alarm.id);
    assert.equal(ack.code, 0, ack.stderr);
    assert.match(ack.stdout, /acknowledged .* by anonymous/);
    assert.equal(alarms.service.engine.get(alarm.id)?.state, "acknowledged");

    const bad = await plantAt(system.url, "alarms", "rule-set", "x", '{"device":"tank"}');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /channel|kind|threshold/);
    const usage = await plantAt(system.url, "alarms", "ls", "weird");
    assert.equal(usage.code, 2, usage.stderr);

    const removed = await plantAt(system.url, "alarms", "rule-rm", "low-level");
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(alarms.service.engine.get(alarm.id)?.state, "cleared");
  } finally {
    await metrics.close();
    await alarms.close();
    await system.stop();
  }
});
