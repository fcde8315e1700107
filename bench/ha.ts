/**
 * `deno task bench:ha`: high availability, measured, in two parts of one run.
 *
 * 1. Failover of a broker pair (bench/ha_failover.ts): `kills` SIGKILLs of
 *    the active broker under steady state writes, then one of the passive
 *    broker. Per kill: failover time (SIGKILL to the first acknowledgement of
 *    a write sent after it), writes failed, lost, duplicated and phantoms
 *    (applied after their caller was told they failed). The pair is started
 *    once; each kill is one round of its row, so the median and range are
 *    over kills.
 * 2. State sets and gets per second through the broker on the embedded
 *    libSQL store, on PostgreSQL with one state worker, and on PostgreSQL
 *    with two state workers sharing the database. Each setup is started
 *    afresh (broker, workers, a new file or a new database) for each of its
 *    runs; the setups interleave in rotating order each round.
 *
 * Durability is the same on both stores: a reply is sent after its group
 * commit is durable (libSQL: WAL with synchronous=full; PostgreSQL: the
 * server's synchronous_commit and fsync, read from the server for the
 * labels).
 *
 * @module
 */
import postgres from "postgres";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { randomDatabaseName } from "../tests/_postgres.ts";
import { num, summarize, type Summary } from "./_stats.ts";
import { FailoverPair, type KillResult } from "./ha_failover.ts";
import {
  closedLoop,
  filesystemOf,
  freePort,
  type Metrics,
  runBench,
  startComponent,
  until,
} from "./harness.ts";

const KEYS = 100_000;
const VALUE = "v".repeat(32);
const WARMUP_MS = 500;

type Setup = "libsql" | "postgres-1" | "postgres-2";
const SETUPS: readonly Setup[] = ["libsql", "postgres-1", "postgres-2"];

/** A setup's broker, workers and database, started afresh. */
async function startSetup(
  setup: Setup,
  admin: postgres.Sql,
  adminUrl: string,
  poolSize: number,
  dbDir: string,
): Promise<{ endpoint: string; healthPorts: number[]; stop(): Promise<void> }> {
  const endpoint = `tcp://127.0.0.1:${freePort()}`;
  const components = [
    startComponent("broker", ["--endpoint", endpoint, "--health-port", "0"], {
      PLANTD_BROKER_BUSES: "[]",
    }),
  ];
  let db: string;
  let cleanup: () => Promise<void>;
  if (setup === "libsql") {
    const dir = await Deno.makeTempDir({ prefix: "bench-ha-state-", dir: dbDir });
    db = `${dir}/state.db`;
    cleanup = () => Deno.remove(dir, { recursive: true });
  } else {
    const name = randomDatabaseName().replace(/^plantd_test_/, "plantd_bench_");
    await admin.unsafe(`create database ${name}`);
    const url = new URL(adminUrl);
    url.pathname = `/${name}`;
    db = url.toString();
    cleanup = async () => {
      await admin.unsafe(`drop database if exists ${name} with (force)`);
    };
  }
  const healthPorts = Array.from({ length: setup === "postgres-2" ? 2 : 1 }, () => freePort());
  for (const port of healthPorts) {
    components.push(startComponent("state", [
      "--db",
      db,
      "--db-pool-size",
      String(poolSize),
      "--broker-endpoint",
      endpoint,
      "--health-port",
      String(port),
      "--bus-endpoint",
      "",
    ]));
  }
  return {
    endpoint,
    healthPorts,
    async stop() {
      for (const component of components.reverse()) await component.stop();
      await cleanup();
    },
  };
}

const asMetrics = (s: Summary): Metrics => ({
  "ops/s": s.perSecond,
  "p50 ms": s.p50Ms,
  "p99 ms": s.p99Ms,
  errors: s.errors,
});

/** state-set, then state-get, once every worker of the setup is up. */
async function measureState(
  endpoint: string,
  healthPorts: number[],
  inFlight: number,
  measureMs: number,
): Promise<{ set: Metrics; get: Metrics }> {
  const client = new MdpClient(endpoint, { timeoutMs: 10_000 });
  try {
    await until(
      async () => {
        const [reply] = await client.request(STATE_SERVICE, ["health", "{}"], { timeoutMs: 500 });
        return JSON.parse(text(reply!)).success === true;
      },
      30_000,
      "state service",
    );
    // Every worker registered at the broker (UP), not just the first to answer.
    for (const port of healthPorts) {
      await until(
        async () => {
          const response = await fetch(`http://127.0.0.1:${port}/healthz`);
          await response.body?.cancel();
          return response.ok;
        },
        30_000,
        `state worker /healthz on ${port}`,
      );
    }
    const call = (operation: string, i: number) =>
      client.request(STATE_SERVICE, [
        operation,
        JSON.stringify({ service: "bench", key: `k${i % KEYS}`, value: VALUE }),
      ]).then(([reply]) => {
        if (!text(reply!).startsWith('{"success":true')) throw new Error(text(reply!));
      });
    const loop = { warmupMs: WARMUP_MS, measureMs, maxOps: 2_000_000 };
    const set = await closedLoop(inFlight, (i) => call("state-set", i), loop);
    const get = await closedLoop(inFlight, (i) => call("state-get", i), loop);
    return {
      set: asMetrics(summarize(set.latencies, set.count, set.errors, set.seconds)),
      get: asMetrics(summarize(get.latencies, get.count, get.errors, get.seconds)),
    };
  } finally {
    await client.close();
  }
}

