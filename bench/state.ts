/**
 * `deno task bench:state`: state-set and state-get through the broker, at 1
 * and 256 requests in flight, next to Redis SET/GET through ioredis in the
 * same run: the machine's Redis as it is configured, and a private
 * redis-server with `appendfsync always` (every write on disk before its
 * answer, as plantd-ts's). The broker and the state service are the real
 * components (`main.ts broker`, `main.ts state`) in child processes; the
 * clients are here. Runs on bench/harness.ts: the systems interleave in
 * rotating order each round (fresh broker, state service and database for
 * plantd-ts each round); median and range over rounds.
 *
 * Durability differs and is printed with the results: plantd-ts replies after
 * its group commit is synced (SQLite WAL, synchronous=FULL by default); each
 * Redis's persistence is read from the server (CONFIG GET) for its label, and
 * the filesystem of every database directory is recorded (fsync costs
 * nothing on tmpfs).
 *
 * @module
 */
import { Redis } from "ioredis";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { summarize, type Summary } from "./_stats.ts";
import {
  Child,
  closedLoop,
  filesystemOf,
  freePort,
  type Metrics,
  runBench,
  startComponent,
  startStateService,
  until,
} from "./harness.ts";

const KEYS = 100_000;
const VALUE = "v".repeat(32);
const TARGET_WRITES = 25_000;
const TARGET_READS = 50_000;

type Loop = { warmupMs: number; measureMs: number; maxOps: number };

const asMetrics = (s: Summary): Metrics => ({
  "ops/s": s.perSecond,
  "p50 ms": s.p50Ms,
  "p99 ms": s.p99Ms,
  errors: s.errors,
});

