/**
 * The deployment files against the code, without Docker: compose.yaml, the
 * Kubernetes manifests, Prometheus, Promtail and Grafana provisioning are
 * parsed and every environment variable, port, endpoint and health path is
 * checked against what the components really read and serve (the schemas of
 * config/components.ts, resolved with the real loader); every metric a
 * dashboard queries must be registered by the running code, and every SQL
 * query must run on the metrics schema in PostgreSQL. The Dockerfile's
 * command line is run as a subprocess and must answer /healthz, pass its own
 * HEALTHCHECK and stop on SIGTERM.
 */
import assert from "node:assert/strict";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { Registry } from "prom-client";
import * as components from "../config/components.ts";
import { type ComponentConfig, loadConfig } from "../config/load.ts";
import { keysInFile } from "../config/curve.ts";
import { publicKeyPem } from "../auth/call_credentials.ts";
import { tokenSettingsFrom } from "../auth/tokens.ts";
import { curvePublicKey } from "../transport/curve.ts";
import { metricsAccess } from "../config/metrics_token.ts";
import { readPolicyFile } from "../config/service_policy.ts";
import { healthUrl } from "../deploy/healthcheck.ts";
import { openPgWriter } from "../metrics/pg.ts";
import { startEcho } from "../roles/echo.ts";
import { ingesterMetrics } from "../metrics/ingester_metrics.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { isLocalEndpoint, isLoopback } from "../transport/loopback.ts";
import { freePort, spawnWatched, waitFor } from "./_helpers.ts";
import { freshDatabase } from "./_postgres.ts";
import { startSystem } from "./_system.ts";
import type { z } from "zod";

// deno-lint-ignore no-explicit-any
type Any = any;
type Component = ComponentConfig<z.ZodObject>;

const ROOT = new URL("..", import.meta.url).pathname;
const read = (path: string) => Deno.readTextFileSync(ROOT + path);

// ---------------------------------------------------------------------------
// What the code accepts and serves, derived from config/components.ts.

/** Every component configuration exported by config/components.ts, by name. */
const COMPONENTS: Map<string, Component> = new Map(
  (Object.values(components) as unknown[])
    .filter((value): value is Component =>
      typeof value === "object" && value !== null && "envPrefix" in value && "schema" in value
    )
    .map((component) => [component.name, component]),
);

/** The environment variables a component reads: one per schema key, plus _CONFIG. */
function envNames(component: Component): Set<string> {
  const keys = Object.keys(component.schema.shape);
  return new Set([
    `${component.envPrefix}_CONFIG`,
    ...keys.map((key) => `${component.envPrefix}_${key.toUpperCase()}`),
  ]);
}

/** The component that reads `name`, if any. */
function readerOf(name: string): Component | undefined {
  return [...COMPONENTS.values()].find((c) => envNames(c).has(name));
}

function componentNamed(name: string | undefined): Component {
  const component = COMPONENTS.get(name ?? "");
  assert.ok(component, `'${name}' is not a component (${[...COMPONENTS.keys()].join(", ")})`);
  return component;
}

/** Host and port of a ZeroMQ tcp:// endpoint. */
function tcp(endpoint: string): { host: string; port: number } {
  const match = /^[@>]?tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)$/.exec(endpoint);
  assert.ok(match, `not a tcp:// endpoint with a port: ${endpoint}`);
  return { host: match[1]!, port: Number(match[2]) };
}

const ANY_HOST = new Set(["*", "0.0.0.0", "::", "[::]"]);

/** What a configured component listens on, each with its host. */
interface Listening {
  /** port -> what it is */
  ports: Map<number, string>;
  health?: number;
  /** Bus name -> frontend/backend ports (components that run buses). */
  buses: Map<string, { frontend: number; backend: number }>;
  /** Endpoints it connects to: [what, endpoint] (a broker pair's list gives one each). */
  connects: [string, string][];
  serves: "health" | "gateway";
}

function listening(component: Component, config: Record<string, Any>): Listening {
  const result: Listening = {
    ports: new Map(),
    buses: new Map(),
    connects: [],
    serves: "health",
  };
  const bind = (host: string, port: number, what: string) => {
    assert.ok(
      ANY_HOST.has(host),
      `${component.name}: ${what} must listen on every interface, got ${host}`,
    );
    result.ports.set(port, what);
  };
  if (component.name === "gateway") {
    bind(config.host, config.port, "gateway");
    result.health = config.port;
    result.serves = "gateway";
  } else if (config.health_port) {
    bind(config.health_host, config.health_port, "health");
    result.health = config.health_port;
  }
  if (typeof config.endpoint === "string") {
    const { host, port } = tcp(config.endpoint);
    bind(host, port, "mdp");
  }
  if (Array.isArray(config.buses)) {
    for (const bus of config.buses) {
      const frontend = tcp(bus.frontend);
      const backend = tcp(bus.backend);
      bind(frontend.host, frontend.port, `${bus.name}-frontend`);
      bind(backend.host, backend.port, `${bus.name}-backend`);
      result.buses.set(bus.name, { frontend: frontend.port, backend: backend.port });
    }
  }
  if (config.ha) {
    // A broker of a pair: its state channel, and the peer's.
    const { host, port } = tcp(config.ha.state_bind);
    bind(host, port, "ha-state");
    result.connects.push(["ha-state", config.ha.peer_state_endpoint]);
  }
  if (config.broker_endpoint !== undefined) {
    for (const endpoint of components.endpointList(config.broker_endpoint)) {
      result.connects.push(["broker", endpoint]);
    }
  }
  if (typeof config.bus_endpoint === "string" && config.bus_endpoint !== "") {
    result.connects.push([
      component.name === "state" ? "state-frontend" : "metric-backend",
      config.bus_endpoint,
    ]);
  }
  if (config.buses && !Array.isArray(config.buses)) {
    for (const [bus, endpoint] of Object.entries(config.buses as Record<string, string>)) {
      result.connects.push([`${bus}-backend`, endpoint]);
    }
  }
  if (config.publish_buses) {
    for (const [bus, endpoint] of Object.entries(config.publish_buses as Record<string, string>)) {
      result.connects.push([`${bus}-frontend`, endpoint]);
    }
  }
  return result;
}

/**
 * Loopback unless secured, as shipped: a component binding ZeroMQ beyond
 * loopback has CURVE keys and an allow-list, never the plaintext opt-out; one
 * that connects to the broker or a bus does so with CURVE; /metrics beyond
 * loopback has a token and is never public.
 */
function checkSecured(where: string, component: Component, config: Record<string, Any>): void {
  const bound = [
    config.endpoint,
    ...(Array.isArray(config.buses)
      ? config.buses.flatMap((bus: Any) => [bus.frontend, bus.backend, bus.capture])
      : []),
  ].filter((endpoint): endpoint is string => typeof endpoint === "string");
  const beyond = bound.filter((endpoint) => !isLocalEndpoint(endpoint));
  if (beyond.length > 0) {
    assert.ok(
      config.curve_secret_key_file ?? config.curve_secret_key,
      `${where}: ${beyond.join(", ")} beyond loopback without curve_secret_key`,
    );
    assert.ok(
      config.curve_allowed_keys_file ?? config.curve_allowed_keys?.length,
      `${where}: CURVE without an allow-list lets any client in`,
    );
  }
  assert.notEqual(config.allow_plaintext_network, true, `${where}: allow_plaintext_network`);
  if (config.broker_endpoint !== undefined || typeof config.bus_endpoint === "string") {
    assert.ok(config.curve_server_key_file, `${where}: connects to the broker without CURVE`);
    assert.ok(config.curve_secret_key_file, `${where}: a CURVE key pair of its own`);
  }
  assert.notEqual(config.public_metrics, true, `${where}: public_metrics`);
  const host = component.name === "gateway" ? config.host : config.health_host;
  const serves = component.name === "gateway" || (component.name !== "echo" && config.health_port);
  if (serves && !isLoopback(host)) {
    assert.ok(
      config.metrics_token_file,
      `${where}: /metrics on ${host} without metrics_token_file`,
    );
  }
}

/**
 * Files an environment makes a component read: the `*_FILE` values, and the
 * PEM keys given as paths (`*_JWT_PUBLIC_KEY`, `*_JWT_PRIVATE_KEY` take either).
 */
function filesRead(env: Record<string, string>): string[] {
  return Object.entries(env).filter(([name, value]) =>
    name.endsWith("_FILE") || (/_JWT_(PUBLIC|PRIVATE)_KEY$/.test(name) && value.startsWith("/"))
  ).map(([, path]) => path);
}

/** Checks env names: PLANTD_* only, each read by `component` (derived from its schema). */
function checkEnvNames(where: string, component: Component, env: Record<string, string>): void {
  const allowed = envNames(component);
  for (const name of Object.keys(env)) {
    assert.ok(
      allowed.has(name),
      `${where}: ${name} is not read by the ${component.name} component (it reads ${
        [...allowed].join(", ")
      })`,
    );
  }
}

/** Resolves a component's configuration exactly as main.ts would; throws on any bad key. */
function resolve(where: string, component: Component, args: string[], env: Record<string, string>) {
  try {
    return loadConfig(component, { args, env }) as Record<string, Any>;
  } catch (error) {
    throw new Error(`${where}: ${(error as Error).message}`);
  }
}

