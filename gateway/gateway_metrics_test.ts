import assert from "node:assert/strict";
import { Counter, Histogram, Registry } from "prom-client";
import { gatewayMetrics } from "./gateway_metrics.ts";

/** What prom-client's own Counter and Histogram show for the same requests. */
function reference(requests: [string, string, number, number][]): Registry {
  const registry = new Registry();
  const counter = new Counter({
    name: "http_requests_total",
    help: "HTTP requests served, per method, route and status",
    labelNames: ["method", "route", "status"],
    registers: [registry],
  });
  const histogram = new Histogram({
    name: "http_request_duration_seconds",
    help: "HTTP request latency, per method and route",
    labelNames: ["method", "route"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [registry],
  });
  for (const [method, route, status, seconds] of requests) {
    counter.inc({ method, route, status: String(status) });
    histogram.observe({ method, route }, seconds);
  }
  return registry;
}

const NAMES = ["http_requests_total", "http_request_duration_seconds"];

Deno.test("request metrics read like prom-client's counter and histogram (text and JSON)", async () => {
  const requests: [string, string, number, number][] = [];
  const routes = ["/api/state/:scope/:key", "/api/state", "unmatched"];
  // Every bucket edge, below and above all bounds, then a spread of values.
  const values = [0, 0.0005, 0.00050001, 0.001, 0.0025, 0.005, 0.01, 0.05, 1, 5, 5.0001, 60];
  for (let i = 0; i < 500; i++) {
    const seconds = i < values.length ? values[i]! : (i * 7919 % 1000) / 1000 * (i % 3 ? 0.01 : 2);
    requests.push([i % 5 ? "GET" : "PUT", routes[i % 3]!, [200, 404, 429][i % 4 % 3]!, seconds]);
  }
  const ours = new Registry();
  const metrics = gatewayMetrics(ours);
  const expected = reference(requests);
  // Read in the middle too: counts sent once are not sent again.
  for (const [i, [method, route, status, seconds]] of requests.entries()) {
    metrics.request(method, route, status, seconds);
    if (i === 250) await ours.metrics();
  }
  // The same lines and values (series may come in another order).
  const lines = async (registry: Registry, name: string) =>
    (await registry.getSingleMetricAsString(name)).split("\n").sort();
  const json = async (registry: Registry, name: string) => {
    const { values, ...rest } = await registry.getSingleMetric(name)!.get();
    return JSON.stringify({ ...rest, values: values.map((v) => JSON.stringify(v)).sort() });
  };
  for (const name of NAMES) {
    assert.deepEqual(await lines(ours, name), await lines(expected, name));
    assert.equal(await json(ours, name), await json(expected, name));
  }
  assert.match(await ours.metrics(), /http_request_duration_seconds_count\{method="GET"/);
  ours.resetMetrics();
  assert.match(
    await ours.getSingleMetricAsString("http_request_duration_seconds"),
    /_count\{method="GET",route="\/api\/state"\} 0/,
  );
});
