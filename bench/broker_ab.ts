/**
 * `deno task bench:broker:ab`: echo round trips through the broker on this
 * tree against another commit's (`baseline`, default the last landed one
 * before the ZMTP hardening), in the same run: both systems (broker, echo
 * worker, client: each side's own code, in child processes) are up at once,
 * and each round measures 1, 16 and 256 requests in flight on both, in an
 * order that rotates between rounds (bench/harness.ts). This tree runs with
 * ZMTP heartbeats on at the config's defaults (5 s, timeout and TTL 15 s);
 * the baseline has none. The echo worker has 1 connection of capacity
 * `worker_capacity` (1, its default).
 *
 * @module
 */
import { num } from "./_stats.ts";
import { type Child, runBench, spawnReady, stopAll } from "./harness.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const HEARTBEAT_MS = "5000";
const IN_FLIGHT = [1, 16, 256];
const WARMUP_MS = 300;

const git = async (...args: string[]) => {
  const out = await new Deno.Command("git", { args: ["-C", ROOT, ...args], stdout: "piped" })
    .output();
  return new TextDecoder().decode(out.stdout).trim();
};

interface Side {
  name: "baseline" | "current";
  client: Child;
}

async function system(
  name: Side["name"],
  tree: string,
  capacity: number,
  env: Record<string, string>,
): Promise<Side> {
  const broker = await spawnReady({
    name: `${name} broker`,
    script: "bench/procs/broker.ts",
    args: ["tcp://127.0.0.1:0", "auto"],
    tree,
    env,
  });
  const endpoint = broker.ready.split(" ")[0]!;
  await spawnReady({
    name: `${name} echo`,
    script: "bench/procs/echo_worker.ts",
    args: [endpoint, "1", String(capacity), "auto"],
    tree,
    env,
  });
  // The client is this tree's script importing the side's own mdp/client.ts.
  const { child } = await spawnReady({
    name: `${name} client`,
    script: `${ROOT}/bench/procs/ab_client.ts`,
    args: [tree, endpoint],
    env,
  });
  return { name, client: child };
}

async function measure(side: Side, inFlight: number, ms: number) {
  await side.client.send(`RUN ${inFlight} ${WARMUP_MS}`);
  await side.client.line("RESULT", 60_000);
  await side.client.send(`RUN ${inFlight} ${ms}`);
  const r = JSON.parse(await side.client.line("RESULT", 60_000)) as {
    count: number;
    errors: number;
    seconds: number;
    p50Ms: number;
    p99Ms: number;
  };
  return { "req/s": r.count / r.seconds, "p50 ms": r.p50Ms, "p99 ms": r.p99Ms, errors: r.errors };
}

await runBench({
  name: "broker-ab",
  title: "Broker against the code before (deno task bench:broker:ab)",
  command: "`deno task bench:broker:ab` (bench/broker_ab.ts)",
  settings: {
    baseline: { env: "BENCH_BASELINE", default: "dc054ab", help: "commit to compare with" },
    measure_ms: { env: "BENCH_MEASURE_MS", default: 3000, help: "measured time per run" },
    worker_capacity: {
      env: "BENCH_WORKER_CAPACITY",
      default: 1,
      help: "requests the echo worker's one connection takes at once",
    },
  },
}, async (bench) => {
  const { baseline, measure_ms: measureMs, worker_capacity: capacity } = bench.settings;
  const baselineCommit = await git("rev-parse", baseline);
  if (!baselineCommit) throw new Error(`baseline '${baseline}' is not a commit`);
  const baselineTree = await Deno.makeTempDir({ prefix: "bench-baseline-" });
  await git("worktree", "add", "--detach", baselineTree, baselineCommit);
  const short = baselineCommit.slice(0, 12);
  const worker = `1 echo connection of capacity ${capacity}${
    capacity === 1 ? " (the default)" : ""
  }`;
  try {
    const sides = {
      baseline: await system("baseline", baselineTree, capacity, {}),
      current: await system("current", ROOT, capacity, { BENCH_WIRE_HEARTBEAT_MS: HEARTBEAT_MS }),
    };
    const units = IN_FLIGHT.flatMap((n) =>
      (["baseline", "current"] as const).map((name) => {
        const label = name === "baseline"
          ? `baseline ${short} (no ZMTP heartbeats), ${worker}`
          : `this tree, ZMTP heartbeats on (config defaults), ${worker}`;
        bench.row(`${name}@${n}`, label, { "in flight": n });
        return { key: `${name}@${n}`, side: sides[name], inFlight: n };
      })
    );
    await bench.rounds(units, ({ side, inFlight }) => measure(side, inFlight, measureMs));
  } finally {
    // The children run in the baseline tree: stop them before removing it.
    await stopAll();
    await git("worktree", "remove", "--force", baselineTree);
  }
  const rows = IN_FLIGHT.flatMap((n) => [`baseline@${n}`, `current@${n}`]);
  const ratios = IN_FLIGHT.map((n) => {
    const ratio = bench.stats(`current@${n}`, "req/s").median /
      bench.stats(`baseline@${n}`, "req/s").median;
    return `${n} in flight ${num(ratio * 100, 1)}%`;
  });
  return {
    description: `Baseline ${short} against this tree with ZMTP heartbeats on (ivl ` +
      `${HEARTBEAT_MS} ms, timeout and TTL 3x: the config defaults); plaintext ZMTP sockets, ` +
      `${worker}, 16-byte echo; per run ${WARMUP_MS} ms warm-up, then ${measureMs} ms. Broker, ` +
      "worker and client of each side run in child processes, all up at once.",
    tables: [{
      rows,
      columns: [
        { header: "code", show: "label" },
        { header: "in flight", show: "param:in flight" },
        { header: "req/s (median)", show: "median:req/s" },
        { header: "req/s range", show: "range:req/s" },
        { header: "p50 ms", show: "median:p50 ms", decimals: 3 },
        { header: "p99 ms", show: "median:p99 ms", decimals: 3 },
        { header: "errors", show: "sum:errors" },
      ],
    }],
    notes: [`This tree against the baseline, median req/s: ${ratios.join(", ")}.`],
    data: { baselineCommit },
  };
});
