import assert from "node:assert/strict";
import { brokerConfig, busConfig, DEFAULT_BUSES } from "./components.ts";
import { ConfigError, loadConfig } from "./load.ts";

Deno.test("bus config defaults to the three plantd buses on loopback", () => {
  const config = loadConfig(busConfig, { args: [], env: {} });
  assert.deepEqual(
    config.buses.map((b) => [b.name, b.frontend, b.backend, b.capture]),
    [
      ["state", "tcp://127.0.0.1:11000", "tcp://127.0.0.1:11001", undefined],
      ["event", "tcp://127.0.0.1:12000", "tcp://127.0.0.1:12001", undefined],
      ["metric", "tcp://127.0.0.1:13000", "tcp://127.0.0.1:13001", undefined],
    ],
  );
  assert.equal(config.health_port, 8083);
  assert.deepEqual(loadConfig(brokerConfig, { args: [], env: {} }).buses, DEFAULT_BUSES);
});

Deno.test("buses come from YAML with czmq prefixes, and from PLANTD_BUS_BUSES as JSON", () => {
  const yaml = `buses:
  - name: metric
    frontend: "@tcp://*:13000"
    backend: ">tcp://10.0.0.1:13001"
    capture: inproc://metric-capture
    send_hwm: 0
    topics: [org.plantd.Metric]
`;
  const fromFile = loadConfig(busConfig, {
    args: ["--config", "b.yaml"],
    env: {},
    readTextFile: () => yaml,
  });
  assert.deepEqual(fromFile.buses, [{
    name: "metric",
    frontend: "@tcp://*:13000",
    backend: ">tcp://10.0.0.1:13001",
    capture: "inproc://metric-capture",
    send_hwm: 0,
    receive_hwm: 1000,
    capture_hwm: 10_000,
    max_message_bytes: 16 * 1024 * 1024,
    max_subscription_bytes: 64 * 1024,
    topics: ["org.plantd.Metric"],
  }]);
  const fromEnv = loadConfig(busConfig, {
    args: [],
    env: { PLANTD_BUS_BUSES: '[{"name":"x","frontend":"tcp://*:1","backend":"tcp://*:2"}]' },
  });
  assert.equal(fromEnv.buses[0]!.name, "x");
  assert.deepEqual(loadConfig(brokerConfig, { args: ["--buses", "[]"], env: {} }).buses, []);
});

Deno.test("bus config errors name the key inside the list and the source", () => {
  const bad = (buses: unknown, pattern: RegExp) =>
    assert.throws(
      () => loadConfig(busConfig, { args: ["--buses", JSON.stringify(buses)], env: {} }),
      (e: Error) => e instanceof ConfigError && pattern.test(e.message),
    );
  bad([{ name: "x", frontend: "tcp://*:1", backend: "tcp:/2" }], /buses\.0\.backend.*--buses/);
  bad([{ name: "x", frontend: "tcp://*:1", backend: "tcp://*:2", hwm: 5 }], /buses\.0.*"hwm"/);
  bad(
    [{ name: "x", frontend: "tcp://*:1", backend: "tcp://*:2" }, {
      name: "x",
      frontend: "tcp://*:3",
      backend: "tcp://*:4",
    }],
    /buses\.1\.name.*duplicate bus 'x'/,
  );
  bad(
    [{ name: "x", frontend: "tcp://*:1", backend: "@tcp://*:1" }],
    /endpoint tcp:\/\/\*:1 used twice/,
  );
  bad([{ name: "x", frontend: "tcp://*:1", backend: "tcp://*:2", send_hwm: -1 }], /send_hwm/);
});
