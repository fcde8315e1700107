/**
 * The gateway keeps cached state reads until a change arrives only while it
 * sees every change event (gateway/state_coherence.ts): a lost event, a state
 * service gone silent, or a state worker whose events never arrive empties
 * the cache, on the real broker, buses, state service and gateway.
 */
import assert from "node:assert/strict";
import { Publisher } from "../bus/publisher.ts";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { HEARTBEAT_TOPIC } from "../state/changes.ts";
import { metricSum, waitFor } from "./_helpers.ts";
import { put, startSystem, type System } from "./_system.ts";

const metric = (system: System, name: string, labels: Record<string, string> = {}) =>
  metricSum(system.registry, name, labels);

const coherent = (system: System) => metric(system, "gateway_state_cache_coherent");

async function get(system: System, path: string): Promise<string> {
  const response = await fetch(`${system.url}${path}`);
  assert.equal(response.status, 200, `GET ${path}`);
  return (await response.json()).value;
}

/** The state service's changes through a publisher that drops the next change event on demand. */
function lossyChanges() {
  const lossy = { dropNext: false, publisher: undefined as Publisher | undefined };
  const make = (frontend: string) => {
    const publisher = lossy.publisher = new Publisher(frontend, { form: "frames" });
    return {
      publish(topic: string, payload: string) {
        if (lossy.dropNext && topic !== HEARTBEAT_TOPIC) {
          lossy.dropNext = false;
          return;
        }
        publisher.publish(topic, payload);
      },
    };
  };
  return { lossy, make };
}

Deno.test("a change event lost on the bus: the next heartbeat shows the gap and the new value is served", async () => {
  const { lossy, make } = lossyChanges();
  const system = await startSystem({ state: { bus_heartbeat_ms: 200 }, stateChanges: make });
  const client = new MdpClient(system.brokerEndpoint);
  try {
    await waitFor(async () => await coherent(system) === 1, { what: "a complete view" });
    await put(system, "/api/state/plant");
    await put(system, "/api/state/plant/valve", '{"value":"OPEN"}');
    assert.equal(await get(system, "/api/state/plant/valve"), "OPEN");
    const hits = await metric(system, "gateway_state_cache_hits_total");
    assert.equal(await get(system, "/api/state/plant/valve"), "OPEN");
    assert.equal(await metric(system, "gateway_state_cache_hits_total"), hits + 1, "cached");

    // Written past the gateway, its change event lost: only the gap can tell.
    lossy.dropNext = true;
    const [reply] = await client.request(STATE_SERVICE, [
      "state-set",
      JSON.stringify({ service: "plant", key: "valve", value: "CLOSED" }),
    ]);
    assert.equal(JSON.parse(text(reply!)).success, true);
    assert.equal(lossy.dropNext, false, "the event was dropped");
    await waitFor(async () => await get(system, "/api/state/plant/valve") === "CLOSED", {
      what: "the value written while its event was lost",
      timeoutMs: 10_000,
    });
    assert.ok(await metric(system, "gateway_state_cache_flushes_total", { reason: "gap" }) >= 1);
  } finally {
    await client.close();
    await system.stop();
    await lossy.publisher?.close();
  }
});

Deno.test("a state service gone silent empties the cache; its successor makes the view complete again", async () => {
  const { lossy, make } = lossyChanges();
  const system = await startSystem({ state: { bus_heartbeat_ms: 200 }, stateChanges: make });
  try {
    await waitFor(async () => await coherent(system) === 1, { what: "a complete view" });
    await put(system, "/api/state/plant");
    await put(system, "/api/state/plant/valve", '{"value":"OPEN"}');
    assert.ok(await metric(system, "gateway_state_cache_entries") >= 1);
    await system.stopState();
    await waitFor(async () => await coherent(system) === 0, { what: "the silence noticed" });
    assert.ok(await metric(system, "gateway_state_cache_flushes_total", { reason: "silent" }) >= 1);
    assert.equal(await metric(system, "gateway_state_cache_entries"), 0);
    await system.startState();
    await waitFor(async () => await coherent(system) === 1, {
      what: "the new state service heard",
      timeoutMs: 10_000,
    });
  } finally {
    await system.stop();
    await lossy.publisher?.close();
  }
});

Deno.test("a state worker whose events never arrive (one more worker than heartbeats account for) makes the view incomplete", async () => {
  const system = await startSystem({ state: { bus_heartbeat_ms: 200 } });
  let stranger: MdpWorker | undefined;
  try {
    await waitFor(async () => await coherent(system) === 1, { what: "a complete view" });
    // Registered at the broker like a Go plantd state service: it publishes nothing here.
    stranger = new MdpWorker(system.brokerEndpoint, STATE_SERVICE, () => [
      new TextEncoder().encode('{"success":false,"error":"not here"}'),
    ]);
    await waitFor(async () => await coherent(system) === 0, {
      what: "the unseen worker noticed",
      timeoutMs: 10_000,
    });
    assert.ok(
      await metric(system, "gateway_state_cache_flushes_total", { reason: "unseen_worker" }) >= 1,
    );
    await stranger.close();
    stranger = undefined;
    await waitFor(async () => await coherent(system) === 1, {
      what: "a complete view once it left",
      timeoutMs: 10_000,
    });
  } finally {
    await stranger?.close();
    await system.stop();
  }
});
