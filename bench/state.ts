/**
 * `deno task bench:state`: state-set and state-get through the broker with
 * many requests in flight, next to Redis SET/GET through ioredis in the same
 * run. The broker and the state service are the real components (`main.ts
 * broker`, `main.ts state`) in child processes; the client is here.
 *
 * Durability differs and is printed with the results: plantd-ts replies after
 * its group commit is synced (SQLite WAL, synchronous=FULL by default);
 * Redis on this machine keeps nothing on disk (`--save "" --appendonly no`).
 *
 * Each side runs {@link ROUNDS} times, interleaved (fresh broker, state
 * service and database each round); the table shows the median round of each
 * operation, and the rounds are listed under it: the machine is shared and
 * fsync times vary, so one run says little.
 *
 * Environment: BENCH_MEASURE_MS (default 3000), BENCH_IN_FLIGHT (default 256),
 * BENCH_SYNCHRONOUS (full|normal, default full), BENCH_REDIS (127.0.0.1:6379),
 * BENCH_ROUNDS (default 3).
 *
 * @module
 */
import { Redis } from "ioredis";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { num, summarize, type Summary, table, writeBenchmarksSection } from "./_stats.ts";
import { closedLoop, freePort, startComponent, stopAll, until } from "./_components.ts";

const MEASURE_MS = Number(Deno.env.get("BENCH_MEASURE_MS") ?? "3000");
const IN_FLIGHT = Number(Deno.env.get("BENCH_IN_FLIGHT") ?? "256");
const SYNCHRONOUS = Deno.env.get("BENCH_SYNCHRONOUS") ?? "full";
const REDIS = Deno.env.get("BENCH_REDIS") ?? "127.0.0.1:6379";
const ROUNDS = Number(Deno.env.get("BENCH_ROUNDS") ?? "3");
const KEYS = 100_000;
const VALUE = "v".repeat(32);
const LOOP = { warmupMs: 500, measureMs: MEASURE_MS, maxOps: 2_000_000 };
const TARGET_WRITES = 25_000;
const TARGET_READS = 50_000;
const SECTION = "## State (deno task bench:state)";
/** Only a full default run replaces the section in BENCHMARKS.md. */
const NO_WRITE = Deno.env.get("BENCH_NO_WRITE") === "1" || Deno.env.has("BENCH_MEASURE_MS");
const lines: string[] = [];
/** Prints a line and keeps it for BENCHMARKS.md. */
function out(line = ""): void {
  console.log(line);
  lines.push(line);
}

const watchdog = setTimeout(async () => {
  console.error("bench:state: watchdog expired, stopping");
  await stopAll();
  Deno.exit(2);
}, 120_000 * ROUNDS);

async function plantd(): Promise<{ set: Summary; get: Summary }> {
  const dir = await Deno.makeTempDir({ prefix: "bench-state-" });
  const endpoint = `tcp://127.0.0.1:${freePort()}`;
  const broker = startComponent("broker", ["--endpoint", endpoint, "--health-port", "0"], {
    PLANTD_BROKER_BUSES: "[]",
  });
  const state = startComponent("state", [
    "--db",
    `${dir}/state.db`,
    "--broker-endpoint",
    endpoint,
    "--health-port",
    "0",
    "--bus-endpoint",
    "",
    "--synchronous",
    SYNCHRONOUS,
  ]);
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
    const setRun = await closedLoop(IN_FLIGHT, (i) => call("state-set", i), LOOP);
    const getRun = await closedLoop(IN_FLIGHT, (i) => call("state-get", i), LOOP);
    return {
      set: summarize(setRun.latencies, setRun.count, setRun.errors, setRun.seconds),
      get: summarize(getRun.latencies, getRun.count, getRun.errors, getRun.seconds),
    };
  } finally {
    await client.close();
    await state.stop();
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

async function redis(): Promise<{ set: Summary; get: Summary } | string> {
  const [host, port] = REDIS.split(":");
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
    return `Redis at ${REDIS} not reachable: ${(error as Error).message}`;
  }
  try {
    const setRun = await closedLoop(
      IN_FLIGHT,
      (i) => client.set(`bench:k${i % KEYS}`, VALUE),
      LOOP,
    );
    const getRun = await closedLoop(IN_FLIGHT, (i) => client.get(`bench:k${i % KEYS}`), LOOP);
    return {
      set: summarize(setRun.latencies, setRun.count, setRun.errors, setRun.seconds),
      get: summarize(getRun.latencies, getRun.count, getRun.errors, getRun.seconds),
    };
  } finally {
    client.disconnect();
  }
}

