/**
 * Loopback unless secured (issue #16): the broker and the buses bind
 * loopback by default and refuse a plaintext endpoint beyond it (exit 2,
 * naming the key to set) unless `allow_plaintext_network`, which shows on
 * /healthz; each health port serves only its own metrics, and /metrics
 * beyond loopback needs the metrics_token.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { brokerConfig, busConfig, gatewayConfig } from "../config/components.ts";
import { ConfigError, loadConfig } from "../config/load.ts";
import { metricsAccess } from "../config/metrics_token.ts";
import { startBroker } from "../roles/broker.ts";
import { startBusComponent } from "../roles/bus.ts";
import { startGateway } from "../roles/gateway.ts";
import { isLocalEndpoint, isLoopback } from "../transport/loopback.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { freePort, spawnWatched, waitFor } from "./_helpers.ts";
import { bearer, SECRET, withSecuredSystem } from "./_auth.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TOKEN = "a-metrics-token-for-tests-32-chars-long";

/** Runs `main.ts` with `args` until it exits (killed after `timeoutMs`). */
async function runMain(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 20_000,
): Promise<{ code: number; stderr: string }> {
  const child = spawnWatched(
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", ...args],
      cwd: ROOT,
      env: { ...env, PLANTD_BROKER_LOG_LEVEL: "error", PLANTD_BUS_LOG_LEVEL: "error" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }),
  );
  try {
    await waitFor(() => child.exited(), {
      timeoutMs,
      intervalMs: 50,
      what: `main.ts ${args.join(" ")} to exit`,
    });
    const { code } = await child.status;
    return { code, stderr: child.stderr() };
  } finally {
    await child.stop("SIGKILL");
  }
}

/** The listening TCP sockets of this machine on `port`: their local addresses as hex. */
function listeners(port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  return ["/proc/net/tcp", "/proc/net/tcp6"].flatMap((file) =>
    Deno.readTextFileSync(file).split("\n").slice(1)
      .map((line) => line.trim().split(/\s+/))
      // local_address is ADDR:PORT in hex; state 0A is LISTEN.
      .filter((fields) => fields[1]?.endsWith(`:${hexPort}`) && fields[3] === "0A")
      .map((fields) => fields[1]!.split(":")[0]!)
  );
}

const LOOPBACK_HEX = new Set(["0100007F", "00000000000000000000000001000000"]);

Deno.test("isLoopback and isLocalEndpoint: only loopback, ipc and inproc are local", () => {
  for (const host of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"]) {
    assert.ok(isLoopback(host), host);
  }
  for (const host of ["0.0.0.0", "*", "::", "[::]", "10.0.0.1", "broker", "eth0", "lo0"]) {
    assert.ok(!isLoopback(host), host);
  }
  for (
    const endpoint of [
      "tcp://127.0.0.1:9797",
      "@tcp://127.0.0.1:*",
      "tcp://[::1]:1",
      "tcp://localhost:1",
      "ipc:///tmp/x",
      "inproc://x",
      ">tcp://10.0.0.1:1",
    ]
  ) {
    assert.ok(isLocalEndpoint(endpoint), endpoint);
  }
  for (
    const endpoint of [
      "tcp://*:9797",
      "@tcp://0.0.0.0:1",
      "tcp://[::]:1",
      "tcp://10.1.2.3:1",
      "tcp://eth0:1",
      "tcp://broker:1",
      "tcp://nonsense",
    ]
  ) {
    assert.ok(!isLocalEndpoint(endpoint), endpoint);
  }
});

Deno.test("main.ts broker on a non-loopback endpoint without CURVE exits 2 naming the key", async () => {
  const { code, stderr } = await runMain([
    "broker",
    "--endpoint",
    "tcp://0.0.0.0:0",
    "--health-port",
    "0",
    "--buses",
    "[]",
  ]);
  assert.equal(code, 2, stderr);
  assert.match(stderr, /endpoint tcp:\/\/0\.0\.0\.0:0 is reachable beyond loopback/);
  assert.match(stderr, /curve_secret_key \(PLANTD_BROKER_CURVE_SECRET_KEY\)/);
  assert.match(stderr, /PLANTD_BROKER_ALLOW_PLAINTEXT_NETWORK/);
});

Deno.test("a broker's bus or a bus component on a non-loopback endpoint without CURVE is a ConfigError", async () => {
  const buses = JSON.stringify([
    { name: "state", frontend: "tcp://127.0.0.1:*", backend: "tcp://*:0" },
  ]);
  await assert.rejects(
    startBusComponent(
      loadConfig(busConfig, { args: ["--health-port", "0", "--buses", buses], env: {} }),
    ),
    (error: Error) =>
      error instanceof ConfigError &&
      /buses\[0\]\.backend tcp:\/\/\*:0/.test(error.message) &&
      /PLANTD_BUS_CURVE_SECRET_KEY/.test(error.message),
  );
  await assert.rejects(
    startBroker(
      loadConfig(brokerConfig, {
        args: ["--endpoint", "tcp://127.0.0.1:*", "--health-port", "0", "--buses", buses],
        env: {},
      }),
    ),
    (error: Error) =>
      error instanceof ConfigError && /buses\[0\]\.backend/.test(error.message) &&
      /PLANTD_BROKER_CURVE_SECRET_KEY/.test(error.message),
  );
  await sharedPoller().idle();
});