/** The Dockerfile, its stages and instructions. */
function dockerfile() {
  const text = read("Dockerfile").replace(/\\\n/g, " ");
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const instructions = lines.map((line) => {
    const [keyword, ...rest] = line.split(/\s+/);
    return { keyword: keyword!.toUpperCase(), args: rest.join(" ") };
  });
  const jsonArray = (keyword: string): string[] => {
    const found = instructions.filter((i) => i.keyword === keyword).at(-1);
    assert.ok(found, `Dockerfile has no ${keyword}`);
    return JSON.parse(found.args);
  };
  const env: Record<string, string> = {};
  for (const i of instructions.filter((i) => i.keyword === "ENV")) {
    for (const [, name, value] of i.args.matchAll(/([A-Z0-9_]+)=("[^"]*"|\S+)/g)) {
      env[name!] = value!.replace(/^"|"$/g, "");
    }
  }
  const healthcheck = instructions.find((i) => i.keyword === "HEALTHCHECK");
  assert.ok(healthcheck, "Dockerfile has a HEALTHCHECK");
  const healthCmd = JSON.parse(healthcheck.args.slice(healthcheck.args.indexOf("CMD") + 3).trim());
  return {
    instructions,
    entrypoint: jsonArray("ENTRYPOINT"),
    cmd: jsonArray("CMD"),
    env,
    healthCmd: healthCmd as string[],
  };
}

/** The Deno version the project pins (README's `npx -y deno@X`). */
function pinnedDeno(): string {
  const match = /npx -y deno@(\d+\.\d+\.\d+)/.exec(read("README.md"));
  assert.ok(match, "README pins a Deno version");
  return match[1]!;
}

/** Compose's `${VAR:-default}` interpolation, with the defaults. */
function interpolate(text: string): string {
  return text.replace(/\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}/g, (_, _name, fallback) => fallback ?? "");
}

/** The databases compose's dbinit service creates (its `for db in …` loop). */
function dbinitDatabases(file: Any): string[] {
  const script = (file.services.dbinit?.command ?? []).join("\n") as string;
  const list = /for db in ([^;]+);/.exec(script)?.[1];
  assert.ok(list, "dbinit creates databases in a `for db in …;` loop");
  assert.match(script, /create database \$\$db/, "dbinit creates each database");
  return list.trim().split(/\s+/);
}

function compose(): Any {
  return parseYaml(interpolate(read("compose.yaml")), { merge: true });
}

/** Container ports published by compose `ports` entries ("8080:8080", "1-2:1-2", "ip:a:b"). */
function publishedPorts(entries: string[] = []): number[] {
  return entries.flatMap((entry) => {
    const container = String(entry).split(":").at(-1)!.replace(/\/(tcp|udp)$/, "");
    const [from, to = from] = container.split("-").map(Number);
    return Array.from({ length: to! - from! + 1 }, (_, i) => from! + i);
  });
}

/** The plantd services of compose.yaml with their resolved configuration. */
function plantdServices() {
  const file = compose();
  return Object.entries(file.services as Record<string, Any>)
    // The one-shot keygen service has its own entrypoint (checked on its own).
    .filter(([, service]) => service.build !== undefined && service.entrypoint === undefined)
    .map(([name, service]) => {
      const [componentName, ...args] = service.command as string[];
      const component = componentNamed(componentName);
      const env = Object.fromEntries(
        Object.entries(service.environment ?? {}).map(([k, v]) => [k, String(v)]),
      );
      const where = `compose service '${name}'`;
      checkEnvNames(where, component, env);
      const config = resolve(where, component, args, env);
      return { name, service, component, args, env, config, listens: listening(component, config) };
    });
}

// ---------------------------------------------------------------------------

Deno.test("Dockerfile: pinned Deno image, cached dependency layer, non-root, healthcheck, one entrypoint", () => {
  const { instructions, entrypoint, cmd, env, healthCmd } = dockerfile();
  const froms = instructions.filter((i) => i.keyword === "FROM");
  assert.ok(froms.length >= 2, "multi-stage");
  const stages = new Set<string>();
  for (const from of froms) {
    const [image, as, stage] = from.args.split(/\s+/);
    if (!stages.has(image!)) {
      assert.equal(image, `denoland/deno:${pinnedDeno()}`, `FROM ${from.args}`);
    }
    if (as?.toUpperCase() === "AS" && stage) stages.add(stage);
  }
  assert.equal(pinnedDeno(), "2.9.6");
  assert.equal(Deno.version.deno, pinnedDeno(), "tests run on the pinned Deno");
  // deno.json and deno.lock are copied and installed before the sources.
  const index = (match: (i: { keyword: string; args: string }) => boolean) =>
    instructions.findIndex(match);
  const copyLock = index((i) => i.keyword === "COPY" && /deno\.json deno\.lock/.test(i.args));
  const install = index((i) => i.keyword === "RUN" && /deno install --frozen/.test(i.args));
  const copyAll = index((i) => i.keyword === "COPY" && /^\.\s+\./.test(i.args));
  assert.ok(copyLock >= 0 && copyLock < install && install < copyAll, "dependency layer first");
  const finalStage = instructions.slice(instructions.findLastIndex((i) => i.keyword === "FROM"));
  const user = finalStage.filter((i) => i.keyword === "USER").at(-1);
  assert.ok(user && !/^(root|0)$/.test(user.args), "the final stage runs as a non-root user");
  assert.deepEqual(entrypoint, ["deno", "run", "-A", "main.ts"]);
  assert.deepEqual(cmd, ["dev"]);
  assert.deepEqual(healthCmd.slice(0, 2), ["deno", "run"]);
  assert.ok(Deno.statSync(ROOT + healthCmd.at(-1)!).isFile, "the healthcheck script exists");
  // ENV sets only variables some component reads.
  for (const name of Object.keys(env)) {
    assert.ok(readerOf(name), `Dockerfile ENV ${name} is read by no component`);
  }
});

/** .dockerignore patterns as a matcher of repository paths (and their parent folders). */
function dockerignore(): (path: string) => boolean {
  const patterns = read(".dockerignore").split("\n").map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  const regexes = patterns.map((pattern) =>
    new RegExp(
      "^" + pattern.replace(/\/$/, "").replace(/[.+^${}()|[\]\\]/g, "\\$&")
        .replace(/\*\*\//g, "%%").replace(/\*/g, "[^/]*").replace(/%%/g, "(.*/)?") +
        "$",
    )
  );
  return (path) => {
    const parts = path.split("/");
    return parts.some((_, i) => regexes.some((r) => r.test(parts.slice(0, i + 1).join("/"))));
  };
}

Deno.test(".dockerignore keeps every module the image runs, and the migrations", async () => {
  const ignored = dockerignore();
  const { healthCmd } = dockerfile();
  for (const entry of ["main.ts", "cli/main.ts", healthCmd.at(-1)!]) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", entry],
      cwd: ROOT,
      stdout: "piped",
      stderr: "null",
    }).output();
    const info = JSON.parse(new TextDecoder().decode(output.stdout));
    const local = (info.modules as { specifier: string }[])
      .map((m) => m.specifier)
      .filter((s) => s.startsWith("file://"))
      .map((s) => new URL(s).pathname.slice(ROOT.length));
    assert.ok(local.length > 3, `module graph of ${entry}`);
    for (const path of local) assert.ok(!ignored(path), `.dockerignore drops ${path} (${entry})`);
  }
  for (const dir of Deno.readDirSync(ROOT + "migrations")) {
    assert.ok(!ignored(`migrations/${dir.name}/0000_initial.sql`), `migrations/${dir.name}`);
  }
  assert.ok(ignored("node_modules/x") && ignored("cli/cli_test.ts") && ignored(".git/HEAD"));
});

