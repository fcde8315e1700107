/**
 * Bus metrics and health as a role exposes them: proxy statistics and capture
 * counts on /metrics, one health check per bus.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { startBuses } from "../roles/bus.ts";
import { Publisher } from "./publisher.ts";
import { Subscriber } from "./subscriber.ts";
import { eventually, receiveN, scope, untilConnected } from "./_testing.ts";

const bus = (name: string, capture?: string) => ({
  name,
  frontend: "tcp://127.0.0.1:*",
  backend: "tcp://127.0.0.1:*",
  ...(capture ? { capture } : {}),
  send_hwm: 1000,
  receive_hwm: 1000,
  capture_hwm: 10_000,
  max_message_bytes: 16 * 1024 * 1024,
  max_subscription_bytes: 64 * 1024,
  topics: ["org.plantd.Metric"],
});

function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

Deno.test("startBuses() exposes per-bus and per-topic counters and a health check per bus", async () => {
  await scope(async (track) => {
    const registry = new Registry();
    const running = track(
      await startBuses([bus("metric", "inproc://metrics-test-capture"), bus("event")], registry),
    );
    const metric = running.set.get("metric")!;
    const subscriber = track(new Subscriber(metric.backend, { topics: ["org.plantd.Metric"] }));
    const publisher = track(new Publisher(metric.frontend));
    await untilConnected([publisher], [subscriber]);
    const before = await metric.statistics();
    const payload = '{"device":"d","channel":"c","value":1.5}';
    for (let i = 0; i < 100; i++) publisher.publish("org.plantd.Metric", payload);
    await receiveN(subscriber, 100);
    await eventually(async () => (await metric.snapshot()).capture!.missedFrames === 0, "capture");

    const text = await registry.metrics();
    const published = sample(text, "bus_published_frames_total", 'bus="metric"')!;
    assert.equal(published - before.frontend.framesIn, 100);
    assert.equal(sample(text, "bus_published_frames_total", 'bus="event"'), 0);
    assert.equal(sample(text, "bus_up", 'bus="metric"'), 1);
    assert.equal(
      sample(text, "bus_topic_messages_total", 'bus="metric",topic="org.plantd.Metric"'),
      100,
    );
    assert.equal(
      sample(text, "bus_topic_bytes_total", 'bus="metric",topic="org.plantd.Metric"'),
      100 * ("org.plantd.Metric".length + payload.length),
    );
    assert.equal(sample(text, "bus_capture_missed_frames", 'bus="metric"'), 0);
    // No capture on "event": no capture series for it.
    assert.equal(sample(text, "bus_capture_missed_frames", 'bus="event"'), undefined);

    assert.deepEqual(running.checks().map((c) => [c.name, c.status]), [
      ["bus_metric", "UP"],
      ["bus_event", "UP"],
    ]);
  });
});
