/**
 * Markdown for BENCHMARKS.md from raw results (bench/_result.ts): one section
 * per run, every figure computed here from the runs it holds (median and
 * range over rounds), so the file can always be regenerated and never needs
 * an edit by hand. Pure functions: bench/report.ts picks the runs and writes
 * the file, bench/harness.ts prints a run's section when it ends.
 *
 * @module
 */
import type { BenchResult, Column, Ref, Row, Table } from "./_result.ts";
import { checkSchema, columnSchema, refSchema } from "./_result.ts";
import { median, num, table } from "./_stats.ts";

/** A metric's values over the runs of a row that have it (failed runs and nulls left out). */
export function values(row: Row, metric: string): number[] {
  const out: number[] = [];
  for (const run of row.runs) {
    const value = run.metrics[metric];
    if (typeof value === "number" && Number.isFinite(value)) out.push(value);
  }
  return out;
}

/** Median, min, max and count of a row's metric (NaN when no run has it). */
export function stats(row: Row, metric: string) {
  const v = values(row, metric);
  return {
    median: median(v),
    min: v.length ? Math.min(...v) : NaN,
    max: v.length ? Math.max(...v) : NaN,
    sum: v.reduce((a, b) => a + b, 0),
    n: v.length,
  };
}

function rowOf(result: BenchResult, key: string): Row | undefined {
  return result.rows.find((r) => r.key === key);
}

/** The figure a check or a note refers to; NaN when no row has it. */
export function figure(result: BenchResult, input: Ref): number {
  const ref = refSchema.parse(input);
  const picked = ref.rows.map((key) => {
    const row = rowOf(result, key);
    if (!row) return NaN;
    const s = stats(row, ref.metric);
    if (s.n === 0) return NaN;
    return ref.stat === "sum" ? s.sum : ref.stat === "max" ? s.max : s.median;
  }).filter((v) => Number.isFinite(v));
  if (picked.length === 0) return NaN;
  if (ref.combine === "sum") return picked.reduce((a, b) => a + b, 0);
  return ref.combine === "min" ? Math.min(...picked) : Math.max(...picked);
}

/** Metric names with `prefix`, in the order the runs recorded them. */
function prefixed(row: Row, prefix: string): string[] {
  const names: string[] = [];
  for (const run of row.runs) {
    for (const name of Object.keys(run.metrics)) {
      if (name.startsWith(prefix) && !names.includes(name)) names.push(name);
    }
  }
  return names;
}

function cell(row: Row, input: Column): string {
  const column = columnSchema.parse(input);
  const [kind, arg = ""] = column.show.split(/:(.*)/s) as [string, string?];
  const d = column.decimals;
  switch (kind) {
    case "label":
      return row.label;
    case "param": {
      const value = row.params[arg];
      return value === undefined ? "" : typeof value === "number" ? num(value, d) : String(value);
    }
    case "median":
      return num(stats(row, arg).median, d);
    case "max":
      return num(stats(row, arg).max, d);
    case "sum": {
      const s = stats(row, arg);
      return s.n ? num(s.sum, d) : "n/a";
    }
    case "range": {
      const s = stats(row, arg);
      return s.n ? `${num(s.min, d)}–${num(s.max, d)}` : "n/a";
    }
    case "cpu": {
      const parts = prefixed(row, arg).map((name) =>
        `${name.slice(arg.length)} ${num(stats(row, name).median, d)}%`
      );
      return parts.length ? parts.join(", ") : "n/a";
    }
    case "quiet":
      return `${row.runs.filter((r) => r.quiet.ok).length}/${row.runs.length}`;
    case "other": {
      const others = row.runs.map((r) => r.otherCores).filter((v): v is number =>
        typeof v === "number"
      );
      return others.length ? num(Math.max(...others), 2) : "n/a";
    }
  }
  return "";
}

function renderTable(result: BenchResult, spec: Table): string {
  const rows = spec.rows.map((key) => {
    const row = rowOf(result, key);
    if (!row) return spec.columns.map((_, i) => i === 0 ? `${key} (not measured)` : "");
    return spec.columns.map((c) => cell(row, c).replaceAll("|", "\\|"));
  });
  return table(spec.columns.map((c) => c.header), rows);
}

