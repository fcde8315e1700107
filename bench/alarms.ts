/**
 * `deno task bench:alarms`: whether alarm evaluation keeps up with the metric
 * bus at the rate the metrics ingester takes it. The alarms component
 * (`main.ts alarms`) and the ingester (`main.ts metrics`, into PostgreSQL as
 * in bench:metrics) run as child processes subscribed to the same metric bus;
 * each round publishes one burst of points as fast as one publisher can and
 * times both: points over the time from the first publish until the alarms
 * component has evaluated the last one, and until the ingester has committed
 * the last one. The burst ends with one crossing point; the time from its
 * publish to its `alarm.` raised event on the event bus is how far behind the
 * stream alarm evaluation is at the end of a burst.
 *
 * The alarms component holds an above rule and a rate rule for every device
 * and channel the points use (none fires but the crossing point), so every
 * point is judged against two rules.
 *
 * @module
 */
import postgres from "postgres";
import { Bus } from "../bus/bus.ts";
import { Publisher } from "../bus/publisher.ts";
import { Subscriber } from "../bus/subscriber.ts";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { openPgWriter } from "../metrics/pg.ts";
import { connectableEndpoint } from "../roles/running.ts";
import { ALARMS_SERVICE } from "../alarms/rules.ts";
import { num } from "./_stats.ts";
import {
  Child,
  freePort,
  type Metrics,
  runBench,
  startComponent,
  startStateService,
  until,
} from "./harness.ts";

const DEVICES = 20;
const CHANNELS = 10;
const T0 = Date.UTC(2024, 0, 1);
const encoder = new TextEncoder();

/** Go plantd's logger payload of point i: 20 devices x 10 channels, one point per ms. */
function payload(i: number, offset: number, value = (i % 1000) / 8): Uint8Array {
  return encoder.encode(
    `{"time":"${new Date(T0 + offset + i).toISOString()}","device":"press-${
      i % DEVICES
    }","channel":"ch-${(i / DEVICES | 0) % CHANNELS}","value":${value}}`,
  );
}

