import assert from "node:assert/strict";
import { brokerConfig, echoConfig, gatewayConfig } from "./components.ts";
import { ConfigError, loadConfig } from "./load.ts";

const files = (map: Record<string, string>) => (path: string) => {
  if (!(path in map)) throw new Deno.errors.NotFound(`No such file: ${path}`);
  return map[path]!;
};

Deno.test("loadConfig() gives defaults with no file, environment or flags", () => {
  const config = loadConfig(brokerConfig, { args: [], env: {} });
  assert.equal(config.endpoint, "tcp://127.0.0.1:9797");
  assert.equal(config.heartbeat_interval_ms, 2500);
  assert.equal(config.health_port, 8081);
  assert.equal(config.log_level, "info");
});

Deno.test("loadConfig() applies file < environment < flags", () => {
  const readTextFile = files({
    "b.yaml":
      "endpoint: tcp://*:1000\nlog_level: debug\nheartbeat_liveness: 5\nhealth_port: 9000\n",
  });
  const env = { PLANTD_BROKER_ENDPOINT: "tcp://*:2000", PLANTD_BROKER_HEALTH_PORT: "9001" };
  const config = loadConfig(brokerConfig, {
    args: ["--config", "b.yaml", "--health-port", "9002"],
    env,
    readTextFile,
  });
  assert.equal(config.endpoint, "tcp://*:2000"); // environment beats file
  assert.equal(config.health_port, 9002); // flag beats environment
  assert.equal(config.log_level, "debug"); // from the file
  assert.equal(config.heartbeat_liveness, 5);
});

Deno.test("loadConfig() finds the file through PLANTD_<COMPONENT>_CONFIG", () => {
  const config = loadConfig(echoConfig, {
    args: [],
    env: { PLANTD_MODULE_ECHO_CONFIG: "e.yaml" },
    readTextFile: files({ "e.yaml": "concurrency: 4\ndialect: mdp02\n" }),
  });
  assert.equal(config.concurrency, 4);
  assert.equal(config.dialect, "mdp02");
});

Deno.test("loadConfig() names the key and the source of a bad value", () => {
  assert.throws(
    () =>
      loadConfig(brokerConfig, { args: [], env: { PLANTD_BROKER_HEARTBEAT_INTERVAL_MS: "abc" } }),
    (e: Error) =>
      e instanceof ConfigError && e.message.includes("heartbeat_interval_ms") &&
      e.message.includes("PLANTD_BROKER_HEARTBEAT_INTERVAL_MS") && e.message.includes('"abc"'),
  );
  assert.throws(
    () => loadConfig(brokerConfig, { args: ["--log-level", "loud"], env: {} }),
    (e: Error) => e instanceof ConfigError && /log_level.*--log-level/.test(e.message),
  );
  assert.throws(
    () =>
      loadConfig(brokerConfig, {
        args: ["--config", "b.yaml"],
        env: {},
        readTextFile: files({ "b.yaml": "endpoint: http://nope\n" }),
      }),
    (e: Error) => e instanceof ConfigError && /endpoint.*file 'b.yaml'/.test(e.message),
  );
});

Deno.test("loadConfig() refuses unknown keys in every source", () => {
  assert.throws(
    () =>
      loadConfig(brokerConfig, {
        args: ["--config", "b.yaml"],
        env: {},
        readTextFile: files({ "b.yaml": "endpiont: tcp://*:1\n" }),
      }),
    (e: Error) => e instanceof ConfigError && e.message.includes("unknown key 'endpiont'"),
  );
  assert.throws(
    () => loadConfig(brokerConfig, { args: [], env: { PLANTD_BROKER_ENDPIONT: "x" } }),
    (e: Error) => e instanceof ConfigError && e.message.includes("PLANTD_BROKER_ENDPIONT"),
  );
  assert.throws(
    () => loadConfig(brokerConfig, { args: ["--endpiont", "x"], env: {} }),
    (e: Error) => e instanceof ConfigError && e.message.includes("endpiont"),
  );
});

Deno.test("loadConfig() fails when a named file is missing or not YAML, and not when none is named", () => {
  assert.throws(
    () =>
      loadConfig(brokerConfig, {
        args: ["--config", "missing.yaml"],
        env: {},
        readTextFile: files({}),
      }),
    (e: Error) => e instanceof ConfigError && e.message.includes("cannot read file 'missing.yaml'"),
  );
  assert.throws(
    () =>
      loadConfig(brokerConfig, {
        args: [],
        env: { PLANTD_BROKER_CONFIG: "bad.yaml" },
        readTextFile: files({ "bad.yaml": "a: [1,\n" }),
      }),
    (e: Error) => e instanceof ConfigError && e.message.includes("not valid YAML"),
  );
  assert.doesNotThrow(() =>
    loadConfig(brokerConfig, { args: [], env: {}, readTextFile: files({}) })
  );
});

Deno.test("a bad secret is reported without echoing its value", () => {
  assert.throws(
    () =>
      loadConfig(gatewayConfig, { args: [], env: { PLANTD_GATEWAY_JWT_SECRET: "short-secret" } }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /jwt_secret needs at least 32 characters \(value not shown/);
      assert.doesNotMatch(error.message, /short-secret/);
      return true;
    },
  );
});

Deno.test("loadConfig() reads the gateway's redis_url from PLANTD_REDIS_URL, below PLANTD_GATEWAY_REDIS_URL", () => {
  const load = (env: Record<string, string>, args: string[] = []) =>
    loadConfig(gatewayConfig, { args, env }).redis_url;
  assert.equal(load({}), "", "no Redis by default: in-process fallbacks");
  assert.equal(load({ PLANTD_REDIS_URL: "redis://a:6379" }), "redis://a:6379");
  assert.equal(
    load({ PLANTD_REDIS_URL: "redis://a:6379", PLANTD_GATEWAY_REDIS_URL: "redis://b:6379" }),
    "redis://b:6379",
  );
  assert.equal(load({ PLANTD_REDIS_URL: "redis://a:6379" }, ["--redis-url", ""]), "");
  assert.throws(
    () => load({ PLANTD_REDIS_URL: "http://nope" }),
    (error: Error) => error instanceof ConfigError && /PLANTD_REDIS_URL/.test(error.message),
  );
});

Deno.test("loadConfig() reads mdp_transport (ZMTP in TypeScript by default, libzmq on request)", () => {
  assert.equal(loadConfig(brokerConfig, { args: [], env: {} }).mdp_transport, "auto");
  assert.equal(
    loadConfig(gatewayConfig, { args: [], env: { PLANTD_GATEWAY_MDP_TRANSPORT: "libzmq" } })
      .mdp_transport,
    "libzmq",
  );
  assert.equal(
    loadConfig(echoConfig, { args: ["--mdp-transport", "libzmq"], env: {} }).mdp_transport,
    "libzmq",
  );
  assert.throws(
    () => loadConfig(brokerConfig, { args: [], env: { PLANTD_BROKER_MDP_TRANSPORT: "zmtp" } }),
    (e: Error) =>
      e instanceof ConfigError && e.message.includes("mdp_transport") &&
      e.message.includes("PLANTD_BROKER_MDP_TRANSPORT"),
  );
});