Deno.test("compose.yaml: plantd services configured with variables the code reads", () => {
  const file = compose();
  const services = plantdServices();
  const byName = new Map(services.map((s) => [s.name, s]));
  assert.deepEqual(
    services.map((s) => s.name).sort(),
    [
      "alarms",
      "broker-a",
      "broker-b",
      "bus",
      "echo",
      "gateway-1",
      "gateway-2",
      "metrics",
      "state-1",
      "state-2",
    ],
  );
  for (const infra of ["tsdb", "redis", "loki", "promtail", "grafana", "prometheus"]) {
    const image = file.services[infra]?.image as string | undefined;
    assert.ok(image, `compose has ${infra}`);
    assert.match(image, /:[\w.-]+$/, `${infra} image is pinned`);
    assert.doesNotMatch(image, /:latest$/, `${infra} image is pinned`);
  }
  const { healthCmd } = dockerfile();
  const bus = services.find((s) => s.component.name === "bus")!;
  const tsdbEnv = file.services.tsdb.environment;
  const databases = dbinitDatabases(file);
  for (const s of services) {
    const where = `compose service '${s.name}'`;
    assert.equal(s.service.build, ".", `${where} builds the Dockerfile`);
    // Published ports are ports the component listens on.
    for (const port of publishedPorts(s.service.ports)) {
      assert.ok(
        s.listens.ports.has(port),
        `${where} publishes ${port}, which it does not listen on`,
      );
    }
    // The healthcheck is the image's, and finds a health server for this command line.
    assert.deepEqual(s.service.healthcheck?.test, ["CMD", ...healthCmd], `${where} healthcheck`);
    const url = healthUrl(["deno", "run", "-A", "main.ts", ...s.service.command], s.env);
    assert.ok(url, `${where} serves /healthz`);
    assert.equal(new URL(url).port, String(s.listens.health), `${where} health port`);
    // Endpoints it connects to name a service that listens there, for that purpose.
    for (const [what, endpoint] of s.listens.connects) {
      const { host, port } = tcp(endpoint);
      const peer = byName.get(host);
      assert.ok(peer, `${where} connects to ${endpoint}: no service '${host}'`);
      // The broker's MDP socket, or the bus side meant (state publishes, others subscribe).
      const expected = what === "broker" ? "mdp" : what;
      assert.equal(peer.listens.ports.get(port), expected, `${where}: ${what} at ${endpoint}`);
      // The brokers of a pair cannot wait for each other.
      if (what === "ha-state") continue;
      const dependsOn = s.service.depends_on?.[host];
      assert.equal(dependsOn?.condition, "service_healthy", `${where} waits for ${host}`);
    }
    // Database URLs point at the tsdb service with its user: the metrics
    // store's database, or one the dbinit service makes (which they wait for).
    for (const [name, value] of Object.entries(s.env)) {
      if (!/(DATABASE_URL|_DB)$/.test(name) || !/^postgres(ql)?:/.test(value)) continue;
      const url = new URL(value);
      assert.equal(url.hostname, "tsdb", name);
      assert.equal(url.port, "5432", name);
      assert.equal(url.username, tsdbEnv.POSTGRES_USER, name);
      assert.equal(decodeURIComponent(url.password), tsdbEnv.POSTGRES_PASSWORD, name);
      const database = url.pathname.slice(1);
      if (database === tsdbEnv.POSTGRES_DB) continue;
      assert.ok(databases.includes(database), `${where}: ${name}: dbinit makes no ${database}`);
      assert.equal(
        s.service.depends_on?.dbinit?.condition,
        "service_completed_successfully",
        `${where} waits for dbinit`,
      );
    }
    checkSecured(where, s.component, s.config);
    // Keys and tokens it reads from files are on a mounted volume.
    for (const path of filesRead(s.env)) {
      const mounted = (s.service.volumes ?? []).some((v: string) =>
        path.startsWith(String(v).split(":")[1] + "/")
      );
      assert.ok(mounted, `${where}: ${path} is on no mounted volume`);
    }
    // Files the component writes are on a volume.
    if (
      typeof s.config.db === "string" && s.component.name === "state" &&
      !/^postgres(ql)?:/.test(s.config.db)
    ) {
      const mounts = (s.service.volumes ?? []).map((v: string) => v.split(":"));
      const mount = mounts.find(([, target]: string[]) => s.config.db.startsWith(target + "/"));
      assert.ok(mount, `${where}: ${s.config.db} is on a volume`);
      assert.ok(file.volumes && mount[0] in file.volumes, `${where}: volume ${mount[0]} declared`);
    }
  }
  // The buses the others use are the bus process's; the pair runs none.
  assert.deepEqual([...bus.listens.buses.keys()].sort(), ["event", "metric", "state"]);
  for (const s of services.filter((s) => s.component.name === "broker")) {
    assert.equal(s.listens.buses.size, 0, `${s.name} runs no bus`);
  }
  for (const [, service] of Object.entries(file.services as Record<string, Any>)) {
    const dependsOn = service.depends_on ?? {};
    for (const dependency of Array.isArray(dependsOn) ? dependsOn : Object.keys(dependsOn)) {
      assert.ok(file.services[dependency], `depends_on ${dependency} exists`);
    }
    for (const volume of service.volumes ?? []) {
      const source = String(volume).split(":")[0]!;
      if (source.startsWith(".") || source.startsWith("/")) {
        if (source.startsWith("./")) assert.ok(Deno.statSync(ROOT + source.slice(2)), source);
      } else {
        assert.ok(source in (file.volumes ?? {}), `volume ${source} is declared`);
      }
    }
  }
});

/**
 * The HA topology (docs/ha.md "Deployments"), given each instance's name and
 * resolved configuration: a primary and a backup whose state channels point at
 * each other; every broker endpoint list names both; the state workers share
 * one database and the gateways one auth database and one Redis (PostgreSQL,
 * not files); no durable services with `ha`.
 */