Deno.test("allow_plaintext_network: the broker starts beyond loopback and /healthz shows it, still UP", async () => {
  const healthPort = freePort();
  const broker = await startBroker(loadConfig(brokerConfig, {
    args: [
      "--endpoint",
      "tcp://0.0.0.0:*",
      "--health-port",
      String(healthPort),
      "--allow-plaintext-network",
      "true",
      "--log-level",
      "error",
    ],
    env: {
      PLANTD_BROKER_BUSES: JSON.stringify([
        { name: "event", frontend: "tcp://127.0.0.1:*", backend: "tcp://*:*" },
      ]),
    },
  }));
  try {
    const response = await fetch(`http://127.0.0.1:${healthPort}/healthz`);
    assert.equal(response.status, 200);
    const health = await response.json();
    assert.equal(health.status, "UP");
    const check = health.checks.find((c: { name: string }) => c.name === "plaintext_network");
    assert.ok(check, JSON.stringify(health.checks));
    assert.equal(check.required, false);
    assert.match(check.output, /allow_plaintext_network/);
    assert.ok(check.output.includes(broker.server.endpoint), check.output);
    assert.ok(check.output.includes(broker.buses.set.buses[0]!.backend), check.output);
    assert.ok(!check.output.includes(broker.buses.set.buses[0]!.frontend), "loopback not listed");
  } finally {
    await broker.close();
    await sharedPoller().idle();
  }
});

Deno.test("the broker with its default (task dev) endpoint and buses listens on loopback only", async () => {
  const defaults = loadConfig(brokerConfig, { args: [], env: {} });
  // The default hosts with port 0, so as not to collide with a broker already on 9797.
  const anyPort = (endpoint: string) => endpoint.replace(/:\d+$/, ":0");
  const broker = await startBroker({
    ...defaults,
    endpoint: anyPort(defaults.endpoint),
    health_port: 0,
    log_level: "error",
    buses: defaults.buses.map((bus) => ({
      ...bus,
      frontend: anyPort(bus.frontend),
      backend: anyPort(bus.backend),
    })),
  });
  try {
    const bound = [
      broker.server.endpoint,
      ...broker.buses.set.buses.flatMap((bus) => [bus.frontend, bus.backend]),
    ];
    assert.equal(bound.length, 7);
    for (const endpoint of bound) {
      const port = Number(/:(\d+)$/.exec(endpoint)![1]);
      const addresses = listeners(port);
      assert.ok(addresses.length > 0, `${endpoint}: a listening socket on ${port}`);
      for (const address of addresses) {
        assert.ok(LOOPBACK_HEX.has(address), `${endpoint} listens on ${address}, not loopback`);
      }
    }
  } finally {
    await broker.close();
    await sharedPoller().idle();
  }
});