function row(system: string, op: string, s: Summary): string[] {
  return [
    system,
    op,
    String(IN_FLIGHT),
    num(s.perSecond),
    num(s.p50Ms, 2),
    num(s.p99Ms, 2),
    String(s.errors),
  ];
}

try {
  const started = new Date().toISOString();
  console.log(
    `# bench:state (${new Date().toISOString()}, ${navigator.hardwareConcurrency} cores)\n`,
  );
  const ourRounds: Array<{ set: Summary; get: Summary }> = [];
  const theirRounds: Array<{ set: Summary; get: Summary }> = [];
  let redisProblem: string | undefined;
  for (let round = 0; round < ROUNDS; round++) {
    ourRounds.push(await plantd());
    const theirs = await redis();
    if (typeof theirs === "string") redisProblem = theirs;
    else theirRounds.push(theirs);
  }
  /** The round with the median ops/s of `op`. */
  const median = (runs: Array<{ set: Summary; get: Summary }>, op: "set" | "get") =>
    [...runs].sort((a, b) => a[op].perSecond - b[op].perSecond)[runs.length >> 1]![op];
  const ours = { set: median(ourRounds, "set"), get: median(ourRounds, "get") };
  const rows = [
    row(`plantd-ts via broker (synchronous=${SYNCHRONOUS})`, "state-set", ours.set),
    row(`plantd-ts via broker (synchronous=${SYNCHRONOUS})`, "state-get", ours.get),
  ];
  if (redisProblem) out(redisProblem);
  else {
    rows.push(
      row("Redis via ioredis (no persistence)", "SET", median(theirRounds, "set")),
      row("Redis via ioredis (no persistence)", "GET", median(theirRounds, "get")),
    );
  }
  out(
    table(["system", "operation", "in flight", "ops/s", "p50 ms", "p99 ms", "errors"], rows),
  );
  out();
  const list = (runs: Array<{ set: Summary; get: Summary }>, op: "set" | "get") =>
    runs.map((r) => num(r[op].perSecond)).join(" / ");
  out(
    `Rounds (ops/s, in run order): plantd-ts state-set ${list(ourRounds, "set")}, state-get ${
      list(ourRounds, "get")
    }; Redis SET ${list(theirRounds, "set")}, GET ${list(theirRounds, "get")}.`,
  );
  out();
  const verdict = (ok: boolean) => ok ? "PASS" : "FAIL";
  out(
    `- durable writes >= ${num(TARGET_WRITES)}/s: ${num(ours.set.perSecond)}/s ${
      verdict(ours.set.perSecond >= TARGET_WRITES)
    }`,
  );
  out(
    `- reads >= ${num(TARGET_READS)}/s: ${num(ours.get.perSecond)}/s ${
      verdict(ours.get.perSecond >= TARGET_READS)
    }`,
  );
  out(
    `- durability: plantd-ts acknowledges a write after its group commit is synced (WAL, synchronous=${SYNCHRONOUS}); Redis here keeps nothing on disk.`,
  );
  if (!NO_WRITE) {
    await writeBenchmarksSection(
      SECTION,
      `${SECTION}\n\nCommand: \`deno task bench:state\` (bench/state.ts). Run ${started} on ` +
        `${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}. The broker (\`main.ts broker\`) ` +
        `and the state service (\`main.ts state\`: 4 broker connections x capacity 64, WAL, ` +
        `synchronous=${SYNCHRONOUS}) run as child processes; the MdpClient and the ioredis client run in ` +
        `the bench process; ${IN_FLIGHT} requests in flight, 500 ms warm-up, ${MEASURE_MS} ms measured; ` +
        `${ROUNDS} rounds each, interleaved, median shown; ` +
        `keys k0..k99999, 32-byte values.\n\n${lines.join("\n")}\n`,
    );
  }
} finally {
  clearTimeout(watchdog);
  await stopAll();
}
