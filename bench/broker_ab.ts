/**
 * `deno task bench:broker:ab`: echo round trips through the broker on this
 * tree against another commit's (BENCH_BASELINE, default the last landed one
 * before the ZMTP hardening), in the same run: both systems (broker, echo
 * worker, client: each side's own code) run at once, and each round measures
 * 1, 16 and 256 requests in flight on both, in alternating order. Median and
 * range over BENCH_ROUNDS (default 3) rounds. This tree runs with ZMTP
 * heartbeats on at the config's defaults (5 s, timeout and TTL 15 s); the
 * baseline has none. Worker capacity 256 (as bench:broker) unless
 * BENCH_WORKER_CAPACITY says otherwise.
 *
 * @module
 */
import { median, num, saveResult, table, writeBenchmarksSection } from "./_stats.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const BASELINE = Deno.env.get("BENCH_BASELINE") ?? "dc054ab";
const ROUNDS = Number(Deno.env.get("BENCH_ROUNDS") ?? "3");
const MEASURE_MS = Number(Deno.env.get("BENCH_MEASURE_MS") ?? "3000");
const CAPACITY = Deno.env.get("BENCH_WORKER_CAPACITY") ?? "256";
const HEARTBEAT_MS = "5000";
const IN_FLIGHT = [1, 16, 256];
const NO_WRITE = Deno.env.get("BENCH_NO_WRITE") === "1" || Deno.env.has("BENCH_BASELINE") ||
  Deno.env.has("BENCH_ROUNDS") || Deno.env.has("BENCH_MEASURE_MS") ||
  Deno.env.has("BENCH_WORKER_CAPACITY");
const SECTION = "## Broker against the code before (deno task bench:broker:ab)";

const children: Deno.ChildProcess[] = [];

/** A child whose stdout lines are read as they come. */
function spawn(tree: string, script: string, args: string[], env: Record<string, string>) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", `${tree}/deno.json`, script, ...args],
    cwd: tree,
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  children.push(child);
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const writer = child.stdin.getWriter();
  return {
    child,
    async line(): Promise<string> {
      while (true) {
        const at = buffered.indexOf("\n");
        if (at >= 0) {
          const line = buffered.slice(0, at);
          buffered = buffered.slice(at + 1);
          return line;
        }
        const { value, done } = await reader.read();
        if (done) throw new Error(`${script} ended`);
        buffered += value;
      }
    },
    write: (text: string) => writer.write(new TextEncoder().encode(text)),
  };
}

interface Result {
  count: number;
  errors: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
}

async function system(tree: string, env: Record<string, string>) {
  const broker = spawn(tree, "bench/procs/broker.ts", ["tcp://127.0.0.1:0", "auto"], env);
  const endpoint = (await broker.line()).split(" ")[1]!;
  const worker = spawn(tree, "bench/procs/echo_worker.ts", [endpoint, "1", CAPACITY, "auto"], env);
  await worker.line();
  const client = spawn(ROOT, `${ROOT}/bench/procs/ab_client.ts`, [tree, endpoint], env);
  if ((await client.line()) !== "READY") throw new Error("client not ready");
  return {
    async run(inFlight: number): Promise<Result> {
      await client.write(`RUN ${inFlight} 300\n`); // warm-up
      await client.line();
      await client.write(`RUN ${inFlight} ${MEASURE_MS}\n`);
      return JSON.parse((await client.line()).slice("RESULT ".length));
    },
  };
}

const git = async (...args: string[]) => {
  const out = await new Deno.Command("git", { args: ["-C", ROOT, ...args], stdout: "piped" })
    .output();
  return new TextDecoder().decode(out.stdout).trim();
};

const baselineTree = await Deno.makeTempDir({ prefix: "bench-baseline-" });
try {
  const baselineCommit = await git("rev-parse", BASELINE);
  await git("worktree", "add", "--detach", baselineTree, baselineCommit);
  const started = new Date().toISOString();
  console.log(`# bench:broker:ab (${started}): this tree against ${baselineCommit.slice(0, 12)}\n`);
  const systems = {
    baseline: await system(baselineTree, {}),
    current: await system(ROOT, { BENCH_WIRE_HEARTBEAT_MS: HEARTBEAT_MS }),
  };
  const results: Record<string, Record<number, Result[]>> = { baseline: {}, current: {} };
  for (let round = 0; round < ROUNDS; round++) {
    for (const n of IN_FLIGHT) {
      const order = round % 2 === 0 ? ["baseline", "current"] : ["current", "baseline"];
      for (const name of order as ("baseline" | "current")[]) {
        const result = await systems[name].run(n);
        (results[name]![n] ??= []).push(result);
        console.error(
          `  round ${round + 1} ${name} @${n}: ${num(result.count / result.seconds)} req/s, ` +
            `p50 ${num(result.p50Ms, 3)} ms, errors ${result.errors}`,
        );
      }
    }
  }
  const rate = (r: Result) => r.count / r.seconds;
  const rows = IN_FLIGHT.map((n) => {
    const [base, cur] = [results.baseline![n]!, results.current![n]!];
    const cell = (rs: Result[]) =>
      `${num(median(rs.map(rate)))} (${num(Math.min(...rs.map(rate)))}-${
        num(Math.max(...rs.map(rate)))
      })`;
    return [
      String(n),
      cell(base),
      cell(cur),
      `${num(median(cur.map(rate)) / median(base.map(rate)) * 100, 1)}%`,
      `${num(median(base.map((r) => r.p50Ms)), 3)} / ${num(median(cur.map((r) => r.p50Ms)), 3)}`,
      `${base.reduce((a, r) => a + r.errors, 0)} / ${cur.reduce((a, r) => a + r.errors, 0)}`,
    ];
  });
  const report = [
    `Baseline ${baselineCommit.slice(0, 12)} (no ZMTP heartbeats) against this tree with ZMTP ` +
    `heartbeats on (ivl ${HEARTBEAT_MS} ms, timeout and TTL 3x: the config defaults); plaintext ` +
    `ZMTP sockets, one echo worker connection of capacity ${CAPACITY}, 16-byte echo, ${ROUNDS} ` +
    `interleaved rounds of ${MEASURE_MS / 1000} s per row and system; req/s median (range).`,
    "",
    table([
      "in flight",
      "baseline req/s",
      "this tree req/s",
      "this / baseline",
      "p50 ms baseline / this",
      "errors baseline / this",
    ], rows),
  ].join("\n");
  console.log(report);
  const saved = await saveResult("broker-ab", {
    baseline: baselineCommit,
    rounds: ROUNDS,
    measureMs: MEASURE_MS,
    capacity: CAPACITY,
    heartbeatIvlMs: HEARTBEAT_MS,
    overridden: NO_WRITE,
  }, results);
  console.log(`\nraw result: ${saved}`);
  if (!NO_WRITE) {
    await writeBenchmarksSection(
      SECTION,
      `${SECTION}\n\nCommand: \`deno task bench:broker:ab\` (bench/broker_ab.ts). Run ${started}, ` +
        `${navigator.hardwareConcurrency} cores.\n\n${report}\n`,
    );
  }
} finally {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status.catch(() => {});
  }
  await git("worktree", "remove", "--force", baselineTree);
}