/** A counter of a component's /metrics (summed over labels). */
async function counter(url: string, name: string): Promise<number> {
  const body = await (await fetch(`${url}?name=${name}`)).text();
  let sum = 0;
  for (const line of body.split("\n")) {
    if (line.startsWith(name)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** Polls `name` every 10 ms until it reaches `count`; returns when it did. */
async function reach(url: string, name: string, count: number, timeoutMs = 120_000) {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    const value = await counter(url, name).catch(() => -1);
    if (value >= count) return performance.now();
    if (performance.now() > deadline) {
      throw new Error(`${name} at ${value} of ${count} after ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function databaseUrl(admin: string, name: string): string {
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return url.toString();
}

await runBench({
  name: "alarms",
  title: "Alarm evaluation (deno task bench:alarms)",
  command: "`deno task bench:alarms` (bench/alarms.ts)",
  servers: ["postgres"],
  settings: {
    points: { env: "BENCH_POINTS", default: 200_000, help: "points per burst" },
    pg_url: {
      env: "BENCH_PG_URL",
      default: "postgres://postgres@127.0.0.1:5432/postgres",
      help: "admin URL of the server (a fresh database is created and dropped)",
    },
  },
}, async (bench) => {
  const points = bench.settings.points;
  const admin = postgres(bench.settings.pg_url, { max: 1, onnotice: () => {} });
  const name = `plantd_bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  await admin.unsafe(`create database ${name}`);
  const url = databaseUrl(bench.settings.pg_url, name);
  const dir = await Deno.makeTempDir({ prefix: "bench-alarms-" });
  // High-water marks off on the metric bus, as in bench:metrics' saturated runs: nothing lost.
  const metricBus = Bus.start({
    name: "metric",
    frontend: "tcp://127.0.0.1:*",
    backend: "tcp://127.0.0.1:*",
    sendHighWaterMark: 0,
    receiveHighWaterMark: 0,
  });
  const eventBus = Bus.start({
    name: "event",
    frontend: "tcp://127.0.0.1:*",
    backend: "tcp://127.0.0.1:*",
  });
  const brokerEndpoint = `tcp://127.0.0.1:${freePort()}`;
  startComponent("broker", ["--endpoint", brokerEndpoint, "--health-port", "0"], {
    PLANTD_BROKER_BUSES: "[]",
  });
  startStateService(`${dir}/state.db`, brokerEndpoint, "");
  const alarmsPort = freePort();
  const alarmsUrl = `http://127.0.0.1:${alarmsPort}/metrics`;
  const alarmsChild = new Child({
    name: "alarms",
    script: "main.ts",
    args: ["alarms"],
    env: {
      PLANTD_ALARMS_BROKER_ENDPOINT: brokerEndpoint,
      PLANTD_ALARMS_METRIC_BUS_ENDPOINT: connectableEndpoint(metricBus.backend),
      PLANTD_ALARMS_EVENT_BUS_ENDPOINT: connectableEndpoint(eventBus.frontend),
      PLANTD_ALARMS_RECEIVE_HWM: "0",
      PLANTD_ALARMS_HEALTH_PORT: String(alarmsPort),
      PLANTD_ALARMS_LOG_LEVEL: "warn",
    },
    stopBy: "SIGTERM",
  });
  const ingestPort = freePort();
  const ingestUrl = `http://127.0.0.1:${ingestPort}/metrics`;
  await (await openPgWriter(url, { mode: "off" })).close();
  const ingesterChild = new Child({
    name: "ingester",
    script: "main.ts",
    args: ["metrics"],
    env: {
      PLANTD_METRICS_DATABASE_URL: url,
      PLANTD_METRICS_BUS_ENDPOINT: connectableEndpoint(metricBus.backend),
      PLANTD_METRICS_RECEIVE_HWM: "0",
      PLANTD_METRICS_BUFFER_POINTS: String(points * 4),
      PLANTD_METRICS_TIMESCALEDB: "off",
      PLANTD_METRICS_RETENTION_DAYS: "0",
      PLANTD_METRICS_HEALTH_PORT: String(ingestPort),
      PLANTD_METRICS_LOG_LEVEL: "warn",
    },
    stopBy: "SIGTERM",
  });
  const publisher = new Publisher(connectableEndpoint(metricBus.frontend), {
    sendHighWaterMark: 0,
  });
  const events = new Subscriber(connectableEndpoint(eventBus.backend), { bus: "event" });
  events.subscribe("alarm.");
  const client = new MdpClient(brokerEndpoint, { timeoutMs: 10_000 });
  const rules = DEVICES * CHANNELS * 2;
  try {
    const ask = async (operation: string, request: unknown) => {
      const [reply] = await client.request(ALARMS_SERVICE, [operation, JSON.stringify(request)], {
        timeoutMs: 2000,
      });
      const parsed = JSON.parse(text(reply!));
      if (parsed.success !== true) throw new Error(`${operation}: ${text(reply!)}`);
      return parsed.data;
    };
    await until(async () => (await ask("status", {})).ready === true, 60_000, "alarms service");
    for (let d = 0; d < DEVICES; d++) {
      for (let c = 0; c < CHANNELS; c++) {
        const target = { device: `press-${d}`, channel: `ch-${c}`, severity: "warning" };
        await ask("rule-set", {
          rule: { id: `hot-${d}-${c}`, ...target, kind: "above", threshold: 1000, deadband: 10 },
        });
        await ask("rule-set", {
          rule: { id: `fast-${d}-${c}`, ...target, kind: "rate", threshold: 1e9 },
        });
      }
    }
    // Warm up: both subscriptions in place, JIT warm, connections open.
    const evaluated = () => counter(alarmsUrl, "alarms_points_evaluated_total");
    const written = () => counter(ingestUrl, "metrics_points_written_total");
    await until(
      async () => {
        publisher.publish("org.plantd.Metric", payload(0, Date.now() - T0));
        return (await evaluated().catch(() => 0)) > 0 && (await written().catch(() => 0)) > 0;
      },
      60_000,
      "both subscribed",
    );
    await new Promise((resolve) => setTimeout(resolve, 500));

    /** The next raised or cleared event, with when it arrived. */
    const nextEvent = async (state: string) => {
      while (true) {
        const message = await events.receive();
        const at = performance.now();
        if (JSON.parse(new TextDecoder().decode(message.payload)).state === state) return at;
      }
    };
    const crossing = (offset: number, value: number) => payload(0, offset + points + 1, value);

    const label = `${num(points)} points per burst, ${rules} rules (an above and a rate rule ` +
      "per device/channel), metric bus and receive HWM 0 (not defaults)";
    bench.row("alarms", `bus → alarms component (main.ts alarms); ${label}`);
    bench.row("ingest", `bus → ingester → PostgreSQL, same points, same run; ${label}`);
    await bench.rounds([{ key: "burst", rows: ["alarms", "ingest"] }], async (_unit, round) => {
      const offset = (round + 1) * 10_000_000;
      const messages = Array.from({ length: points }, (_, i) => payload(i, offset));
      const evaluatedBefore = await evaluated();
      const writtenBefore = await written();
      const raised = nextEvent("raised");
      const started = performance.now();
      for (let i = 0; i < messages.length; i++) {
        publisher.publish("org.plantd.Metric", messages[i]!);
        if (i % 20_000 === 19_999) await new Promise((resolve) => setTimeout(resolve, 0));
      }
      const crossingAt = performance.now();
      publisher.publish("org.plantd.Metric", crossing(offset, 5000));
      const [alarmsDone, ingestDone, raisedAt] = await Promise.all([
        reach(alarmsUrl, "alarms_points_evaluated_total", evaluatedBefore + points + 1),
        reach(ingestUrl, "metrics_points_written_total", writtenBefore + points + 1),
        raised,
      ]);
      // Back to normal for the next round (its own cleared event).
      const cleared = nextEvent("cleared");
      publisher.publish("org.plantd.Metric", crossing(offset + 1, 0));
      await cleared;
      return new Map<string, Metrics>([
        ["alarms", {
          "points/s": points / ((alarmsDone - started) / 1000),
          "lag ms": raisedAt - crossingAt,
        }],
        ["ingest", { "points/s": points / ((ingestDone - started) / 1000) }],
      ]);
    });
  } finally {
    await events.close();
    await publisher.close();
    await client.close();
    // Stopped before the database goes, so the ingester does not complain of its loss.
    await alarmsChild.stop(10_000);
    await ingesterChild.stop(10_000);
    await metricBus.close();
    await eventBus.close();
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end();
  }
  const med = (key: string) => bench.stats(key, "points/s").median;
  return {
    description: `${num(points)} points per burst from one publisher (payloads encoded before ` +
      "the clock starts) on a metric bus in the bench process; the alarms component and the " +
      "metrics ingester (into PostgreSQL, plain tables, as bench:metrics' saturated runs) each " +
      "in a child process, both subscribed to it, so both take every point of the same burst " +
      "on the machine's shared cores. Rates are points over the time from the first publish " +
      "until the component's counter (alarms_points_evaluated_total, " +
      "metrics_points_written_total) reached the last point. Lag is from publishing the " +
      "crossing point that ends each burst to its raised event arriving on the event bus.",
    tables: [{
      rows: ["alarms", "ingest"],
      columns: [
        { header: "path", show: "label" },
        { header: "points/s (median)", show: "median:points/s" },
        { header: "range", show: "range:points/s" },
        { header: "crossing point to raised event, ms (median)", show: "median:lag ms" },
        { header: "max", show: "max:lag ms" },
      ],
    }],
    notes: [
      `Alarm evaluation ran at ${num(med("alarms"))} points/s against the ingester's ` +
      `${num(med("ingest"))} points/s in the same bursts (medians).`,
    ],
    checks: [{
      name: "alarm evaluation keeps up with ingest (points/s)",
      value: { rows: ["alarms"], metric: "points/s" },
      op: ">=",
      target: { rows: ["ingest"], metric: "points/s" },
    }],
  };
});
