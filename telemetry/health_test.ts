import assert from "node:assert/strict";
import { Counter, Gauge, Registry } from "prom-client";
import { healthRoutes } from "./health.ts";
import { processMetrics } from "./process_metrics.ts";

Deno.test("/metrics?name= answers just the named metrics; without it, everything", async () => {
  const registry = new Registry();
  processMetrics(registry);
  const written = new Counter({ name: "points_written_total", help: "w", registers: [registry] });
  const buffered = new Gauge({ name: "points_buffered", help: "b", registers: [registry] });
  written.inc(42);
  buffered.set(7);
  const app = healthRoutes(() => [], registry);
  const text = async (query: string) => await (await app.request(`/metrics${query}`)).text();

  const one = await text("?name=points_written_total");
  assert.match(one, /^points_written_total 42$/m);
  assert.doesNotMatch(one, /points_buffered|process_/);

  const two = await text("?name=points_written_total&name=points_buffered");
  assert.match(two, /^points_written_total 42$/m);
  assert.match(two, /^points_buffered 7$/m);
  assert.doesNotMatch(two, /process_/);

  assert.equal(await text("?name=no_such_metric"), "");
  const all = await text("");
  assert.match(all, /^points_written_total 42$/m);
  assert.match(all, /^process_cpu_user_seconds_total /m);
});

Deno.test("a write method on a health or metrics path gets 405 with Allow, not 404", async () => {
  const app = healthRoutes(() => [], new Registry());
  for (const path of ["/healthz", "/livez", "/readyz", "/metrics"]) {
    for (const method of ["POST", "PUT", "PATCH", "DELETE"]) {
      const response = await app.request(path, { method });
      assert.equal(response.status, 405, `${method} ${path}`);
      assert.equal(response.headers.get("allow"), "GET, HEAD");
      assert.equal((await response.json()).error.code, "METHOD_NOT_ALLOWED");
    }
  }
  // GET and HEAD still answer.
  assert.equal((await app.request("/healthz")).status, 200);
  assert.equal((await app.request("/livez", { method: "HEAD" })).status, 200);
});

Deno.test("process metrics: no process_heap_bytes (VmData, the reserved heap), the V8 heap in use instead", async () => {
  const registry = new Registry();
  processMetrics(registry);
  const text = await registry.metrics();
  assert.doesNotMatch(text, /^process_heap_bytes /m);
  const used = Number(/^nodejs_heap_size_used_bytes (\d+)/m.exec(text)?.[1]);
  const rss = Number(/^process_resident_memory_bytes (\d+)/m.exec(text)?.[1]);
  assert.ok(used > 0 && used < rss, `heap used ${used} within resident ${rss}`);
});