function checkHaTopology(
  where: string,
  instances: { name: string; component: string; config: Record<string, Any> }[],
  /** The host a component reaches a broker instance at. */
  hostOf: (name: string) => string,
): void {
  const brokers = instances.filter((i) => i.component === "broker");
  assert.deepEqual(
    brokers.map((b) => b.config.ha?.role).sort(),
    ["backup", "primary"],
    `${where}: a primary and a backup`,
  );
  for (const broker of brokers) {
    const peer = brokers.find((b) => b !== broker)!;
    const target = tcp(broker.config.ha.peer_state_endpoint);
    const bind = tcp(peer.config.ha.state_bind);
    assert.equal(target.host, hostOf(peer.name), `${where}: ${broker.name}'s peer is ${peer.name}`);
    assert.equal(
      target.port,
      bind.port,
      `${where}: ${broker.name} reaches ${peer.name}'s state_bind`,
    );
    assert.deepEqual(
      broker.config.durable_services,
      [],
      `${where}: ${broker.name}: durable with ha`,
    );
  }
  const mdp = new Set(brokers.map((b) => `${hostOf(b.name)}:${tcp(b.config.endpoint).port}`));
  for (const i of instances.filter((i) => i.config.broker_endpoint !== undefined)) {
    const named = components.endpointList(i.config.broker_endpoint).map((e) => {
      const { host, port } = tcp(e);
      return `${host}:${port}`;
    });
    assert.deepEqual(new Set(named), mdp, `${where}: ${i.name} names both brokers`);
  }
  const shared = (component: string, key: string, postgres: boolean) => {
    const values = instances.filter((i) => i.component === component).map((i) => i.config[key]);
    assert.ok(values.length >= 2, `${where}: two ${component}s`);
    assert.equal(new Set(values).size, 1, `${where}: the ${component}s share one ${key}`);
    if (postgres) assert.match(values[0], /^postgres(ql)?:\/\//, `${where}: ${component} ${key}`);
    else assert.ok(values[0], `${where}: ${component} ${key} is set`);
  };
  shared("state", "db", true);
  shared("gateway", "auth_db", true);
  shared("gateway", "redis_url", false);
}

Deno.test("compose.yaml: the broker pair, two state workers and two gateways on one database and one Redis", () => {
  const services = plantdServices();
  checkHaTopology(
    "compose",
    services.map((s) => ({ name: s.name, component: s.component.name, config: s.config })),
    (name) => name,
  );
  const file = compose();
  const redis = new URL(services.find((s) => s.name === "gateway-1")!.config.redis_url);
  assert.ok(file.services[redis.hostname], `Redis at ${redis.hostname} is a service`);
  // Each gateway on its own host port.
  const published = services.filter((s) => s.component.name === "gateway")
    .flatMap((s) => (s.service.ports as string[]).map((p) => p.split(":").slice(0, 2).join(":")));
  assert.deepEqual(published.sort(), ["127.0.0.1:8080", "127.0.0.1:8081"]);
});

Deno.test("compose.yaml: nothing published beyond the host, ZeroMQ not at all; keygen makes every key read, each secret seen by its owner only", async () => {
  const file = compose();
  const raw = read("compose.yaml");
  const services = plantdServices();
  for (const [name, service] of Object.entries(file.services as Record<string, Any>)) {
    for (const entry of service.ports ?? []) {
      assert.match(String(entry), /^127\.0\.0\.1:/, `${name} publishes ${entry} beyond the host`);
    }
  }
  for (const s of services) {
    for (const port of publishedPorts(s.service.ports)) {
      const what = s.listens.ports.get(port)!;
      assert.ok(what === "gateway" || what === "health", `${s.name} publishes ZeroMQ ${what}`);
    }
  }
  // Grafana's admin password must be given: no fallback.
  assert.match(raw, /GF_SECURITY_ADMIN_PASSWORD: "\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}"/);
  // The keygen service makes each file the components read, before they start:
  // run its script with each volume in a temporary directory and look.
  const keygen = file.services.keygen;
  assert.ok(keygen, "compose has a keygen service");
  const script = keygen.command.join("\n") as string;
  const dir = await Deno.makeTempDir();
  const volumeOf = new Map<string, string>(); // keygen's mount path -> volume name
  try {
    let shell = script.replaceAll("$$", "$").replaceAll("/app/main.ts", `${ROOT}main.ts`)
      .replace(/chown -R \S+/, "true");
    // Each volume keygen mounts at PATH lives at DIR/PATH; the script's paths move with them.
    const pathOf = new Map<string, string>(); // volume name -> keygen's mount path
    const roots = new Set<string>();
    for (const [volume, path] of (keygen.volumes as string[]).map((v) => v.split(":"))) {
      volumeOf.set(path!, volume!);
      pathOf.set(volume!, path!);
      roots.add(path!.split("/")[1]!);
      await Deno.mkdir(`${dir}${path}`, { recursive: true });
    }
    for (const root of roots) {
      shell = shell.replace(new RegExp(`(?<![\\w.])/${root}\\b`, "g"), `${dir}/${root}`);
    }
    const run = await new Deno.Command("sh", { args: ["-ec", shell] }).output();
    assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
    /** The file a service sees at `path`, through its own volume mounts (read-only). */
    const seen = (s: { name: string; service: Any }, path: string): string | undefined => {
      for (const entry of s.service.volumes as string[]) {
        const [volume, target, mode] = entry.split(":");
        if (!path.startsWith(target + "/") || !pathOf.has(volume!)) continue;
        assert.equal(mode, "ro", `${s.name} mounts ${volume} read-only`);
        return `${dir}${pathOf.get(volume!)}/${path.slice(target!.length + 1)}`;
      }
      return undefined;
    };
    const broker = services.find((s) => s.component.name === "broker")!;
    const allowed = keysInFile(
      "allowed",
      Deno.readTextFileSync(seen(broker, broker.env.PLANTD_BROKER_CURVE_ALLOWED_KEYS_FILE!)!),
    );
    const brokerSecret = keysInFile(
      "broker",
      Deno.readTextFileSync(seen(broker, broker.env.PLANTD_BROKER_CURVE_SECRET_KEY_FILE!)!),
    )[0]!;
    /** The public key of the CURVE key pair a service holds. */
    const publicKeyOf = (s: (typeof services)[number]) =>
      curvePublicKey(
        keysInFile(
          s.name,
          Deno.readTextFileSync(
            seen(s, s.env[`${s.component.envPrefix}_CURVE_SECRET_KEY_FILE`]!)!,
          ),
        )[0]!,
      );
    const serverKey = (s: (typeof services)[number], variable: string) =>
      keysInFile("server", Deno.readTextFileSync(seen(s, s.env[variable]!)!))[0];
    const brokers = new Set(
      services.filter((s) => s.component.name === "broker").map((s) => s.name),
    );
    const bus = services.find((s) => s.component.name === "bus")!;
    assert.deepEqual(
      keysInFile(
        "bus allowed",
        Deno.readTextFileSync(seen(bus, bus.env.PLANTD_BUS_CURVE_ALLOWED_KEYS_FILE!)!),
      ),
      allowed,
      "the buses admit the keys the brokers admit",
    );
    for (const s of services) {
      const prefix = s.component.envPrefix;
      for (const path of filesRead(s.env)) {
        const local = seen(s, path);
        assert.ok(
          local !== undefined && Deno.statSync(local).isFile,
          `${s.name}: keygen makes no ${path} it can see`,
        );
      }
      if (brokers.has(s.name)) {
        // Both brokers of the pair hold one key pair (docs/ha.md).
        assert.equal(publicKeyOf(s), curvePublicKey(brokerSecret), `${s.name}: the pair's key`);
        continue;
      }
      if (s === bus) continue;
      assert.ok(
        allowed.includes(publicKeyOf(s)),
        `${s.name}: its public key is on the broker's allow-list`,
      );
      const hosts = new Set(s.listens.connects.map(([, endpoint]) => tcp(endpoint).host));
      if ([...hosts].some((host) => brokers.has(host))) {
        assert.equal(
          serverKey(s, `${prefix}_CURVE_SERVER_KEY_FILE`),
          curvePublicKey(brokerSecret),
          `${s.name}: the broker's public key`,
        );
      }
      if (hosts.has(bus.name)) {
        // The broker's server key serves the buses too unless bus_curve_server_key is set.
        const variable = `${prefix}_BUS_CURVE_SERVER_KEY_FILE` in s.env
          ? `${prefix}_BUS_CURVE_SERVER_KEY_FILE`
          : `${prefix}_CURVE_SERVER_KEY_FILE`;
        assert.equal(serverKey(s, variable), publicKeyOf(bus), `${s.name}: the bus's public key`);
      }
      for (const host of hosts) {
        if (!brokers.has(host) && host !== bus.name) continue;
        assert.equal(
          s.service.depends_on?.[host]?.condition,
          "service_healthy",
          `${s.name} starts after ${host} (after keygen)`,
        );
      }
    }
    // No container holds another component's secrets: each secret volume is
    // mounted (besides keygen) by replicas of one component only.
    for (const volume of [...volumeOf.values()].filter((v) => v.endsWith("-secret"))) {
      const users = services.filter((s) =>
        (s.service.volumes ?? []).some((v: string) => v.startsWith(`${volume}:`))
      );
      const others = Object.entries(file.services as Record<string, Any>).filter((
        [name, service],
      ) =>
        name !== "keygen" && !users.some((s) => s.name === name) &&
        (service.volumes ?? []).some((v: string) => v.startsWith(`${volume}:`))
      );
      assert.equal(others.length, 0, `${volume} is mounted by ${others.map(([n]) => n)}`);
      const owners = new Set(users.map((s) => s.component.name));
      assert.equal(owners.size, 1, `${volume} is mounted by ${users.map((s) => s.name)}`);
    }
    // The state worker verifies the gateway's tokens and cannot sign them.
    const state = services.find((s) => s.component.name === "state")!;
    const gateway = services.find((s) => s.component.name === "gateway")!;
    assert.equal(state.env.PLANTD_STATE_JWT_SECRET, undefined, "no shared JWT secret");
    assert.equal(state.env.PLANTD_STATE_JWT_PRIVATE_KEY, undefined);
    const publicPem = Deno.readTextFileSync(seen(state, state.env.PLANTD_STATE_JWT_PUBLIC_KEY!)!);
    const privatePem = Deno.readTextFileSync(
      seen(gateway, gateway.env.PLANTD_GATEWAY_JWT_PRIVATE_KEY!)!,
    );
    assert.equal(
      publicKeyPem(privatePem),
      publicPem,
      "the state worker has the gateway key's public half",
    );
    assert.equal(
      Deno.readTextFileSync(seen(state, state.env.PLANTD_STATE_STATE_BUS_SECRET_FILE!)!),
      Deno.readTextFileSync(seen(gateway, gateway.env.PLANTD_GATEWAY_STATE_BUS_SECRET_FILE!)!),
      "state and gateway share the state bus key",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const broker = services.find((s) => s.component.name === "broker")!;
  assert.equal(broker.service.depends_on?.keygen?.condition, "service_completed_successfully");
  // Prometheus sends the metrics token the components check, from the same file.
  const tokenFile = /> (\/\S+metrics-token)/.exec(script)?.[1];
  const [tokenVolume, tokenDir] = (keygen.volumes as string[]).map((v) => v.split(":"))
    .find(([, path]) => tokenFile?.startsWith(path + "/")) ?? [];
  assert.ok(tokenFile?.startsWith(tokenDir + "/"), "keygen writes the metrics token");
  assert.ok(
    (file.services.prometheus.volumes as string[]).includes(`${tokenVolume}:${tokenDir}:ro`),
    "Prometheus mounts the metrics token",
  );
  assert.equal(
    file.services.prometheus.depends_on?.keygen?.condition,
    "service_completed_successfully",
  );
  const prometheus = parseYaml(read("deploy/prometheus/prometheus.yml"));
  for (const job of prometheus.scrape_configs as Any[]) {
    assert.equal(job.authorization?.type, "Bearer", `${job.job_name} authorization`);
    assert.equal(job.authorization?.credentials_file, tokenFile, `${job.job_name} token file`);
  }
  for (const s of services.filter((s) => s.component.name !== "echo")) {
    assert.equal(s.env[`${s.component.envPrefix}_METRICS_TOKEN_FILE`], tokenFile, s.name);
  }
});

Deno.test("compose.yaml: keygen's service policy grants the state, echo and alarms keys their services", async () => {
  // Run the policy lines of the keygen script on keys made the same way, and
  // read the result as the broker would: a typo in the shell would stop the broker.
  const script = compose().services.keygen.command.join("\n") as string;
  const lines = script.split("\n");
  const start = lines.findIndex((line) => line.trimStart().startsWith("printf"));
  assert.ok(start >= 0, "keygen writes a service policy with printf");
  let shell = "";
  for (let i = start; i < lines.length; i++) {
    shell += lines[i]!.trim() + "\n";
    if (!lines[i]!.trimEnd().endsWith("\\")) break;
  }
  const dir = await Deno.makeTempDir();
  try {
    for (const name of ["state", "echo", "alarms"]) {
      const made = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${ROOT}main.ts`, "keygen", "--out", `${dir}/${name}`],
        stdout: "null",
      }).output();
      assert.equal(made.code, 0);
    }
    const run = await new Deno.Command("sh", {
      args: ["-ec", shell.replaceAll("$$", "$")],
      cwd: dir,
    }).output();
    assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
    const grants = readPolicyFile(`${dir}/service-policy.yaml`, Deno.readTextFileSync);
    const publicKey = (name: string) =>
      keysInFile(name, Deno.readTextFileSync(`${dir}/${name}.pub`))[0];
    assert.deepEqual(grants, [
      { key: publicKey("state"), services: ["org.plantd.State"] },
      { key: publicKey("echo"), services: ["org.plantd.module.Echo"] },
      { key: publicKey("alarms"), services: ["org.plantd.Alarms"] },
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Prometheus scrapes every component's /metrics at its real port", async () => {
  const services = plantdServices();
  const prometheus = parseYaml(read("deploy/prometheus/prometheus.yml"));
  const targets = new Map<string, string>();
  for (const job of prometheus.scrape_configs as Any[]) {
    assert.equal(job.metrics_path ?? "/metrics", "/metrics");
    for (const target of job.static_configs.flatMap((c: Any) => c.targets)) {
      targets.set(target, job.job_name);
    }
  }
  // The echo worker's health server serves no /metrics: it is the only one not scraped.
  const port = (() => {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const p = (l.addr as Deno.NetAddr).port;
    l.close();
    return p;
  })();
  const echo = startEcho({
    ...loadConfig(components.echoConfig, { args: [], env: {} }),
    broker_endpoint: "tcp://127.0.0.1:1",
    health_port: port,
  });
  try {
    assert.equal(
      (await (await fetch(`http://127.0.0.1:${port}/livez`)).text()).includes("UP"),
      true,
    );
    const metrics = await fetch(`http://127.0.0.1:${port}/metrics`);
    await metrics.body?.cancel();
    assert.equal(metrics.status, 404);
  } finally {
    await echo.close();
    await sharedPoller().idle();
  }
  const expected = services.filter((s) => s.component.name !== "echo")
    .map((s) => `${s.name}:${s.listens.health}`).sort();
  assert.deepEqual([...targets.keys()].sort(), expected);
  // One job per component (the dashboards select on it); the bus process's metrics were the broker's.
  const byName = new Map(services.map((s) => [s.name, s.component.name]));
  for (const [target, job] of targets) {
    const component = byName.get(target.split(":")[0]!)!;
    assert.equal(job, `plantd-${component === "bus" ? "broker" : component}`, target);
  }
});

// ---------------------------------------------------------------------------
// Kubernetes

function manifests(): Any[] {
  const docs: Any[] = [];
  for (const entry of Deno.readDirSync(ROOT + "deploy/k8s")) {
    if (!entry.name.endsWith(".yaml")) continue;
    for (const doc of parseAllDocuments(read(`deploy/k8s/${entry.name}`))) {
      assert.equal(doc.errors.length, 0, `${entry.name}: ${doc.errors.join("; ")}`);
      const value = doc.toJS();
      if (value) docs.push({ ...value, __file: entry.name });
    }
  }
  return docs;
}

Deno.test("Kubernetes: Deployments configured with variables the code reads, probes on /livez and /readyz", async () => {
  const docs = manifests();
  const kustomization = docs.find((d) => d.kind === "Kustomization");
  const files = new Set(docs.map((d) => d.__file));
  files.delete("kustomization.yaml");
  assert.deepEqual(new Set(kustomization.resources), files, "kustomization lists every manifest");
  const configMaps = new Map(
    docs.filter((d) => d.kind === "ConfigMap").map((d) => [d.metadata.name, d.data]),
  );
  const secrets = new Map(
    docs.filter((d) => d.kind === "Secret").map((d) => [d.metadata.name, d.stringData ?? {}]),
  );
  // No JWT secret is shared: the gateway signs with an Ed25519 key, the state
  // worker verifies with its public half (both from plantd-curve). The
  // committed placeholders are refused at start rather than run with a published key.
  assert.equal(secrets.get("plantd-auth"), undefined, "no shared JWT secret");
  const config = configMaps.get("plantd-config") as Record<string, string>;
  assert.equal(config.PLANTD_STATE_JWT_SECRET, undefined);
  assert.equal(config.PLANTD_STATE_JWT_PRIVATE_KEY, undefined);
  assert.equal(config.PLANTD_GATEWAY_JWT_SECRET, undefined);
  const placeholders = secrets.get("plantd-curve") as Record<string, string>;
  // Mounted as files, as the Deployments do.
  const mounted = await Deno.makeTempDir();
  try {
    for (const key of ["jwt_private_key", "jwt_public_key"] as const) {
      const file = `${mounted}/${key}`;
      await Deno.writeTextFile(
        file,
        placeholders[key === "jwt_private_key" ? "gateway-jwt.pem" : "gateway-jwt.pub.pem"]!,
      );
      await assert.rejects(
        tokenSettingsFrom({
          jwt_algorithm: "EdDSA",
          jwt_issuer: "plantd",
          jwt_audience: "plantd",
          [key]: file,
        }),
        /is not a PEM/,
        key,
      );
    }
  } finally {
    await Deno.remove(mounted, { recursive: true });
  }
  // The committed CURVE keys and metrics token are placeholders too: refused.
  const curve = secrets.get("plantd-curve") as Record<string, string>;
  assert.ok(curve, "a plantd-curve Secret");
  for (const [key, value] of Object.entries(curve)) {
    assert.throws(() => keysInFile(key, value), /not a CURVE key/, `plantd-curve ${key}`);
  }
  // The state bus key placeholder is too short to be one.
  assert.ok(curve["state-bus-secret"]!.length < 32, "state-bus-secret placeholder refused");
  const token = (secrets.get("plantd-metrics-token") as Record<string, string>)["metrics-token"]!;
  assert.throws(
    () => metricsAccess(components.stateConfig, { metrics_token_file: "t" }, () => token),
    /fewer than 32/,
  );
  const deployments = docs.filter((d) => d.kind === "Deployment");
  // Secrets given as variables hold variables some component reads; the others are files.
  const envSources = new Set(
    deployments.flatMap((d) =>
      d.spec.template.spec.containers.flatMap((c: Any) =>
        (c.envFrom ?? []).map((from: Any) => from.secretRef?.name ?? from.configMapRef?.name)
          .filter(Boolean)
      )
    ),
  );
  for (const [name, data] of [...configMaps, ...secrets]) {
    if (!envSources.has(name)) continue;
    for (const key of Object.keys(data)) {
      assert.ok(readerOf(key), `${name}: ${key} is read by no component`);
    }
  }
  const services = docs.filter((d) => d.kind === "Service");
  const pvcs = new Set(
    docs.filter((d) => d.kind === "PersistentVolumeClaim").map((d) => d.metadata.name),
  );
  assert.deepEqual(
    deployments.map((d) => d.spec.template.spec.containers[0].args[0]).sort(),
    ["alarms", "broker", "broker", "bus", "echo", "gateway", "metrics", "state"],
  );
  const resolved = new Map<string, { listens: Listening; ports: Map<string | number, number> }>();
  for (const deployment of deployments) {
    const where = `Deployment ${deployment.metadata.name}`;
    const pod = deployment.spec.template;
    assert.deepEqual(
      deployment.spec.selector.matchLabels,
      Object.fromEntries(
        Object.entries(pod.metadata.labels).filter(([k]) =>
          k in deployment.spec.selector.matchLabels
        ),
      ),
    );
    assert.equal(pod.spec.securityContext?.runAsNonRoot, true, `${where} runs as non-root`);
    const [container, ...others] = pod.spec.containers;
    assert.equal(others.length, 0);
    assert.ok(kustomization.images.some((i: Any) => i.name === container.image), `${where} image`);
    const [componentName, ...args] = container.args;
    const component = componentNamed(componentName);
    const env: Record<string, string> = {};
    for (const from of container.envFrom ?? []) {
      const data = from.configMapRef
        ? configMaps.get(from.configMapRef.name)
        : secrets.get(from.secretRef?.name);
      assert.ok(data, `${where}: envFrom ${JSON.stringify(from)} exists`);
      Object.assign(env, data);
    }
    for (const { name, value } of container.env ?? []) env[name] = String(value);
    const own = Object.fromEntries(
      Object.entries(env).filter(([k]) => k.startsWith(component.envPrefix + "_")),
    );
    checkEnvNames(where, component, own);
    const config = resolve(where, component, args, env);
    const listens = listening(component, config);
    const ports = new Map<string | number, number>();
    for (const port of container.ports) {
      ports.set(port.name, port.containerPort);
      ports.set(port.containerPort, port.containerPort);
      assert.ok(
        listens.ports.has(port.containerPort),
        `${where}: containerPort ${port.containerPort} is not listened on`,
      );
    }
    for (const port of listens.ports.keys()) {
      assert.ok(ports.has(port), `${where}: ${port} not declared`);
    }
    for (
      const [probe, path] of [["livenessProbe", "/livez"], ["readinessProbe", "/readyz"]] as const
    ) {
      const get = container[probe]?.httpGet;
      assert.equal(get?.path, path, `${where} ${probe}`);
      assert.equal(ports.get(get.port), listens.health, `${where} ${probe} port`);
    }
    // Scraped where /metrics is served: every health server but the echo worker's.
    const annotations = pod.metadata.annotations ?? {};
    if (component.name === "echo") {
      assert.equal(annotations["prometheus.io/scrape"], "false", where);
      assert.equal(annotations["prometheus.io/port"], undefined, `${where}: no scrape port`);
    } else {
      assert.equal(annotations["prometheus.io/scrape"], "true", where);
      assert.equal(
        Number(annotations["prometheus.io/port"]),
        listens.health,
        `${where} scrape port`,
      );
      assert.equal(annotations["prometheus.io/path"], "/metrics", `${where} scrape path`);
    }
    /** Files each mount shows: mount path + file -> the Secret key behind it. */
    const files = new Map<string, string>();
    for (const mount of container.volumeMounts ?? []) {
      const volume = pod.spec.volumes.find((v: Any) => v.name === mount.name);
      if (volume?.secret) {
        const data = secrets.get(volume.secret.secretName);
        assert.ok(data, `${where}: ${mount.name}: no Secret ${volume.secret.secretName}`);
        assert.equal(mount.readOnly, true, `${where}: ${mount.name} read-only`);
        const items = volume.secret.items ??
          Object.keys(data).map((key) => ({ key, path: key }));
        for (const item of items) {
          assert.ok(
            item.key in data,
            `${where}: Secret ${volume.secret.secretName} has ${item.key}`,
          );
          files.set(`${mount.mountPath}/${item.path}`, item.key);
        }
        continue;
      }
      assert.ok(
        pvcs.has(volume?.persistentVolumeClaim?.claimName),
        `${where}: ${mount.name} claim`,
      );
    }
    for (const path of filesRead(own)) {
      assert.ok(files.has(path), `${where}: ${path} is not mounted`);
    }
    checkSecured(where, component, config);
    if (component.name === "state" && !/^postgres(ql)?:/.test(config.db)) {
      const mounted = (container.volumeMounts ?? []).some((m: Any) =>
        config.db.startsWith(m.mountPath + "/")
      );
      assert.ok(mounted, `${where}: ${config.db} is on a volume`);
    }
    resolved.set(deployment.metadata.name, { listens, ports });
  }
  // Services select a Deployment and target its ports; endpoints name Services.
  const servicePorts = new Map<string, Map<number, number>>();
  for (const service of services) {
    const where = `Service ${service.metadata.name}`;
    const selects = (d: Any) =>
      Object.entries(service.spec.selector).every(([k, v]) =>
        d.spec.template.metadata.labels[k] === v
      );
    // PostgreSQL and Redis (StatefulSets) are checked in the HA test.
    if (docs.some((d) => d.kind === "StatefulSet" && selects(d))) continue;
    const target = deployments.filter(selects);
    assert.equal(target.length, 1, `${where} selects one Deployment`);
    const { ports } = resolved.get(target[0].metadata.name)!;
    const map = new Map<number, number>();
    for (const port of service.spec.ports) {
      const containerPort = ports.get(port.targetPort ?? port.port);
      assert.ok(containerPort, `${where}: targetPort ${port.targetPort} is a containerPort`);
      map.set(port.port, containerPort);
    }
    servicePorts.set(service.metadata.name, map);
  }
  for (const [name, { listens }] of resolved) {
    for (const [what, endpoint] of listens.connects) {
      const { host, port } = tcp(endpoint);
      const ports = servicePorts.get(host);
      assert.ok(ports, `${name} connects to ${endpoint}: no Service '${host}'`);
      const containerPort = ports.get(port);
      assert.ok(containerPort, `${name}: Service ${host} has no port ${port}`);
      const peer = [...resolved.values()].find((r) =>
        r.listens.ports.get(containerPort) !== undefined
      )!;
      const expected = what === "broker" ? "mdp" : what;
      assert.equal(peer.listens.ports.get(containerPort), expected, `${name}: ${what} ${endpoint}`);
    }
  }
});

/** A Deployment's or StatefulSet's container with the environment it gets (ConfigMaps, Secrets, env). */
function podEnv(docs: Any[], workload: Any): Record<string, string> {
  const container = workload.spec.template.spec.containers[0];
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const source = docs.find((d) =>
      (from.configMapRef && d.kind === "ConfigMap" && d.metadata.name === from.configMapRef.name) ||
      (from.secretRef && d.kind === "Secret" && d.metadata.name === from.secretRef.name)
    );
    Object.assign(env, source?.data ?? source?.stringData ?? {});
  }
  for (const { name, value } of container.env ?? []) if (value !== undefined) env[name] = value;
  return env;
}

Deno.test("Kubernetes: only plantd's pods reach the brokers, the buses, PostgreSQL and Redis; none leaves the cluster", () => {
  const docs = manifests();
  const workloads = docs.filter((d) => d.kind === "Deployment" || d.kind === "StatefulSet");
  const deployments = docs.filter((d) => d.kind === "Deployment");
  const policies = docs.filter((d) => d.kind === "NetworkPolicy");
  const selects = (selector: Any, pod: Any) =>
    Object.entries(selector.matchLabels ?? {}).every(([k, v]) => pod.metadata.labels[k] === v);
  /** What each workload listens on beyond its health port, and who connects to it. */
  const guarded: { workload: Any; ports: number[]; clients: Any[] }[] = [];
  const listenersOf = new Map<Any, Listening>();
  for (const d of deployments) {
    const [name, ...args] = d.spec.template.spec.containers[0].args;
    const component = componentNamed(name);
    listenersOf.set(
      d,
      listening(component, resolve(d.metadata.name, component, args, podEnv(docs, d))),
    );
  }
  const serviceOf = (host: string) =>
    docs.find((d) => d.kind === "Service" && d.metadata.name === host);
  for (const workload of workloads) {
    const listens = listenersOf.get(workload);
    const ports = listens
      ? [...listens.ports].filter(([, what]) => what !== "health" && what !== "gateway")
        .map(([port]) => port)
      : workload.spec.template.spec.containers[0].ports.map((p: Any) => p.containerPort);
    if (ports.length === 0) continue;
    // Who connects: Deployments with an endpoint or URL naming a Service that selects it.
    const clients = deployments.filter((d) => {
      const hosts = [
        ...listenersOf.get(d)!.connects.map(([, endpoint]) => tcp(endpoint).host),
        // Its own variables only: every pod gets the whole ConfigMap.
        ...Object.entries(podEnv(docs, d)).filter(([k, v]) =>
          k.startsWith(
            componentNamed(d.spec.template.spec.containers[0].args[0]).envPrefix + "_",
          ) &&
          /^(postgres(ql)?|rediss?):\/\//.test(v)
        ).map(([, v]) => new URL(v).hostname),
      ];
      return hosts.some((host) => {
        const service = serviceOf(host);
        return service && selects({ matchLabels: service.spec.selector }, workload.spec.template);
      });
    });
    guarded.push({ workload, ports, clients });
  }
  assert.deepEqual(
    guarded.map((g) => g.workload.metadata.name).sort(),
    ["plantd-broker-a", "plantd-broker-b", "plantd-bus", "plantd-redis", "plantd-tsdb"],
  );
  for (const { workload, ports, clients } of guarded) {
    const where = workload.metadata.name;
    const pod = workload.spec.template;
    const mine = policies.filter((p) => selects(p.spec.podSelector, pod));
    assert.equal(mine.length, 1, `${where}: one NetworkPolicy selects it`);
    const [policy] = mine;
    assert.ok(policy.spec.policyTypes.includes("Ingress"), `${where}: Ingress`);
    const container = pod.spec.containers[0];
    const portNumber = (port: Any) =>
      typeof port.port === "number"
        ? port.port
        : container.ports.find((p: Any) => p.name === port.port)?.containerPort;
    assert.ok(clients.length > 0, `${where}: something connects to it`);
    for (const port of ports) {
      const rules = policy.spec.ingress.filter((rule: Any) =>
        !rule.ports || rule.ports.some((p: Any) => portNumber(p) === port)
      );
      assert.ok(rules.length > 0, `${where} port ${port}: some rule lets its clients in`);
      for (const rule of rules) {
        assert.ok(rule.from?.length > 0, `${where} port ${port}: a rule open to everyone`);
        for (const peer of rule.from) {
          assert.ok(peer.podSelector, `${where} port ${port}: only pods (no ipBlock)`);
          assert.equal(peer.namespaceSelector, undefined, `${where} port ${port}: this namespace`);
          assert.ok(Object.keys(peer.podSelector.matchLabels ?? {}).length > 0, "a label selector");
        }
      }
      const allowed = (d: Any) =>
        rules.some((rule: Any) =>
          rule.from.some((peer: Any) => selects(peer.podSelector, d.spec.template))
        );
      // The pair's state channel: the brokers; the rest: every client of the workload.
      const needs = listenersOf.get(workload)?.ports.get(port) === "ha-state"
        ? deployments.filter((d) => listenersOf.get(d)!.connects.some(([w]) => w === "ha-state"))
        : clients;
      for (const d of needs) assert.ok(allowed(d), `${d.metadata.name} may reach ${where}:${port}`);
    }
  }
  for (const service of docs.filter((d) => d.kind === "Service")) {
    assert.ok(
      [undefined, "ClusterIP"].includes(service.spec.type),
      `Service ${service.metadata.name} is ${service.spec.type}: published beyond the cluster`,
    );
  }
});

Deno.test("Kubernetes: the broker pair, two state workers and two gateways on the StatefulSets' PostgreSQL and Redis", () => {
  const docs = manifests();
  const deployments = docs.filter((d) => d.kind === "Deployment");
  const selecting = (host: string, kind: string) => {
    const service = docs.find((d) => d.kind === "Service" && d.metadata.name === host);
    assert.ok(service, `no Service '${host}'`);
    const found = docs.filter((d) =>
      d.kind === kind &&
      Object.entries(service.spec.selector).every(([k, v]) =>
        d.spec.template.metadata.labels[k] === v
      )
    );
    assert.equal(found.length, 1, `Service ${host} selects one ${kind}`);
    return { service, workload: found[0] };
  };
  const instances: { name: string; component: string; config: Record<string, Any> }[] = [];
  for (const d of deployments) {
    const [name, ...args] = d.spec.template.spec.containers[0].args;
    const component = componentNamed(name);
    const config = resolve(d.metadata.name, component, args, podEnv(docs, d));
    if (["state", "gateway"].includes(component.name)) {
      assert.equal(d.spec.replicas, 2, `${d.metadata.name}: two replicas`);
      // Replicas share nothing but the databases: no ReadWriteOnce claim between them.
      assert.ok(
        !d.spec.template.spec.volumes.some((v: Any) => v.persistentVolumeClaim),
        `${d.metadata.name}: no volume claim shared by its replicas`,
      );
    }
    for (let i = 0; i < (d.spec.replicas ?? 1); i++) {
      instances.push({ name: d.metadata.name, component: component.name, config });
    }
    // Every PostgreSQL URL it reads names the StatefulSet's Service, user, password and a database it makes.
    for (const [key, value] of Object.entries(podEnv(docs, d))) {
      if (!key.startsWith(component.envPrefix + "_") || !/^postgres(ql)?:/.test(value)) continue;
      const url = new URL(value);
      const { service, workload } = selecting(url.hostname, "StatefulSet");
      const where = `${d.metadata.name} ${key}`;
      assert.ok(
        service.spec.ports.some((p: Any) => p.port === Number(url.port || 5432)),
        `${where}: port`,
      );
      const container = workload.spec.template.spec.containers[0];
      const env = Object.fromEntries(
        (container.env as Any[]).map((e) => [e.name, e.value ?? e.valueFrom?.secretKeyRef]),
      );
      assert.equal(url.username, env.POSTGRES_USER, `${where}: user`);
      const ref = env.POSTGRES_PASSWORD;
      const secret = docs.find((s) => s.kind === "Secret" && s.metadata.name === ref.name);
      assert.equal(
        decodeURIComponent(url.password),
        secret.stringData[ref.key],
        `${where}: password`,
      );
      const init = docs.find((c) =>
        c.kind === "ConfigMap" &&
        workload.spec.template.spec.volumes.some((v: Any) => v.configMap?.name === c.metadata.name)
      );
      const made = [
        ...Object.values(init?.data ?? {}).join("\n").matchAll(
          /CREATE DATABASE (\w+)/gi,
        ),
      ].map((m) => m[1]);
      const database = url.pathname.slice(1);
      assert.ok(
        database === env.POSTGRES_DB || made.includes(database),
        `${where}: ${database} is neither POSTGRES_DB nor made by the init script`,
      );
    }
    if (config.redis_url) {
      const { workload } = selecting(new URL(config.redis_url).hostname, "StatefulSet");
      assert.match(workload.spec.template.spec.containers[0].image, /^redis:/);
    }
  }
  checkHaTopology("k8s", instances, (name) => {
    // The Service of a broker Deployment.
    const d = deployments.find((d) => d.metadata.name === name)!;
    const services = docs.filter((s) =>
      s.kind === "Service" &&
      Object.entries(s.spec.selector).every(([k, v]) => d.spec.template.metadata.labels[k] === v)
    );
    assert.equal(services.length, 1, `one Service for ${name}`);
    return services[0].metadata.name;
  });
});

Deno.test("Kubernetes: `kubectl kustomize deploy/k8s` builds every manifest", async () => {
  // kubectl is a test dependency here (apt: kubectl); its absence is a failure.
  const run = await new Deno.Command("kubectl", {
    args: ["kustomize", ROOT + "deploy/k8s"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
  const built = parseAllDocuments(new TextDecoder().decode(run.stdout)).map((d) => d.toJS());
  const key = (d: Any) => `${d.kind}/${d.metadata.namespace ?? ""}/${d.metadata.name}`;
  const expected = manifests().filter((d) => d.kind !== "Kustomization")
    .map((d) =>
      key({
        ...d,
        metadata: { ...d.metadata, namespace: d.kind === "Namespace" ? undefined : "plantd" },
      })
    );
  assert.deepEqual(built.map(key).sort(), expected.sort());
  for (const d of built.filter((d) => d.spec?.template)) {
    for (const c of d.spec.template.spec.containers) {
      assert.match(c.image, /:[\w.-]+$/, `${key(d)}: image ${c.image} is pinned`);
    }
  }
});

// ---------------------------------------------------------------------------
// Grafana, Promtail, PromQL

interface Dashboard {
  file: string;
  json: Any;
}

function dashboards(): Dashboard[] {
  return [...Deno.readDirSync(ROOT + "deploy/grafana/dashboards")]
    .filter((e) => e.name.endsWith(".json"))
    .map((e) => ({ file: e.name, json: JSON.parse(read(`deploy/grafana/dashboards/${e.name}`)) }));
}

/** Every query of a dashboard: panel targets and template variables. */
function queries(dashboard: Any): { where: string; datasource: Any; query: string }[] {
  const out: { where: string; datasource: Any; query: string }[] = [];
  const panels = (dashboard.panels as Any[]).flatMap((p) => [p, ...(p.panels ?? [])]);
  for (const panel of panels) {
    for (const target of panel.targets ?? []) {
      const datasource = target.datasource ?? panel.datasource;
      out.push({
        where: `'${panel.title}' ${target.refId}`,
        datasource,
        query: target.expr ?? target.rawSql,
      });
    }
  }
  for (const variable of dashboard.templating?.list ?? []) {
    const query = typeof variable.query === "string" ? variable.query : variable.query?.query;
    out.push({ where: `variable $${variable.name}`, datasource: variable.datasource, query });
  }
  return out;
}

const PROMQL_KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "inf", "nan"]);
const PROMQL_GROUPING = new Set(["by", "without", "on", "ignoring", "group_left", "group_right"]);
const PROMQL_AGGREGATIONS = new Set([
  "sum",
  "min",
  "max",
  "avg",
  "group",
  "stddev",
  "stdvar",
  "count",
  "count_values",
  "bottomk",
  "topk",
  "quantile",
  "limitk",
  "limit_ratio",
]);

/** Metric names and the label names used with each, read from a PromQL expression. */
export function promqlSelectors(
  expr: string,
): { metrics: Map<string, Set<string>>; grouping: Set<string> } {
  const metrics = new Map<string, Set<string>>();
  const grouping = new Set<string>();
  // Grafana's label_values(expr, label) around a selector.
  const labelValues = /^label_values\((.*),\s*([a-zA-Z_]\w*)\)$/.exec(expr.trim());
  if (labelValues) {
    for (const [name, labels] of promqlSelectors(labelValues[1]!).metrics) {
      metrics.set(name, new Set([...labels, labelValues[2]!]));
    }
    return { metrics, grouping };
  }
  // Strings and range/subquery brackets carry no names.
  const text = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\[[^\]]*\]/g, "");
  const identifier = /[a-zA-Z_:][\w:]*/y;
  const number = /\d[\d.]*(e[+-]?\d+)?[a-z]*/iy;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (/[a-zA-Z_:]/.test(c)) {
      identifier.lastIndex = i;
      const name = identifier.exec(text)![0];
      i += name.length;
      let next = i;
      while (text[next] === " " || text[next] === "\n") next++;
      const lower = name.toLowerCase();
      if (PROMQL_GROUPING.has(lower)) {
        if (text[next] === "(") {
          const end = text.indexOf(")", next);
          for (const label of text.slice(next + 1, end).split(",")) {
            if (label.trim()) grouping.add(label.trim());
          }
          i = end + 1;
        }
        continue;
      }
      if (PROMQL_KEYWORDS.has(lower) || PROMQL_AGGREGATIONS.has(lower)) continue;
      if (text[next] === "(") continue; // a function
      const labels = new Set<string>(metrics.get(name) ?? []);
      if (text[next] === "{") {
        const end = text.indexOf("}", next);
        for (const [, label] of text.slice(next, end).matchAll(/([a-zA-Z_]\w*)\s*(=~|!~|!=|=)/g)) {
          labels.add(label!);
        }
        i = end + 1;
      }
      metrics.set(name, labels);
    } else if (c === "{") {
      i = text.indexOf("}", i) + 1;
    } else if (/\d/.test(c)) {
      number.lastIndex = i;
      i += number.exec(text)![0].length;
    } else {
      i++;
    }
  }
  return { metrics, grouping };
}

