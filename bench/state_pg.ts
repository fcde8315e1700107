/**
 * `deno task bench:state:pg`: state-set and state-get per second through the
 * broker on the embedded libSQL store, on PostgreSQL with one state worker,
 * and on PostgreSQL with two state workers sharing the database, in the same
 * run. {@link measureStateStores} is the reusable part (bench/ha.ts calls it
 * too); running this file prints the table and keeps the raw result
 * (bench/results/state-pg-*.json).
 *
 * Each round starts every setup afresh (broker, state worker processes,
 * database: a new file, or a new PostgreSQL database) and measures it; the
 * setups take turns within a round, in an order that alternates between
 * rounds, so the shared machine's noise falls on all of them alike. Cells are
 * the median over rounds with the range.
 *
 * Durability is the same on both: a reply is sent after its group commit is
 * durable (libSQL: WAL with synchronous=FULL; PostgreSQL: the server's
 * synchronous_commit, printed with the results).
 *
 * Environment: BENCH_MEASURE_MS (default 3000), BENCH_IN_FLIGHT (default
 * 256), BENCH_ROUNDS (default 3), BENCH_PG_URL (an admin URL of the server,
 * default PLANTD_TEST_PG_URL or postgres://postgres@127.0.0.1:5432/postgres),
 * BENCH_POOL_SIZE (PostgreSQL connections per worker, default 8).
 *
 * @module
 */
import postgres from "postgres";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { PG_ADMIN_URL, randomDatabaseName } from "../tests/_postgres.ts";
import { median, num, saveResult, summarize, type Summary, table } from "./_stats.ts";
import {
  closedLoop,
  type Component,
  freePort,
  startComponent,
  stopAll,
  until,
} from "./_components.ts";

/** What is measured: the store and how many state workers share it. */
export type StateSetup = "libsql" | "postgres-1" | "postgres-2";

export const STATE_SETUPS: readonly StateSetup[] = ["libsql", "postgres-1", "postgres-2"];

/** Options of {@link measureStateStores}. */
export interface StateBenchOptions {
  /** Rounds (each measures every setup once). @default 3 */
  rounds?: number;
  /** Measured time per operation and setup. @default 3000 */
  measureMs?: number;
  /** Unmeasured warm-up before each measurement. @default 500 */
  warmupMs?: number;
  /** Requests in flight from the client. @default 256 */
  inFlight?: number;
  /** Admin URL of the PostgreSQL server (databases are created and dropped there). */
  pgAdminUrl?: string;
  /** PostgreSQL connections per state worker. @default 8 */
  poolSize?: number;
  setups?: readonly StateSetup[];
  /** Progress lines. */
  log?: (line: string) => void;
}

/** One measurement of one setup. */
export interface StateRound {
  setup: StateSetup;
  round: number;
  set: Summary;
  get: Summary;
}

/** What {@link measureStateStores} returns. */
export interface StateBenchResult {
  rounds: StateRound[];
  /** Table rows: setup, operation, ops/s median (range), p50 ms, p99 ms (medians), errors. */
  rows: string[][];
  /** The markdown table with its header. */
  table: string;
  /** The PostgreSQL server's synchronous_commit and fsync, for the durability note. */
  postgres: { synchronousCommit: string; fsync: string; version: string };
}

const KEYS = 100_000;
const VALUE = "v".repeat(32);

export const SETUP_NAMES: Record<StateSetup, string> = {
  "libsql": "libSQL, 1 worker (WAL, synchronous=full)",
  "postgres-1": "PostgreSQL, 1 worker",
  "postgres-2": "PostgreSQL, 2 workers",
};