/** Set then get at each in-flight level, on a fresh broker, state service and database. */
async function plantd(
  dbDir: string,
  synchronous: string,
  inFlight: number[],
  loop: Loop,
): Promise<Map<string, Metrics>> {
  const dir = await Deno.makeTempDir({ prefix: "bench-state-", dir: dbDir || undefined });
  const endpoint = `tcp://127.0.0.1:${freePort()}`;
  const broker = startComponent("broker", ["--endpoint", endpoint, "--health-port", "0"], {
    PLANTD_BROKER_BUSES: "[]",
  });
  const state = startStateService(`${dir}/state.db`, endpoint, "", ["--synchronous", synchronous]);
  const client = new MdpClient(endpoint, { timeoutMs: 10_000 });
  try {
    await until(
      async () => {
        const [reply] = await client.request(STATE_SERVICE, ["health", "{}"], { timeoutMs: 500 });
        return JSON.parse(text(reply!)).success === true;
      },
      20_000,
      "state service",
    );
    const call = (operation: string, i: number) =>
      client.request(STATE_SERVICE, [
        operation,
        JSON.stringify({ service: "bench", key: `k${i % KEYS}`, value: VALUE }),
      ]).then(([reply]) => {
        if (!text(reply!).startsWith('{"success":true')) throw new Error(text(reply!));
      });
    const out = new Map<string, Metrics>();
    for (const n of inFlight) {
      const set = await closedLoop(n, (i) => call("state-set", i), loop);
      out.set(
        `plantd/set@${n}`,
        asMetrics(summarize(set.latencies, set.count, set.errors, set.seconds)),
      );
      const get = await closedLoop(n, (i) => call("state-get", i), loop);
      out.set(
        `plantd/get@${n}`,
        asMetrics(summarize(get.latencies, get.count, get.errors, get.seconds)),
      );
    }
    return out;
  } finally {
    await client.close();
    await state.stop();
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

/** A Redis connection and how the server keeps data, read from its configuration. */
async function connectRedis(address: string): Promise<{ client: Redis; persistence: string }> {
  const [host, port] = address.split(":");
  const client = new Redis({
    host,
    port: Number(port),
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  try {
    await client.connect();
  } catch (error) {
    client.disconnect();
    throw new Error(`Redis at ${address} not reachable: ${(error as Error).message}`);
  }
  const setting = async (name: string) => ((await client.config("GET", name)) as string[])[1] ?? "";
  const [aof, fsync, save, dir] = await Promise.all(
    ["appendonly", "appendfsync", "save", "dir"].map(setting),
  );
  const parts = [
    aof === "yes" ? `appendonly yes, appendfsync ${fsync}` : "appendonly no",
    save ? `save "${save}"` : 'save ""',
  ];
  const persistence = aof !== "yes" && !save
    ? `no persistence: ${parts.join(", ")}`
    : `${parts.join(", ")}, dir on ${filesystemOf(dir!)}`;
  return { client, persistence };
}

/** SET then GET at each in-flight level through `client`. */
async function redis(
  client: Redis,
  prefix: string,
  inFlight: number[],
  loop: Loop,
): Promise<Map<string, Metrics>> {
  const out = new Map<string, Metrics>();
  for (const n of inFlight) {
    const set = await closedLoop(n, (i) => client.set(`bench:k${i % KEYS}`, VALUE), loop);
    out.set(
      `${prefix}/set@${n}`,
      asMetrics(summarize(set.latencies, set.count, set.errors, set.seconds)),
    );
    const get = await closedLoop(n, (i) => client.get(`bench:k${i % KEYS}`), loop);
    out.set(
      `${prefix}/get@${n}`,
      asMetrics(summarize(get.latencies, get.count, get.errors, get.seconds)),
    );
  }
  return out;
}

await runBench({
  name: "state",
  title: "State (deno task bench:state)",
  command: "`deno task bench:state` (bench/state.ts)",
  servers: ["redis-server"],
  settings: {
    measure_ms: { env: "BENCH_MEASURE_MS", default: 3000, help: "measured time per run" },
    in_flight: { env: "BENCH_IN_FLIGHT", default: "1,256", help: "requests in flight (list)" },
    synchronous: {
      env: "BENCH_SYNCHRONOUS",
      default: "full",
      help: "state service synchronous (full|normal)",
    },
    redis: { env: "BENCH_REDIS", default: "127.0.0.1:6379", help: "the machine's Redis" },
    db_dir: {
      env: "BENCH_DB_DIR",
      default: "",
      help: "where databases go (default: the system's temporary directory)",
    },
  },
}, async (bench) => {
  const settings = bench.settings;
  const inFlight = settings.in_flight.split(",").map(Number).filter((n) => n > 0);
  const loop = { warmupMs: 500, measureMs: settings.measure_ms, maxOps: 2_000_000 };
  const dbDir = settings.db_dir || Deno.env.get("TMPDIR") || "/tmp";
  // A private redis-server that syncs every write, with its data on the same filesystem.
  const alwaysDir = await Deno.makeTempDir({ prefix: "bench-redis-", dir: dbDir });
  const alwaysPort = freePort();
  const alwaysServer = new Child({
    name: "redis-server",
    command: "redis-server",
    args: [
      "--port",
      String(alwaysPort),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "yes",
      "--appendfsync",
      "always",
      "--dir",
      alwaysDir,
    ],
    stopBy: "SIGTERM",
  });
  const connect = (address: string) =>
    until(
      async () => {
        (await Deno.connect({ hostname: "127.0.0.1", port: Number(address.split(":")[1]) }))
          .close();
        return true;
      },
      10_000,
      address,
    ).then(() => connectRedis(address));
  const machineRedis = await connectRedis(settings.redis);
  const always = await connect(`127.0.0.1:${alwaysPort}`);
  const label = {
    plantd:
      `plantd-ts via broker (state service at defaults: synchronous=${settings.synchronous}, ` +
      "4 connections x capacity 64)",
    machine: `Redis via ioredis, ${settings.redis} (${machineRedis.persistence})`,
    always: `Redis via ioredis, private redis-server (${always.persistence})`,
  };
  const systems = [
    { key: "plantd", ops: ["state-set", "state-get"] },
    { key: "redis", ops: ["SET", "GET"] },
    { key: "redis-always", ops: ["SET", "GET"] },
  ];
  const rowKeys: string[] = [];
  for (const system of systems) {
    for (const n of inFlight) {
      for (const [i, op] of system.ops.entries()) {
        const key = `${system.key}/${i === 0 ? "set" : "get"}@${n}`;
        bench.row(
          key,
          system.key === "plantd"
            ? label.plantd
            : system.key === "redis"
            ? label.machine
            : label.always,
          { operation: op, "in flight": n },
        );
        rowKeys.push(key);
      }
    }
  }
  try {
    await bench.rounds(
      systems.map((s) => ({ key: s.key, rows: rowKeys.filter((k) => k.startsWith(`${s.key}/`)) })),
      (unit) =>
        unit.key === "plantd" ? plantd(dbDir, settings.synchronous, inFlight, loop) : redis(
          unit.key === "redis" ? machineRedis.client : always.client,
          unit.key,
          inFlight,
          loop,
        ),
    );
  } finally {
    machineRedis.client.disconnect();
    always.client.disconnect();
    await alwaysServer.stop();
    await Deno.remove(alwaysDir, { recursive: true }).catch(() => {});
  }
  const top = Math.max(...inFlight);
  return {
    description: "The broker (`main.ts broker`) and the state service (`main.ts state`, WAL) " +
      "run as child processes; the MdpClient and the ioredis clients run in the bench process; " +
      `keys k0..k${KEYS - 1}, 32-byte values; per run 500 ms warm-up, then ` +
      `${settings.measure_ms} ms, closed loop with N requests in flight; set, then get, at each ` +
      `level. Databases (the state service's SQLite, the private Redis's append-only file) in ` +
      `${dbDir}, on ${filesystemOf(dbDir)}. plantd-ts acknowledges a write after its group ` +
      `commit is synced (synchronous=${settings.synchronous}); each Redis's persistence is as ` +
      "its label says, read from the server.",
    tables: [{
      rows: rowKeys,
      columns: [
        { header: "system", show: "label" },
        { header: "operation", show: "param:operation" },
        { header: "in flight", show: "param:in flight" },
        { header: "ops/s (median)", show: "median:ops/s" },
        { header: "range", show: "range:ops/s" },
        { header: "p50 ms", show: "median:p50 ms", decimals: 3 },
        { header: "p99 ms", show: "median:p99 ms", decimals: 3 },
        { header: "errors", show: "sum:errors" },
      ],
    }],
    checks: [
      {
        name: `durable writes >= ${TARGET_WRITES.toLocaleString("en-US")}/s (${top} in flight)`,
        value: { rows: [`plantd/set@${top}`], metric: "ops/s" },
        op: ">=",
        target: TARGET_WRITES,
      },
      {
        name: `reads >= ${TARGET_READS.toLocaleString("en-US")}/s (${top} in flight)`,
        value: { rows: [`plantd/get@${top}`], metric: "ops/s" },
        op: ">=",
        target: TARGET_READS,
      },
    ],
  };
});