function renderChecks(result: BenchResult): string[] {
  return result.checks.map((input) => {
    const check = checkSchema.parse(input);
    const value = figure(result, check.value);
    const target = typeof check.target === "number"
      ? check.target
      : figure(result, check.target) * check.factor;
    const d = check.decimals;
    if (!Number.isFinite(value) || !Number.isFinite(target)) {
      return `- N/A ${check.name}: not measured`;
    }
    const ok = check.op === ">="
      ? value >= target
      : check.op === ">"
      ? value > target
      : check.op === "<="
      ? value <= target
      : check.op === "<"
      ? value < target
      : value === target;
    const against = typeof check.target === "number"
      ? ""
      : ` against ${num(target / check.factor, d)}` +
        (check.factor !== 1 ? ` (ratio ${num(value / (target / check.factor), 3)})` : "");
    return `- ${ok ? "PASS" : "FAIL"} ${check.name}: ${num(value, d)}${against}`;
  });
}

function machineText(result: BenchResult): string {
  const m = result.machine;
  return `${m.cores} cores${m.cpu ? ` (${m.cpu})` : ""}, ${m.os} ${m.kernel}, ` +
    `${num(m.memoryBytes / 1e9, 1)} GB RAM, Deno ${result.deno}`;
}

function settingsText(result: BenchResult): string {
  const entries = Object.entries(result.settings);
  if (entries.length === 0) return "";
  return entries.map(([k, v]) => `${k} ${typeof v === "number" ? String(v) : JSON.stringify(v)}`)
    .join(", ");
}

function quietText(result: BenchResult): string {
  const runs = result.rows.flatMap((r) => r.runs);
  if (runs.length === 0) return "";
  const quiet = runs.filter((r) => r.quiet.ok).length;
  const lowest = Math.min(...runs.map((r) => r.quiet.idle));
  const others = runs.map((r) => r.otherCores).filter((v): v is number => typeof v === "number");
  return `Quiet-machine check before each run (at least ${
    num(result.quiet.minIdle * 100)
  }% idle, waiting at most ${num(result.quiet.maxWaitMs / 1000)} s): ${quiet} of ${runs.length} ` +
    `runs started on a quiet machine (lowest idle share ${num(lowest * 100)}%)` +
    (others.length
      ? `; processes outside the benchmark used ${num(median(others), 2)} cores (median) and ` +
        `${num(Math.max(...others), 2)} at most during a run.`
      : ".");
}

function failures(result: BenchResult): string[] {
  const out: string[] = [];
  for (const row of result.rows) {
    for (const run of row.runs) {
      if (run.error) out.push(`- ${row.label}, round ${run.round + 1}: ${run.error}`);
    }
  }
  return out;
}

/** The section of BENCHMARKS.md for one result; `file` is its path in the repository. */
export function renderSection(result: BenchResult, file: string): string {
  const out: string[] = [`## ${result.title}`, ""];
  const commit = result.commit ? result.commit.slice(0, 12) : "unknown";
  out.push(
    `Command: ${result.command}. Run ${result.time} on commit ${commit}` +
      (result.dirty
        ? " (dirty: the tree had uncommitted changes, so the code measured is not exactly that " +
          "commit)"
        : "") +
      `; ${machineText(result)}. Raw result: ${file}.`,
    "",
    `${result.rounds} ${result.rounds === 1 ? "round" : "rounds"}; each round runs every row ` +
      "once, round-robin, starting at a different row; tables give the median over rounds and " +
      "the range (min–max). " +
      (result.overridden.length
        ? `Settings, OVERRIDDEN (${result.overridden.join(", ")}; not for BENCHMARKS.md): `
        : "Settings, all at their defaults: ") +
      `${settingsText(result) || "none"}.`,
    "",
  );
  const quiet = quietText(result);
  if (quiet) out.push(quiet, "");
  if (result.description.trim()) out.push(result.description.trim(), "");
  for (const spec of result.tables) {
    if (spec.title) out.push(`### ${spec.title}`, "");
    if (spec.intro) out.push(spec.intro.trim(), "");
    out.push(renderTable(result, spec), "");
    if (spec.after) out.push(spec.after.trim(), "");
  }
  const failed = failures(result);
  if (failed.length) out.push("Failed runs (left out of the figures):", "", ...failed, "");
  for (const note of result.notes) if (note.trim()) out.push(note.trim(), "");
  const checks = renderChecks(result);
  if (checks.length) out.push("Targets, judged on the medians above:", "", ...checks, "");
  return out.join("\n");
}

/** Formats markdown as `deno fmt` does (the repository's check runs it on BENCHMARKS.md). */
export async function formatMarkdown(markdown: string): Promise<string> {
  const config = new URL("../deno.json", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--config", config, "--ext", "md", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(markdown));
  await writer.close();
  const output = await child.output();
  if (!output.success) {
    throw new Error(`deno fmt failed: ${new TextDecoder().decode(output.stderr)}`);
  }
  return new TextDecoder().decode(output.stdout);
}
