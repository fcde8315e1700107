/**
 * Event history end to end: the whole system on random ports (broker with
 * its buses, gateway), the real metrics ingester recording bus `event` into a
 * libSQL file or the real PostgreSQL server, events published on the bus in
 * both message forms, read back through GET /api/events by device, severity
 * and time.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { Publisher } from "../bus/publisher.ts";
import { metricsConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { startMetrics } from "../roles/metrics.ts";
import { call } from "./_auth.ts";
import { metricSum, waitFor } from "./_helpers.ts";
import { withDatabase } from "./_postgres.ts";
import { startSystem } from "./_system.ts";

const T0 = Date.UTC(2024, 0, 1);

const alarm = (device: string, severity: string, seconds: number, state = "raised") =>
  JSON.stringify({
    kind: "alarm",
    state,
    severity,
    device,
    channel: "temp",
    rule: "hi",
    value: 90,
    time: new Date(T0 + seconds * 1000).toISOString(),
    message: `${device} too hot`,
  });

async function history(store: { database_url?: string; db: string }): Promise<void> {
  const system = await startSystem({
    gateway: { metrics_database_url: store.database_url ?? "", metrics_db: store.db },
  });
  const registry = new Registry();
  const metrics = startMetrics({
    ...loadConfig(metricsConfig, { args: [], env: {} }),
    database_url: store.database_url ?? "",
    db: store.db,
    bus_endpoint: system.backends.metric!,
    event_buses: { event: system.backends.event! },
    event_max_payload_bytes: 4096,
    health_port: 0,
    log_level: "error",
    flush_interval_ms: 20,
    timescaledb: "off",
    // Test events are from 2024: a retention delete would race with their inserts.
    event_retention_days: 0,
  }, registry);
  const frames = new Publisher(system.frontends.event!, { form: "frames", sendHighWaterMark: 0 });
  const single = new Publisher(system.frontends.event!, { sendHighWaterMark: 0 });
  const counter = (name: string, labels: Record<string, string> = {}) =>
    metricSum(registry, name, labels);
  const events = async (query: string) => {
    const reply = await call(system.url, "GET", `/api/events?${query}`);
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    return reply.body.events as Array<Record<string, unknown>>;
  };
  try {
    // The subscription reaches the bus asynchronously: probe until one got through.
    await waitFor(async () => {
      frames.publish("warmup", "probe");
      return await counter("events_messages_received_total") >= 1;
    }, { what: "the recorder's subscription", timeoutMs: 20_000 });
    frames.publish("alarm.pump1.temp", alarm("pump1", "warning", 0));
    frames.publish("alarm.pump1.temp", alarm("pump1", "critical", 10));
    frames.publish("alarm.pump2.temp", alarm("pump2", "critical", 20));
    single.publish("org.plantd.Event", alarm("pump1", "info", 30, "cleared"));
    frames.publish("alarm.pump1.temp", "x".repeat(5000));
    frames.publish("notes", "{not json");
    // 503 until the ingester has opened (and migrated) the database.
    await waitFor(async () => {
      const reply = await call(system.url, "GET", "/api/events?topic_prefix=notes");
      return reply.status === 200 && reply.body.events.length === 1;
    }, { what: "the last event in the history", timeoutMs: 20_000 });
    assert.equal(await counter("events_rejected_total", { reason: "too_large" }), 1);

    const pump1 = await events("device=pump1");
    assert.deepEqual(pump1.map((e) => [e.time, e.severity, e.topic]), [
      ["2024-01-01T00:00:30.000Z", "info", "org.plantd.Event"],
      ["2024-01-01T00:00:10.000Z", "critical", "alarm.pump1.temp"],
      ["2024-01-01T00:00:00.000Z", "warning", "alarm.pump1.temp"],
    ]);
    assert.deepEqual(pump1[1]!.payload, JSON.parse(alarm("pump1", "critical", 10)));
    assert.equal(pump1[1]!.kind, "alarm");
    assert.equal(pump1[1]!.bus, "event");

    const critical = await events("severity=critical");
    assert.deepEqual(critical.map((e) => e.device), ["pump2", "pump1"]);
    const window = await events(
      "from=2024-01-01T00:00:05Z&to=2024-01-01T00:00:30Z&severity=critical&device=pump1",
    );
    assert.deepEqual(window.map((e) => e.time), ["2024-01-01T00:00:10.000Z"]);
    const notes = await events("topic_prefix=notes");
    assert.equal(notes[0]!.payload, "{not json");
    assert.equal(notes[0]!.device, null);

    // Pages: two, then the rest from the cursor.
    const first = await call(system.url, "GET", "/api/events?topic_prefix=alarm.&limit=2");
    assert.equal(first.body.events.length, 2);
    const rest = await events(`topic_prefix=alarm.&limit=2&before=${first.body.next}`);
    assert.deepEqual(rest.map((e) => e.device), ["pump1"]);
  } finally {
    frames.close();
    single.close();
    await metrics.close();
    await system.stop();
  }
}

Deno.test("events published on the bus come back from GET /api/events (libSQL)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await history({ db: `${dir}/metrics.db` });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("events published on the bus come back from GET /api/events (PostgreSQL)", async () => {
  await withDatabase(async (db) => {
    await history({ database_url: db.url, db: "unused.db" });
  });
});
