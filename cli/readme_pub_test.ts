/**
 * The README's `plant pub metric …` example, run as written against a metric
 * bus and a real ingester: the point is stored, not rejected (#21: the
 * example's `{"value":1.5}` has no device or channel, which the ingester
 * rejects).
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { Bus } from "../bus/bus.ts";
import { metricsConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { startMetrics } from "../roles/metrics.ts";
import { connectableEndpoint } from "../roles/running.ts";
import { freePort, waitFor } from "../tests/_helpers.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { assertOk, plant } from "./_plant.ts";

const README = new URL("../README.md", import.meta.url);

/** The arguments of the README's `task cli -- pub metric …` line, as a shell would split them. */
function readmeExample(): string[] {
  const line = Deno.readTextFileSync(README).split("\n")
    .find((l) => /task cli -- pub metric /.test(l));
  assert.ok(line, "the README shows plant pub metric");
  const match = /task cli -- (pub metric \S+) '([^']*)'/.exec(line);
  assert.ok(match, `a single-quoted payload: ${line}`);
  return [...match[1]!.split(" "), match[2]!];
}

async function counter(registry: Registry, name: string): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return 0;
  return (await metric.get()).values.reduce((sum, v) => sum + v.value, 0);
}

Deno.test("the README's plant pub metric example is stored by the ingester", async () => {
  const example = readmeExample();
  const dir = Deno.makeTempDirSync({ prefix: "plant-readme-" });
  const bus = Bus.start({
    name: "metric",
    frontend: "tcp://127.0.0.1:*",
    backend: "tcp://127.0.0.1:*",
  });
  const registry = new Registry();
  const metrics = startMetrics({
    ...loadConfig(metricsConfig, { args: [], env: {} }),
    bus_endpoint: connectableEndpoint(bus.backend),
    db: `${dir}/metrics.db`,
    health_port: freePort(),
    log_level: "error",
    flush_interval_ms: 20,
    retention_days: 0,
  }, registry);
  try {
    // plant pub sends once the ingester's subscription has come through the bus.
    const published = await plant([
      ...example,
      "--endpoint",
      connectableEndpoint(bus.frontend),
      "--wait",
      "30000",
    ]);
    assertOk(published);
    assert.equal(published.stderr, "", "a subscriber was there");
    await waitFor(
      async () =>
        await counter(registry, "metrics_points_written_total") +
            await counter(registry, "metrics_points_rejected_total") > 0,
      { what: "the ingester to take the point" },
    );
    assert.equal(await counter(registry, "metrics_points_rejected_total"), 0, "rejected");
    assert.equal(await counter(registry, "metrics_points_written_total"), 1);
  } finally {
    await metrics.close();
    await bus.close();
    await sharedPoller().idle();
    Deno.removeSync(dir, { recursive: true });
  }
});