Deno.test("task dev: the broker's health port serves no gateway_ series; the gateway's /metrics has both", async () => {
  const dir = await Deno.makeTempDir();
  const brokerHealth = freePort();
  const gatewayPort = freePort();
  const random = (name: string) => ({
    name,
    frontend: "tcp://127.0.0.1:*",
    backend: "tcp://127.0.0.1:*",
  });
  const child = spawnWatched(
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", "dev", "--log-level", "error"],
      cwd: ROOT,
      env: {
        PLANTD_STATE_DB: `${dir}/state.db`,
        PLANTD_METRICS_DB: `${dir}/metrics.db`,
        PLANTD_BROKER_ENDPOINT: "tcp://127.0.0.1:*",
        PLANTD_BROKER_HEALTH_PORT: String(brokerHealth),
        PLANTD_BROKER_BUSES: JSON.stringify(["state", "event", "metric"].map(random)),
        PLANTD_GATEWAY_PORT: String(gatewayPort),
        PLANTD_GATEWAY_AUTH_DB: `${dir}/auth.db`,
      },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }),
  );
  try {
    const gateway = `http://127.0.0.1:${gatewayPort}`;
    await waitFor(async () => {
      if (child.exited()) throw new Error(`dev exited: ${child.stderr()}`);
      try {
        const response = await fetch(`${gateway}/metrics`);
        const body = await response.text();
        return response.status === 200 && /^gateway_/m.test(body);
      } catch {
        return false;
      }
    }, { timeoutMs: 30_000, intervalMs: 100, what: "dev's gateway /metrics" });
    const brokerMetrics = await (await fetch(`http://127.0.0.1:${brokerHealth}/metrics`)).text();
    assert.match(brokerMetrics, /^mdp_/m, "the broker's own series");
    assert.match(brokerMetrics, /^bus_/m, "its buses' series");
    assert.doesNotMatch(brokerMetrics, /^(# TYPE )?gateway_/m);
    assert.doesNotMatch(brokerMetrics, /^(# TYPE )?state_/m);
    const gatewayMetrics = await (await fetch(`${gateway}/metrics`)).text();
    assert.match(gatewayMetrics, /^mdp_/m, "dev's gateway serves the whole process");
    assert.match(gatewayMetrics, /^gateway_/m);
  } finally {
    await child.stop("SIGTERM");
    await child.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/metrics on a non-loopback health host: 403 without a metrics_token, 401 without the bearer; probes open", async () => {
  const start = async (args: string[]) => {
    const port = freePort();
    const bus = await startBusComponent(
      loadConfig(busConfig, {
        args: ["--health-port", String(port), "--buses", "[]", ...args],
        env: {},
      }),
      new Registry(),
    );
    return { bus, url: `http://127.0.0.1:${port}` };
  };
  const get = async (url: string, headers: Record<string, string> = {}) => {
    const response = await fetch(url, { headers });
    return { status: response.status, body: await response.text() };
  };
  const open = await start(["--health-host", "0.0.0.0"]);
  try {
    const refused = await get(`${open.url}/metrics`);
    assert.equal(refused.status, 403);
    assert.match(refused.body, /metrics_token \(PLANTD_BUS_METRICS_TOKEN\)/);
    for (const probe of ["/healthz", "/livez", "/readyz"]) {
      assert.equal((await get(`${open.url}${probe}`)).status, 200, probe);
    }
  } finally {
    await open.bus.close();
  }
  const guarded = await start(["--health-host", "0.0.0.0", "--metrics-token", TOKEN]);
  try {
    assert.equal((await get(`${guarded.url}/metrics`)).status, 401);
    const wrong = await get(`${guarded.url}/metrics`, bearer(TOKEN.replace("a", "b")));
    assert.equal(wrong.status, 401);
    const served = await get(`${guarded.url}/metrics`, bearer(TOKEN));
    assert.equal(served.status, 200);
    assert.match(served.body, /^process_cpu_user_seconds_total/m);
    assert.equal((await get(`${guarded.url}/healthz`)).status, 200);
  } finally {
    await guarded.bus.close();
  }
  // On loopback a configured token is required too; without one /metrics stays open there.
  const local = await start(["--metrics-token", TOKEN]);
  try {
    assert.equal((await get(`${local.url}/metrics`)).status, 401);
    assert.equal((await get(`${local.url}/metrics`, bearer(TOKEN))).status, 200);
  } finally {
    await local.bus.close();
  }
});

Deno.test("metrics_token_file is read and checked; metrics_token and _file together are refused", () => {
  const component = { name: "state", envPrefix: "PLANTD_STATE" };
  const files = (text: string) => () => text;
  assert.equal(
    metricsAccess(component, { metrics_token_file: "/run/t" }, files(`${TOKEN}\n`)).token,
    TOKEN,
  );
  assert.throws(
    () => metricsAccess(component, { metrics_token_file: "/run/t" }, files("short\n")),
    /metrics_token_file.*fewer than 32/,
  );
  assert.throws(
    () => metricsAccess(component, { metrics_token: TOKEN, metrics_token_file: "/run/t" }),
    /not both/,
  );
  assert.throws(
    () => loadConfig(gatewayConfig, { args: [], env: { PLANTD_GATEWAY_METRICS_TOKEN: "short" } }),
    /metrics_token needs at least 32 characters/,
  );
});

Deno.test("gateway: public_metrics beyond loopback refuses to start; its /metrics takes the metrics_token bearer", async () => {
  await assert.rejects(
    startGateway({
      ...loadConfig(gatewayConfig, { args: [], env: {} }),
      host: "0.0.0.0",
      port: 0,
      jwt_secret: SECRET,
      public_metrics: true,
    }),
    (error: Error) =>
      error instanceof ConfigError && /public_metrics/.test(error.message) &&
      /PLANTD_GATEWAY_METRICS_TOKEN/.test(error.message),
  );
  await withSecuredSystem(async ({ url }) => {
    const anonymous = await fetch(`${url}/metrics`);
    await anonymous.body?.cancel();
    assert.equal(anonymous.status, 401);
    const scraper = await fetch(`${url}/metrics`, { headers: bearer(TOKEN) });
    assert.equal(scraper.status, 200);
    assert.match(await scraper.text(), /^gateway_/m);
    const wrong = await fetch(`${url}/metrics`, { headers: bearer(TOKEN.replace("a", "b")) });
    await wrong.body?.cancel();
    assert.equal(wrong.status, 401);
  }, { gateway: { metrics_token: TOKEN } });
});
