/**
 * The raw result of one benchmark run, as bench/harness.ts writes it to
 * `bench/results/<bench>-<time>.json` and bench/report.ts reads it back:
 * provenance (commit, dirty flag, machine), settings (and which were
 * overridden), every measured run of every row, and how the section of
 * BENCHMARKS.md is laid out (tables, checks, prose written at run time).
 * Validated with zod on both sides, so a hand-made or damaged file is refused
 * with the field that is wrong.
 *
 * @module
 */
import { z } from "zod";

/** Marks files in this format; files without it (older benches) are not read. */
export const RESULT_FORMAT = "plantd-bench/1";

const settingValue = z.union([z.number(), z.string(), z.boolean()]);
/** JSON has no NaN: a measure that could not be taken is stored as null. */
const measure = z.number().nullable();

export const runSchema = z.object({
  round: z.number().int().min(0),
  /** When the run started (ISO time). */
  at: z.string(),
  /** The quiet-machine check before the run. */
  quiet: z.object({
    /** Idle share of the machine's CPU when the run started (0-1). */
    idle: z.number(),
    /** How long the run waited for a quiet machine. */
    waitedMs: z.number(),
    /** Whether the machine was at least `minIdle` idle. */
    ok: z.boolean(),
  }),
  /** Cores used by processes outside the benchmark (and its servers) during the run. */
  otherCores: measure,
  metrics: z.record(z.string(), measure),
  /** Why the run failed; its metrics are then absent. */
  error: z.string().optional(),
});
export type Run = z.infer<typeof runSchema>;

export const rowSchema = z.object({
  key: z.string().min(1),
  label: z.string().min(1),
  params: z.record(z.string(), settingValue).default({}),
  runs: z.array(runSchema),
});
export type Row = z.infer<typeof rowSchema>;

/**
 * A table column. `show` says what it holds:
 * `label`; `param:<name>`; `median:<metric>`, `range:<metric>` (min–max over
 * runs), `max:<metric>`, `sum:<metric>` (over runs); `cpu:<prefix>` (the
 * median of every metric named `<prefix><process>`, as "process N%");
 * `quiet` (runs that started on a quiet machine, of all); `other` (most
 * cores other processes used during a run).
 */
export const columnSchema = z.object({
  header: z.string(),
  show: z.string().regex(/^(label|quiet|other|(param|median|range|max|sum|cpu):.+)$/),
  decimals: z.number().int().min(0).max(6).default(0),
});
export type Column = z.input<typeof columnSchema>;

export const tableSchema = z.object({
  /** A `###` heading above the table. */
  title: z.string().optional(),
  /** Markdown paragraphs before and after the table. */
  intro: z.string().optional(),
  after: z.string().optional(),
  /** Row keys, in display order. */
  rows: z.array(z.string()),
  columns: z.array(columnSchema).min(1),
});
export type Table = z.input<typeof tableSchema>;

/** A figure taken from rows: the median (or sum, or max over runs) of a metric, best row. */
export const refSchema = z.object({
  rows: z.array(z.string()).min(1),
  metric: z.string(),
  stat: z.enum(["median", "sum", "max"]).default("median"),
  /** Over several rows: the largest (default), the smallest or the sum. */
  combine: z.enum(["max", "min", "sum"]).default("max"),
});
export type Ref = z.input<typeof refSchema>;

/** A target, judged by the report from the medians: PASS, FAIL or N/A. */
export const checkSchema = z.object({
  name: z.string(),
  value: refSchema,
  op: z.enum([">=", ">", "<=", "<", "=="]),
  /** A number, or another figure (times `factor`). */
  target: z.union([z.number(), refSchema]),
  factor: z.number().default(1),
  decimals: z.number().int().min(0).max(6).default(0),
});
export type Check = z.input<typeof checkSchema>;

export const resultSchema = z.object({
  format: z.literal(RESULT_FORMAT),
  bench: z.string().regex(/^[a-z0-9-]+$/),
  /** Section heading, e.g. "Broker (deno task bench:broker)". */
  title: z.string(),
  /** How to run it, e.g. "deno task bench:broker (bench/broker.ts)". */
  command: z.string(),
  time: z.string(),
  commit: z.string(),
  dirty: z.boolean(),
  machine: z.object({
    hostname: z.string(),
    cores: z.number(),
    cpu: z.string(),
    os: z.string(),
    kernel: z.string(),
    memoryBytes: z.number(),
  }),
  deno: z.string(),
  settings: z.record(z.string(), settingValue),
  defaults: z.record(z.string(), settingValue),
  /** Settings changed by environment or flags: such a run never reaches BENCHMARKS.md. */
  overridden: z.array(z.string()),
  /** Set when the run ended early (an error); such a run never reaches BENCHMARKS.md. */
  incomplete: z.string().optional(),
  quiet: z.object({ minIdle: z.number(), maxWaitMs: z.number() }),
  rounds: z.number().int().min(1),
  /** Markdown paragraphs under the heading, written by the bench at run time. */
  description: z.string(),
  tables: z.array(tableSchema),
  rows: z.array(rowSchema),
  /** Markdown paragraphs after the tables (derived figures the bench computed). */
  notes: z.array(z.string()).default([]),
  checks: z.array(checkSchema).default([]),
  /** Anything else the bench keeps (not rendered). */
  data: z.unknown().optional(),
});
export type BenchResult = z.infer<typeof resultSchema>;
export type BenchResultInput = z.input<typeof resultSchema>;

/** Parses a result file's text; throws naming the first invalid field. */
export function parseResult(text: string, where: string): BenchResult {
  const parsed = resultSchema.safeParse(JSON.parse(text));
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`${where}: ${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  return parsed.data;
}