/** Starts a setup's broker, workers and database; returns the broker endpoint and a stop. */
async function startSetup(
  setup: StateSetup,
  admin: postgres.Sql,
  adminUrl: string,
  poolSize: number,
): Promise<{ endpoint: string; healthPorts: number[]; stop(): Promise<void> }> {
  const endpoint = `tcp://127.0.0.1:${freePort()}`;
  const components: Component[] = [
    startComponent("broker", ["--endpoint", endpoint, "--health-port", "0"], {
      PLANTD_BROKER_BUSES: "[]",
    }),
  ];
  let db: string;
  let cleanup: () => Promise<void>;
  if (setup === "libsql") {
    const dir = await Deno.makeTempDir({ prefix: "bench-state-" });
    db = `${dir}/state.db`;
    cleanup = () => Deno.remove(dir, { recursive: true });
  } else {
    const name = randomDatabaseName();
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

/** Measures state-set, then state-get, on a started setup. */
async function measure(
  endpoint: string,
  options: Required<Pick<StateBenchOptions, "inFlight" | "measureMs" | "warmupMs">>,
  healthPorts: number[],
): Promise<{ set: Summary; get: Summary }> {
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
    // Every worker connected to the broker (UP), not just the first to answer.
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
    const loop = { warmupMs: options.warmupMs, measureMs: options.measureMs, maxOps: 2_000_000 };
    const setRun = await closedLoop(options.inFlight, (i) => call("state-set", i), loop);
    const getRun = await closedLoop(options.inFlight, (i) => call("state-get", i), loop);
    return {
      set: summarize(setRun.latencies, setRun.count, setRun.errors, setRun.seconds),
      get: summarize(getRun.latencies, getRun.count, getRun.errors, getRun.seconds),
    };
  } finally {
    await client.close();
  }
}

/** Runs the rounds; see the module doc. */
export async function measureStateStores(
  options: StateBenchOptions = {},
): Promise<StateBenchResult> {
  const rounds = options.rounds ?? 3;
  const setups = options.setups ?? STATE_SETUPS;
  const settings = {
    inFlight: options.inFlight ?? 256,
    measureMs: options.measureMs ?? 3000,
    warmupMs: options.warmupMs ?? 500,
  };
  const adminUrl = options.pgAdminUrl ?? PG_ADMIN_URL;
  const poolSize = options.poolSize ?? 8;
  const log = options.log ?? (() => {});
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  const results: StateRound[] = [];
  try {
    const [sync] = await admin`show synchronous_commit`;
    const [fsync] = await admin`show fsync`;
    const [version] = await admin`show server_version`;
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? [...setups] : [...setups].reverse();
      for (const setup of order) {
        const started = await startSetup(setup, admin, adminUrl, poolSize);
        try {
          const { set, get } = await measure(started.endpoint, settings, started.healthPorts);
          results.push({ setup, round, set, get });
          log(
            `round ${round + 1} ${SETUP_NAMES[setup]}: set ${num(set.perSecond)}/s, get ${
              num(get.perSecond)
            }/s, errors ${set.errors + get.errors}`,
          );
        } finally {
          await started.stop();
        }
      }
    }
    const rows: string[][] = [];
    for (const setup of setups) {
      const mine = results.filter((r) => r.setup === setup);
      for (const op of ["set", "get"] as const) {
        const rates = mine.map((r) => r[op].perSecond);
        rows.push([
          SETUP_NAMES[setup],
          `state-${op}`,
          `${num(median(rates))} (${num(Math.min(...rates))}-${num(Math.max(...rates))})`,
          num(median(mine.map((r) => r[op].p50Ms)), 2),
          num(median(mine.map((r) => r[op].p99Ms)), 2),
          String(mine.reduce((sum, r) => sum + r[op].errors, 0)),
        ]);
      }
    }
    return {
      rounds: results,
      rows,
      table: table(
        ["store", "operation", "ops/s median (range)", "p50 ms", "p99 ms", "errors"],
        rows,
      ),
      postgres: {
        synchronousCommit: String(sync?.synchronous_commit),
        fsync: String(fsync?.fsync),
        version: String(version?.server_version),
      },
    };
  } finally {
    await admin.end({ timeout: 1 });
  }
}

if (import.meta.main) {
  const options: StateBenchOptions = {
    rounds: Number(Deno.env.get("BENCH_ROUNDS") ?? "3"),
    measureMs: Number(Deno.env.get("BENCH_MEASURE_MS") ?? "3000"),
    inFlight: Number(Deno.env.get("BENCH_IN_FLIGHT") ?? "256"),
    poolSize: Number(Deno.env.get("BENCH_POOL_SIZE") ?? "8"),
    pgAdminUrl: Deno.env.get("BENCH_PG_URL") ?? PG_ADMIN_URL,
    log: (line) => console.error(`  ${line}`),
  };
  const watchdog = setTimeout(async () => {
    console.error("bench:state:pg: watchdog expired, stopping");
    await stopAll();
    Deno.exit(2);
  }, 90_000 * options.rounds! * STATE_SETUPS.length);
  try {
    console.log(
      `# bench:state:pg (${new Date().toISOString()}, ${navigator.hardwareConcurrency} cores)\n`,
    );
    const result = await measureStateStores(options);
    console.log(result.table);
    console.log(
      `\n${options.rounds} interleaved rounds, ${options.measureMs} ms measured per operation ` +
        `(500 ms warm-up), ${options.inFlight} requests in flight from one MdpClient, keys ` +
        `k0..k99999, 32-byte values; state workers with 4 broker connections x capacity 64, ` +
        `${options.poolSize} PostgreSQL connections each. PostgreSQL ${result.postgres.version}, ` +
        `synchronous_commit=${result.postgres.synchronousCommit}, fsync=${result.postgres.fsync}.`,
    );
    const saved = await saveResult("state-pg", {
      ...options,
      log: undefined,
      pgAdminUrl: undefined,
      postgres: result.postgres,
    }, result.rounds);
    console.log(`\nraw result: ${saved}`);
  } finally {
    clearTimeout(watchdog);
    await stopAll();
  }
}