/** Metric name -> label names, from the code's own registries. */
async function registeredMetrics(): Promise<Map<string, Set<string>>> {
  const system = await startSystem();
  const registries = [system.registry, new Registry()];
  ingesterMetrics(registries[1]!, 1000);
  const names = new Map<string, Set<string>>();
  try {
    for (const registry of registries) {
      for (const metric of registry.getMetricsAsArray()) {
        const labels = new Set<string>([
          "job",
          "instance",
          ...((metric as unknown as { labelNames?: string[] }).labelNames ?? []),
        ]);
        const { type } = await (metric as unknown as { get(): Promise<{ type: string }> }).get();
        names.set(metric.name, labels);
        if (type === "histogram") {
          names.set(`${metric.name}_bucket`, new Set([...labels, "le"]));
          names.set(`${metric.name}_sum`, labels);
          names.set(`${metric.name}_count`, labels);
        }
        if (type === "summary") {
          names.set(`${metric.name}_sum`, labels);
          names.set(`${metric.name}_count`, labels);
          labels.add("quantile");
        }
      }
    }
    // The gateway's /metrics serves the same registry.
    const scraped = await (await fetch(`${system.url}/metrics`)).text();
    for (const [, name] of scraped.matchAll(/^# TYPE (\S+) /gm)) {
      assert.ok(names.has(name!), `${name} scraped but not found in the registry`);
    }
  } finally {
    await system.stop();
  }
  // Made by Prometheus for every target.
  names.set("up", new Set(["job", "instance"]));
  return names;
}

Deno.test("Grafana: provisioned data sources and dashboards match compose, Prometheus and Promtail", () => {
  const file = compose();
  const datasources = parseYaml(read("deploy/grafana/provisioning/datasources/plantd.yaml"))
    .datasources as Any[];
  const byUid = new Map(datasources.map((d) => [d.uid, d]));
  const hostPort = (url: string) => {
    const u = new URL(url.includes("://") ? url : `tcp://${url}`);
    return { host: u.hostname, port: Number(u.port) };
  };
  for (const ds of datasources) {
    const { host, port } = hostPort(ds.url);
    const service = file.services[host];
    assert.ok(service, `data source ${ds.name}: no compose service '${host}'`);
    const published = publishedPorts(service.ports);
    assert.ok(published.includes(port), `data source ${ds.name}: ${host} does not expose ${port}`);
  }
  const tsdb = datasources.find((d) => d.type === "grafana-postgresql-datasource");
  assert.equal(tsdb.user, file.services.tsdb.environment.POSTGRES_USER);
  assert.equal(tsdb.jsonData.database, file.services.tsdb.environment.POSTGRES_DB);
  assert.match(tsdb.secureJsonData.password, /^\$\{?POSTGRES_PASSWORD\}?$/);
  assert.ok("POSTGRES_PASSWORD" in file.services.grafana.environment);
  // Provisioning and dashboards are mounted where the provider looks.
  const provider =
    parseYaml(read("deploy/grafana/provisioning/dashboards/plantd.yaml")).providers[0];
  const mounts = new Map<string, string>(
    file.services.grafana.volumes.map((v: string) =>
      v.split(":").slice(0, 2).reverse() as [string, string]
    ),
  );
  assert.equal(mounts.get(provider.options.path), "./deploy/grafana/dashboards");
  assert.equal(mounts.get("/etc/grafana/provisioning"), "./deploy/grafana/provisioning");
  // Promtail pushes to the loki service.
  const promtail = parseYaml(read("deploy/promtail/config.yaml"));
  assert.equal(hostPort(promtail.clients[0].url).host, "loki");
  const promtailLabels = new Set<string>([
    ...promtail.scrape_configs.flatMap((c: Any) =>
      c.relabel_configs.map((r: Any) => r.target_label)
    ),
    ...promtail.scrape_configs.flatMap((c: Any) =>
      c.pipeline_stages.flatMap((s: Any) => Object.keys(s.labels ?? {}))
    ),
  ]);
  const jobs = new Set(
    (parseYaml(read("deploy/prometheus/prometheus.yml")).scrape_configs as Any[]).map((j) =>
      j.job_name
    ),
  );
  const uids = new Set<string>();
  for (const { file: name, json } of dashboards()) {
    assert.ok(json.uid && !uids.has(json.uid), `${name}: unique uid`);
    uids.add(json.uid);
    assert.ok(json.title && json.panels.length > 0, `${name}: title and panels`);
    const ids = new Set<number>();
    for (const panel of json.panels) {
      assert.ok(!ids.has(panel.id), `${name}: panel ids unique`);
      ids.add(panel.id);
      assert.ok(
        panel.gridPos && panel.gridPos.w > 0 && panel.gridPos.x + panel.gridPos.w <= 24,
        `${name}: ${panel.title} gridPos`,
      );
    }
    for (const { where, datasource, query } of queries(json)) {
      const ds = byUid.get(datasource?.uid);
      assert.ok(ds, `${name} ${where}: data source ${JSON.stringify(datasource)} is provisioned`);
      assert.equal(datasource.type, ds.type, `${name} ${where}: data source type`);
      assert.ok(typeof query === "string" && query.trim() !== "", `${name} ${where}: a query`);
      if (ds.type === "loki") {
        const selector = /^\{([^}]*)\}/.exec(query.trim());
        assert.ok(selector, `${name} ${where}: a stream selector`);
        for (
          const [, label, , value] of selector[1]!.matchAll(
            /([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"/g,
          )
        ) {
          assert.ok(
            promtailLabels.has(label!),
            `${name} ${where}: Promtail sets no label '${label}'`,
          );
          if (label === "compose_service") {
            for (const service of value!.split("|")) {
              assert.ok(file.services[service], `${name} ${where}: ${service}`);
            }
          }
        }
      }
      if (ds.type === "prometheus") {
        for (const [, regex] of query.matchAll(/job=~"([^"]*)"/g)) {
          assert.ok(
            [...jobs].some((job) => new RegExp(`^(${regex})$`).test(job)),
            `${name} ${where}: job ${regex}`,
          );
        }
      }
    }
  }
  assert.deepEqual([...uids].length, 4);
});

Deno.test("Grafana dashboards query only metrics and labels the code registers", async () => {
  const registered = await registeredMetrics();
  let checked = 0;
  for (const { file, json } of dashboards()) {
    for (const { where, datasource, query } of queries(json)) {
      if (datasource.type !== "prometheus") continue;
      const { metrics, grouping } = promqlSelectors(query);
      assert.ok(metrics.size > 0, `${file} ${where}: no metric in ${query}`);
      const available = new Set<string>();
      for (const [name, labels] of metrics) {
        const known = registered.get(name);
        assert.ok(known, `${file} ${where}: metric '${name}' is registered by no component`);
        for (const label of labels) {
          assert.ok(known.has(label), `${file} ${where}: ${name} has no label '${label}'`);
        }
        for (const label of known) available.add(label);
        checked++;
      }
      for (const label of grouping) {
        assert.ok(
          available.has(label),
          `${file} ${where}: no metric of the query has label '${label}'`,
        );
      }
    }
  }
  assert.ok(checked >= 40, `checked ${checked} selectors`);
});

Deno.test("promqlSelectors reads metric names, matchers and grouping labels", () => {
  const { metrics, grouping } = promqlSelectors(
    'histogram_quantile(0.95, sum by (le, service) (rate(mdp_request_duration_seconds_bucket{job=~"a|b"}[$__rate_interval]))) / on (service) group_left up',
  );
  assert.deepEqual([...metrics.keys()], ["mdp_request_duration_seconds_bucket", "up"]);
  assert.deepEqual([...metrics.get("mdp_request_duration_seconds_bucket")!], ["job"]);
  assert.deepEqual([...grouping].sort(), ["le", "service"]);
  assert.deepEqual([...promqlSelectors("label_values(bus_up, bus)").metrics.get("bus_up")!], [
    "bus",
  ]);
  assert.deepEqual([...promqlSelectors("sum(rate(x_total[5m])) by (a)").grouping], ["a"]);
});

/** Grafana's PostgreSQL macros and the dashboard's variables, expanded as Grafana would. */
function expandSql(sql: string): string {
  return sql
    .replace(
      /\$__timeGroupAlias\(([^,]+),\s*([^)]+)\)/g,
      (_, column) => `date_bin('60 seconds', ${column.trim()}, TIMESTAMPTZ '2000-01-01') AS "time"`,
    )
    .replace(
      /\$__timeFilter\(([^)]+)\)/g,
      (_, column) => `${column.trim()} BETWEEN now() - interval '1 hour' AND now()`,
    )
    .replace(/\$__interval/g, "'1m'")
    .replace(/\$device\b/g, "'d1','d2'");
}