const killMetrics = (k: KillResult): Metrics => ({
  "failover ms": k.active ? k.failoverMs : NaN,
  writes: k.attempted,
  acked: k.acked,
  failed: k.failed,
  "failed, applied before told": k.failedApplied,
  lost: k.lost,
  duplicated: k.duplicated,
  phantoms: k.phantoms,
  "rejoin ms": k.rejoinMs,
});

await runBench({
  name: "ha",
  title: "High availability (deno task bench:ha)",
  command: "`deno task bench:ha` (bench/ha.ts)",
  servers: ["postgres"],
  settings: {
    kills: { env: "BENCH_HA_KILLS", default: 5, help: "SIGKILLs of the active broker" },
    heartbeat_ms: {
      env: "BENCH_HA_HEARTBEAT_MS",
      default: 1000,
      help: "the pair's heartbeat_ms (1000 is the configuration's default)",
    },
    rate: { env: "BENCH_HA_RATE", default: 200, help: "state writes started per second" },
    timeout_ms: { env: "BENCH_HA_TIMEOUT_MS", default: 3000, help: "each write's deadline" },
    writes_around: {
      env: "BENCH_HA_WRITES_AROUND",
      default: 200,
      help: "writes acknowledged before each kill and after it",
    },
    measure_ms: {
      env: "BENCH_MEASURE_MS",
      default: 3000,
      help: "measured time per state operation and setup",
    },
    in_flight: { env: "BENCH_IN_FLIGHT", default: 256, help: "state requests in flight" },
    pool_size: {
      env: "BENCH_POOL_SIZE",
      default: 8,
      help: "PostgreSQL connections per state worker",
    },
    pg_url: {
      env: "BENCH_PG_URL",
      default: "postgres://postgres@127.0.0.1:5432/postgres",
      help: "admin URL of the PostgreSQL server (databases are created and dropped there)",
    },
    db_dir: {
      env: "BENCH_DB_DIR",
      default: "",
      help: "where libSQL files go (default: the system's temporary directory)",
    },
  },
}, async (bench) => {
  const s = bench.settings;
  if (s.kills < 1) throw new Error("kills must be at least 1");
  const dbDir = s.db_dir || Deno.env.get("TMPDIR") || "/tmp";
  const fs = filesystemOf(dbDir);

  // Part 1: failover.
  const load = `${s.rate} state writes/s, deadline ${s.timeout_ms} ms, heartbeat_ms ` +
    `${s.heartbeat_ms}; state worker on libSQL on ${fs}`;
  bench.row("failover/active", `SIGKILL of the active broker (${load})`);
  bench.row("failover/passive", `SIGKILL of the passive broker (${load})`);
  const kills: KillResult[] = [];
  const pair = await FailoverPair.start({
    heartbeatMs: s.heartbeat_ms,
    rate: s.rate,
    timeoutMs: s.timeout_ms,
    writesAround: s.writes_around,
  }, dbDir);
  try {
    const kill = async (which: "active" | "passive") => {
      const result = await pair.kill(which);
      kills.push(result);
      return killMetrics(result);
    };
    await bench.rounds([{ key: "failover/active" }], () => kill("active"), { rounds: s.kills });
    await bench.rounds([{ key: "failover/passive" }], () => kill("passive"), { rounds: 1 });
  } finally {
    await pair.stop();
  }

  // Part 2: state sets and gets per second by store.
  const admin = postgres(s.pg_url, { max: 1, onnotice: () => {} });
  const show = async (name: string) =>
    String(Object.values((await admin.unsafe(`show ${name}`))[0] ?? {})[0] ?? "?");
  let pg: Record<string, string>;
  try {
    pg = {
      version: await show("server_version"),
      synchronousCommit: await show("synchronous_commit"),
      fsync: await show("fsync"),
      dataDirectory: await show("data_directory").catch(() => ""),
    };
    const pgFs = pg.dataDirectory ? filesystemOf(pg.dataDirectory) : "unknown";
    const pgLabel = (workers: number) =>
      `PostgreSQL ${pg.version}, ${workers} state worker${workers > 1 ? "s" : ""} ` +
      `(synchronous_commit=${pg.synchronousCommit}, fsync=${pg.fsync}, data on ${pgFs}, ` +
      `${s.pool_size} connections per worker)`;
    const labels: Record<Setup, string> = {
      "libsql": `libSQL, 1 state worker (WAL, synchronous=full, on ${fs})`,
      "postgres-1": pgLabel(1),
      "postgres-2": pgLabel(2),
    };
    for (const setup of SETUPS) {
      for (const op of ["set", "get"]) {
        bench.row(`${setup}/${op}`, labels[setup], {
          operation: `state-${op}`,
          "in flight": s.in_flight,
        });
      }
    }
    await bench.rounds(
      SETUPS.map((setup) => ({ key: setup, rows: [`${setup}/set`, `${setup}/get`] })),
      async (unit) => {
        const started = await startSetup(unit.key, admin, s.pg_url, s.pool_size, dbDir);
        try {
          const { set, get } = await measureState(
            started.endpoint,
            started.healthPorts,
            s.in_flight,
            s.measure_ms,
          );
          return new Map([[`${unit.key}/set`, set], [`${unit.key}/get`, get]]);
        } finally {
          await started.stop();
        }
      },
    );
  } finally {
    await admin.end({ timeout: 1 });
  }

  const perKill = kills.map((k, i) =>
    `${k.active ? `kill ${i + 1}` : "passive kill"} (${k.killed}${k.active ? "" : ", passive"}): ` +
    (k.active ? `failover ${num(k.failoverMs)} ms, ` : "") +
    `${num(k.attempted)} writes, ${num(k.acked)} acked, ${num(k.failed)} failed ` +
    `${JSON.stringify(k.errors)} (${num(k.failedApplied)} of them applied before their caller ` +
    `was told), ${num(k.lost)} lost, ${num(k.duplicated)} duplicated, ${num(k.phantoms)} ` +
    `phantoms; passive again ${num(k.rejoinMs)} ms after its restart`
  );
  const failoverRows = ["failover/active", "failover/passive"];
  const stateRows = SETUPS.flatMap((setup) => [`${setup}/set`, `${setup}/get`]);
  return {
    description: "Part 1, failover: `main.ts broker` as primary and backup of a pair, one " +
      "`main.ts state` worker registered with both, and state writes (open loop, a fresh key " +
      "each) from an MdpClient of the pair in the bench process. Each kill: " +
      `${s.writes_around} writes acknowledged, SIGKILL of the active broker at a random point ` +
      `of the heartbeat, ${s.writes_around} writes sent after it acknowledged, every write ` +
      "checked against the store, the killed broker restarted (it comes back passive, so " +
      `kills alternate between primary and backup); ${s.kills} kills of the active broker, ` +
      "then one of the passive one. Failover time is SIGKILL to the first acknowledgement of " +
      "a write sent after it; lost is acknowledged but not in the store, duplicated a key at " +
      "revision 2 or more, phantoms applied after their caller was told they failed. " +
      `Part 2, stores: state-set then state-get with ${s.in_flight} requests in flight from ` +
      `one MdpClient, ${WARMUP_MS} ms warm-up then ${s.measure_ms} ms each, keys ` +
      `k0..k${KEYS - 1}, 32-byte values; a fresh broker, state worker(s) (4 broker ` +
      "connections x capacity 64) and database per run. Both stores reply after the write " +
      "is durable as their labels say (settings read from the PostgreSQL server).",
    tables: [
      {
        title: "Broker pair failover",
        rows: failoverRows,
        columns: [
          { header: "kill", show: "label" },
          { header: "quiet/runs", show: "quiet" },
          { header: "failover ms (median)", show: "median:failover ms" },
          { header: "range", show: "range:failover ms" },
          { header: "writes", show: "sum:writes" },
          { header: "failed", show: "sum:failed" },
          { header: "lost", show: "sum:lost" },
          { header: "duplicated", show: "sum:duplicated" },
          { header: "phantoms", show: "sum:phantoms" },
          { header: "rejoin ms (median)", show: "median:rejoin ms" },
        ],
      },
      {
        title: "State sets and gets per second by store",
        rows: stateRows,
        columns: [
          { header: "store", show: "label" },
          { header: "operation", show: "param:operation" },
          { header: "ops/s (median)", show: "median:ops/s" },
          { header: "range", show: "range:ops/s" },
          { header: "p50 ms", show: "median:p50 ms", decimals: 2 },
          { header: "p99 ms", show: "median:p99 ms", decimals: 2 },
          { header: "errors", show: "sum:errors" },
        ],
      },
    ],
    notes: perKill,
    checks: [
      {
        name: "no acknowledged write lost",
        value: { rows: failoverRows, metric: "lost", stat: "sum", combine: "sum" },
        op: "==",
        target: 0,
      },
      {
        name: "no write applied twice",
        value: { rows: failoverRows, metric: "duplicated", stat: "sum", combine: "sum" },
        op: "==",
        target: 0,
      },
      {
        name: "no phantom write",
        value: { rows: failoverRows, metric: "phantoms", stat: "sum", combine: "sum" },
        op: "==",
        target: 0,
      },
    ],
    data: { kills, postgres: pg },
  };
});
