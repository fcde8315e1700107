/**
 * BENCHMARKS.md is generated (bench/report.ts): regenerating it from the
 * committed bench/results/ must give the committed file byte for byte, so an
 * edit by hand fails here; and a run with overridden settings (or one that
 * ended early) never reaches it, even when it is the newest.
 */
import assert from "node:assert/strict";
import { type BenchResultInput, parseResult, RESULT_FORMAT } from "../bench/_result.ts";
import { BENCHMARKS_FILE, generate, requireShowable, RESULTS_DIR } from "../bench/report.ts";
import { readSettings } from "../bench/harness.ts";

Deno.test("BENCHMARKS.md is exactly what `deno task bench:report` generates from bench/results/", async () => {
  const { markdown } = await generate(RESULTS_DIR);
  const committed = await Deno.readTextFile(BENCHMARKS_FILE);
  assert.ok(
    committed === markdown,
    "BENCHMARKS.md differs from the report of bench/results/: run `deno task bench:report` " +
      "(never edit BENCHMARKS.md by hand)",
  );
});

/** A minimal valid result of bench `demo` whose one row measured `rate` req/s. */
function result(
  time: string,
  rate: number,
  extra: Partial<BenchResultInput> = {},
): BenchResultInput {
  return {
    format: RESULT_FORMAT,
    bench: "demo",
    title: "Demo (deno task bench:demo)",
    command: "`deno task bench:demo`",
    time,
    commit: "0123456789abcdef0123456789abcdef01234567",
    dirty: false,
    machine: { hostname: "h", cores: 2, cpu: "cpu", os: "linux", kernel: "6", memoryBytes: 1e9 },
    deno: "2.9.6",
    settings: { rounds: 3 },
    defaults: { rounds: 3 },
    overridden: [],
    quiet: { minIdle: 0.9, maxWaitMs: 20_000 },
    rounds: 3,
    description: "A demo.",
    tables: [{
      rows: ["a"],
      columns: [{ header: "system", show: "label" }, { header: "req/s", show: "median:req/s" }, {
        header: "range",
        show: "range:req/s",
      }],
    }],
    rows: [{
      key: "a",
      label: "system a",
      params: {},
      runs: [0, 1, 2].map((round) => ({
        round,
        at: time,
        quiet: { idle: 0.95, waitedMs: 0, ok: true },
        otherCores: 0.01,
        metrics: { "req/s": rate + round },
      })),
    }],
    notes: [],
    checks: [{
      name: "req/s >= 100",
      value: { rows: ["a"], metric: "req/s" },
      op: ">=",
      target: 100,
    }],
    ...extra,
  };
}

function includes(text: string, part: string): void {
  assert.ok(text.includes(part), `expected to find ${JSON.stringify(part)} in:\n${text}`);
}

async function reportOf(results: BenchResultInput[]): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "bench-report-" });
  try {
    for (const [i, r] of results.entries()) {
      await Deno.writeTextFile(`${dir}/demo-${i}.json`, JSON.stringify(r));
    }
    return (await generate(dir, [], "results")).markdown;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the report shows the median and range of the newest default run", async () => {
  const markdown = await reportOf([result("2026-01-01T00:00:00.000Z", 1000)]);
  includes(markdown, "## Demo (deno task bench:demo)");
  includes(markdown, "| system a | 1,001 | 1,000–1,002 |");
  includes(markdown, "- PASS req/s >= 100: 1,001");
});

Deno.test("the report never shows a run with overridden settings, even the newest", async () => {
  const markdown = await reportOf([
    result("2026-01-01T00:00:00.000Z", 1000),
    result("2026-02-01T00:00:00.000Z", 5000, { overridden: ["rounds"], settings: { rounds: 1 } }),
  ]);
  includes(markdown, "1,000–1,002");
  assert.ok(!markdown.includes("5,001"), "an overridden run reached the report");
  const named = result("t", 1, { overridden: ["measure_ms"], settings: { measure_ms: 1 } });
  assert.throws(
    () => requireShowable({ file: "x.json", result: parseResult(JSON.stringify(named), "x") }),
    /refusing x\.json for BENCHMARKS\.md: settings overridden \(measure_ms\)/,
  );
});

Deno.test("the report skips incomplete runs and prefers a clean commit to a newer dirty one", async () => {
  const markdown = await reportOf([
    result("2026-01-01T00:00:00.000Z", 1000),
    result("2026-02-01T00:00:00.000Z", 2000, { dirty: true }),
    result("2026-03-01T00:00:00.000Z", 3000, { incomplete: "boom" }),
  ]);
  includes(markdown, "1,000–1,002");
  assert.ok(!markdown.includes("2,001") && !markdown.includes("3,001"));
  const onlyDirty = await reportOf([result("2026-02-01T00:00:00.000Z", 2000, { dirty: true })]);
  includes(onlyDirty, "(dirty:");
});

Deno.test("bench settings: environment and flags override defaults and are listed", () => {
  const spec = {
    measure_ms: { env: "BENCH_MEASURE_MS", default: 3000, help: "" },
    systems: { env: "BENCH_SYSTEMS", default: "a,b", help: "" },
  };
  assert.deepEqual(readSettings(spec, {}, []).overridden, []);
  assert.deepEqual(readSettings(spec, { BENCH_MEASURE_MS: "3000" }, []).overridden, []);
  const changed = readSettings(spec, { BENCH_MEASURE_MS: "300" }, ["--systems=a"]);
  assert.deepEqual(changed.values, { measure_ms: 300, systems: "a" });
  assert.deepEqual(changed.overridden, ["measure_ms", "systems"]);
  assert.throws(() => readSettings(spec, { BENCH_MEASURE_MS: "fast" }, []), /not a number/);
  assert.throws(() => readSettings(spec, {}, ["--nope=1"]), /unknown argument/);
});