Deno.test("Grafana's TimescaleDB queries run on the metrics schema", async () => {
  const db = await freshDatabase();
  try {
    const writer = await openPgWriter(db.url, { connections: 1 });
    await db.sql`insert into metrics (time, device, channel, value) values
      (now() - interval '5 minutes', 'd1', 'temperature', 20.5),
      (now() - interval '1 minute', 'd1', 'temperature', 21.5),
      (now() - interval '1 minute', 'd2', 'pressure', 1.2)`;
    let ran = 0;
    for (const { file, json } of dashboards()) {
      for (const { where, datasource, query } of queries(json)) {
        if (datasource.type !== "grafana-postgresql-datasource") continue;
        const rows = await db.sql.unsafe(expandSql(query)).catch((error: Error) => {
          throw new Error(`${file} ${where}: ${error.message}\n${expandSql(query)}`);
        });
        assert.ok(rows.length > 0, `${file} ${where}: rows`);
        ran++;
      }
    }
    assert.ok(ran >= 4, `ran ${ran} queries`);
    await writer.close();
  } finally {
    await db.drop();
  }
});

// ---------------------------------------------------------------------------
// The image's command line, run directly

Deno.test("the Dockerfile's command line starts, answers /healthz, passes its HEALTHCHECK, stops on SIGTERM", async () => {
  const { entrypoint, cmd, env: imageEnv, healthCmd } = dockerfile();
  const dir = await Deno.makeTempDir();
  const port = freePort();
  const random = (name: string) => ({
    name,
    frontend: "tcp://127.0.0.1:*",
    backend: "tcp://127.0.0.1:*",
  });
  const env: Record<string, string> = {
    ...Deno.env.toObject(),
    ...imageEnv,
    // This machine is not a container: random ports and a temporary /data.
    PLANTD_STATE_DB: `${dir}/plantd-state.db`,
    PLANTD_METRICS_DB: `${dir}/plantd-metrics.db`,
    PLANTD_BROKER_ENDPOINT: "tcp://127.0.0.1:*",
    PLANTD_BROKER_HEALTH_PORT: "0",
    PLANTD_BROKER_BUSES: JSON.stringify(["state", "event", "metric"].map(random)),
    PLANTD_GATEWAY_PORT: String(port),
    PLANTD_GATEWAY_AUTH_DB: `${dir}/plantd-auth.db`,
    // What `docker run -e` must give: the image listens beyond loopback.
    PLANTD_GATEWAY_JWT_SECRET: "a-secret-for-the-image-test-32-bytes",
    PLANTD_BROKER_LOG_LEVEL: "warn",
  };
  const [program, ...args] = [...entrypoint, ...cmd];
  const child = spawnWatched(
    new Deno.Command(program === "deno" ? Deno.execPath() : program!, {
      args,
      cwd: ROOT,
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }),
  );
  const healthcheck = async () => {
    const [hcProgram, ...hcArgs] = healthCmd;
    const output = await new Deno.Command(hcProgram === "deno" ? Deno.execPath() : hcProgram!, {
      args: hcArgs,
      cwd: ROOT,
      env: { ...env, PLANTD_HEALTHCHECK_PID: String(child.process.pid) },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: output.code, out: new TextDecoder().decode(output.stdout) };
  };
  try {
    const url = `http://127.0.0.1:${port}`;
    await waitFor(async () => {
      if (child.exited()) throw new Error(`dev exited: ${child.stderr()}`);
      try {
        const response = await fetch(`${url}/healthz`);
        await response.body?.cancel();
        return response.status === 200;
      } catch {
        return false;
      }
    }, { timeoutMs: 30_000, intervalMs: 100, what: "/healthz UP from the image's command" });
    const health = await (await fetch(`${url}/healthz`)).json();
    assert.deepEqual(
      health.checks.map((c: { name: string }) => c.name).sort(),
      [
        "audit_log",
        "auth_db",
        "broker_connection",
        "bus_event",
        "bus_metric",
        "bus_state",
        "metrics_database",
        "state_store",
        "state_worker",
        "state_writes",
      ],
    );
    const livez = await fetch(`${url}/livez`);
    assert.equal(livez.status, 200);
    await livez.body?.cancel();
    const checked = await healthcheck();
    assert.equal(checked.code, 0, checked.out);
    const { code } = await child.stop("SIGTERM");
    assert.equal(code, 0, child.stderr());
    const after = await healthcheck();
    assert.equal(after.code, 1, "the check fails once the component is gone");
  } finally {
    await child.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});
