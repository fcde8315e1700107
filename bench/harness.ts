/**
 * The one harness every benchmark runs on. What it guarantees:
 *
 * - Settings are declared with their defaults; each can be changed by an
 *   environment variable or a `--name=value` flag, and a run with any of them
 *   changed is saved labelled `overridden` and never reaches BENCHMARKS.md.
 *   Every bench also has `rounds` (BENCH_ROUNDS, 3) and `quiet_wait_ms`
 *   (BENCH_QUIET_WAIT_MS, 20000).
 * - Rows are measured in N rounds; within a round every row (or unit of rows
 *   measured together) runs once, round-robin, each round starting a different
 *   stretch into the list, so drift of a shared machine hits every row alike.
 * - Before each run, a quiet-machine check (waits, bounded, for the machine to
 *   be {@link DEFAULT_MIN_IDLE} idle) whose outcome is recorded with the run,
 *   as is the CPU other processes used during it.
 * - Children (bench/procs scripts, `main.ts` components) are registered and
 *   killed on exit, error, SIGINT/SIGTERM and a watchdog.
 * - Every run's raw result is written to `bench/results/<bench>-<time>.json`
 *   (bench/_result.ts) with commit, dirty flag, machine and settings, even when
 *   the bench fails part way (then marked incomplete). BENCHMARKS.md is only
 *   ever written by `deno task bench:report` (bench/report.ts) from those files.
 *
 * API, in the order a bench uses it:
 *
 * ```ts
 * import { runBench } from "./harness.ts";
 * await runBench({
 *   name: "broker",                                  // results/broker-<time>.json
 *   title: "Broker (deno task bench:broker)",        // heading in BENCHMARKS.md
 *   command: "`deno task bench:broker` (bench/broker.ts)",
 *   settings: { measure_ms: { env: "BENCH_MEASURE_MS", default: 3000, help: "…" } },
 *   servers: ["nats-server"],     // their CPU is part of the measurement, not interference
 * }, async (bench) => {
 *   bench.settings.measure_ms;    // typed from the default: number | string | boolean
 *   const a = bench.row("a@1", "system a", { "in flight": 1 });   // label holds non-defaults
 *   await bench.rounds([{ key: "a@1" }], async (unit, round) => ({ "req/s": 1, p50: 2 }));
 *   // a unit filling several rows returns new Map([[rowKey, metrics], …]) and lists them in `rows`
 *   return {                       // the section's layout, rendered by the report
 *     description: "…",            // prose under the heading (layout, what differs from defaults)
 *     tables: [{ rows: ["a@1"], columns: [{ header: "system", show: "label" },
 *       { header: "req/s", show: "median:req/s" }, { header: "range", show: "range:req/s" }] }],
 *     notes: [],                   // prose after the tables, computed from bench.stats()
 *     checks: [{ name: "req/s >= 1", value: { rows: ["a@1"], metric: "req/s" }, op: ">=", target: 1 }],
 *     data: {},                    // anything else worth keeping (not rendered)
 *   };
 * });
 * ```
 *
 * Spawning (bench/_components.ts, re-exported here): {@link Child} /
 * {@link spawnReady} for bench/procs scripts or, with `command`, any
 * executable (a private redis-server); {@link startComponent} and
 * {@link startStateService} for `main.ts` components; all stopped by the
 * harness. Also {@link closedLoop}, {@link until}, {@link freePort},
 * {@link filesystemOf} (record where a database lives: fsync is free on
 * tmpfs) and {@link provenance}. A new bench gets a section in BENCHMARKS.md
 * as soon as it has a run with default settings; add it to KNOWN_BENCHES in
 * bench/report.ts to place it (and to get a placeholder before its first run).
 *
 * @module
 */
import { wantsHelp } from "../config/load.ts";
import { killAll, stopAll } from "./_components.ts";
import {
  type BenchResultInput,
  type Check,
  parseResult,
  RESULT_FORMAT,
  type Row,
  type Run,
  type Table,
} from "./_result.ts";
import { renderSection, stats } from "./_render.ts";
import { foreignCores, foreignTicks, idleFraction, num, ticksPerSecond } from "./_stats.ts";

export type { Check, Table } from "./_result.ts";
export {
  Child,
  type ChildOptions,
  closedLoop,
  freePort,
  spawnReady,
  startComponent,
  startStateService,
  stopAll,
  until,
} from "./_components.ts";

/** Share of the machine's CPU that must be idle before a run counts as started quiet. */
export const DEFAULT_MIN_IDLE = 0.9;
/** All waits for a quiet machine together stop at this; runs are still checked and recorded. */
const QUIET_BUDGET_MS = 10 * 60_000;
const REPO = new URL("../", import.meta.url).pathname;
const RESULTS = `${REPO}bench/results`;

// ---------------------------------------------------------------------------
// Settings

export interface SettingSpec {
  /** Environment variable that changes it (a `--name=value` flag does too). */
  env: string;
  /** The value a default run uses; its type is the setting's type. */
  default: number | string | boolean;
  help: string;
}
export type SettingsSpec = Record<string, SettingSpec>;
type Widen<T> = T extends number ? number : T extends boolean ? boolean : string;
export type Settings<S extends SettingsSpec> = { [K in keyof S]: Widen<S[K]["default"]> };

const COMMON = {
  rounds: { env: "BENCH_ROUNDS", default: 3, help: "interleaved rounds (median and range)" },
  quiet_wait_ms: {
    env: "BENCH_QUIET_WAIT_MS",
    default: 20_000,
    help: "longest wait for a quiet machine before a run",
  },
} satisfies SettingsSpec;

function parseValue(spec: SettingSpec, raw: string, name: string): number | string | boolean {
  if (typeof spec.default === "number") {
    const value = Number(raw);
    if (raw.trim() === "" || !Number.isFinite(value)) {
      throw new Error(`setting ${name}: '${raw}' is not a number`);
    }
    return value;
  }
  if (typeof spec.default === "boolean") {
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw new Error(`setting ${name}: '${raw}' is not a boolean (1/0, true/false)`);
  }
  return raw;
}

/**
 * Reads settings from `env` and `--name=value` flags (`-` or `_` in names);
 * `overridden` lists those whose value differs from the default.
 */
export function readSettings<S extends SettingsSpec>(
  spec: S,
  env: Record<string, string> = Deno.env.toObject(),
  args: readonly string[] = Deno.args,
): { values: Settings<S>; overridden: string[] } {
  const values: Record<string, number | string | boolean> = {};
  const overridden: string[] = [];
  const flags = new Map<string, string>();
  for (const arg of args) {
    const match = /^--([a-z0-9_-]+)=(.*)$/s.exec(arg);
    const name = match?.[1]?.replaceAll("-", "_");
    if (!match || !name || !(name in spec)) {
      throw new Error(
        `unknown argument '${arg}'; settings: ${
          Object.entries(spec).map(([k, s]) => `--${k}=… (${s.env}, default ${s.default})`).join(
            ", ",
          )
        }`,
      );
    }
    flags.set(name, match[2]!);
  }
  for (const [name, setting] of Object.entries(spec)) {
    const raw = flags.get(name) ?? env[setting.env];
    const value = raw === undefined ? setting.default : parseValue(setting, raw, name);
    values[name] = value;
    if (value !== setting.default) overridden.push(name);
  }
  return { values: values as Settings<S>, overridden };
}

// ---------------------------------------------------------------------------
// Provenance

async function git(...args: string[]): Promise<string> {
  try {
    const output = await new Deno.Command("git", {
      args: ["-C", REPO, ...args],
      stdout: "piped",
      stderr: "null",
    }).output();
    return output.success ? new TextDecoder().decode(output.stdout).trim() : "";
  } catch {
    return "";
  }
}

/** The commit measured, whether tracked files differed from it, and the machine. */
export async function provenance() {
  let cpu = "";
  try {
    cpu = /model name\s*:\s*(.*)/.exec(await Deno.readTextFile("/proc/cpuinfo"))?.[1]?.trim() ??
      "";
  } catch { /* not Linux */ }
  return {
    commit: await git("rev-parse", "HEAD"),
    dirty: (await git("status", "--porcelain", "--untracked-files=no")) !== "",
    machine: {
      hostname: Deno.hostname(),
      cores: navigator.hardwareConcurrency,
      cpu,
      os: Deno.build.os,
      kernel: Deno.osRelease(),
      memoryBytes: Deno.systemMemoryInfo().total,
    },
    deno: Deno.version.deno,
  };
}

/** The filesystem type of the mount holding `path` (longest mount point in /proc/mounts). */
export function filesystemOf(path: string): string {
  try {
    let best = "";
    let type = "unknown";
    const real = Deno.realPathSync(path);
    for (const line of Deno.readTextFileSync("/proc/mounts").split("\n")) {
      const [, mount, fstype] = line.split(" ");
      if (!mount || !fstype) continue;
      const at = mount.replace(/\\040/g, " ");
      const inside = at === "/" || real === at || real.startsWith(at + "/");
      if (inside && at.length >= best.length) {
        best = at;
        type = fstype;
      }
    }
    return type;
  } catch {
    return "unknown";
  }
}

// ---------------------------------------------------------------------------
// Runs

/** Figures of one run of a row, by metric name (NaN when not measured). */
export type Metrics = Record<string, number>;

/** What is measured at once: one row, or several (`rows`) filled by one measurement. */
export interface Unit {
  key: string;
  rows?: string[];
}

/** What a bench returns: how its section of BENCHMARKS.md is laid out. */
export interface Layout {
  description: string;
  tables: Table[];
  notes?: string[];
  checks?: Check[];
  data?: unknown;
}

export interface BenchOptions<S extends SettingsSpec> {
  name: string;
  title: string;
  command: string;
  settings: S;
  /** Process names whose CPU belongs to the measurement (not counted as interference). */
  servers?: string[];
  minIdle?: number;
  /** The whole bench is stopped (children killed, partial result saved) past this. */
  watchdogMs?: number;
}

export class Bench<S extends SettingsSpec> {
  readonly settings: Settings<S & typeof COMMON>;
  readonly overridden: string[];
  readonly rows: Row[] = [];
  readonly minIdle: number;
  readonly started = new Date();
  #servers: Set<string>;
  #quietBudgetMs = QUIET_BUDGET_MS;

  constructor(options: BenchOptions<S>, settings: ReturnType<typeof readSettings>) {
    this.settings = settings.values as Settings<S & typeof COMMON>;
    this.overridden = settings.overridden;
    this.minIdle = options.minIdle ?? DEFAULT_MIN_IDLE;
    this.#servers = new Set(options.servers ?? []);
  }

  /** Declares a row (or updates its label); the label must name every non-default setting. */
  row(key: string, label: string, params: Record<string, number | string> = {}): Row {
    let row = this.rows.find((r) => r.key === key);
    if (!row) {
      row = { key, label, params, runs: [] };
      this.rows.push(row);
    } else {
      row.label = label;
      row.params = params;
    }
    return row;
  }

  /** Median, range and count of a row's metric so far (for notes computed at run time). */
  stats(key: string, metric: string) {
    const row = this.rows.find((r) => r.key === key);
    return row ? stats(row, metric) : { median: NaN, min: NaN, max: NaN, sum: NaN, n: 0 };
  }

  /** Waits (bounded) for a quiet machine; what it saw is recorded with the run. */
  async quiet(): Promise<Run["quiet"]> {
    const t0 = performance.now();
    const deadline = t0 + Math.min(this.settings.quiet_wait_ms, Math.max(0, this.#quietBudgetMs));
    let idle = await idleFraction(500);
    while (idle < this.minIdle && performance.now() < deadline) idle = await idleFraction(1000);
    const waitedMs = performance.now() - t0;
    this.#quietBudgetMs -= waitedMs;
    return { idle, waitedMs: Math.round(waitedMs), ok: idle >= this.minIdle };
  }

  /**
   * `rounds` rounds (the setting unless given); in each, every unit once,
   * round-robin from a start that moves by units/rounds per round, each after
   * a quiet check. A unit's
   * rows must have been declared with {@link row} (a unit without `rows`
   * fills the row of its key). A failing measurement is recorded as a failed
   * run of its rows and the bench goes on.
   */
  async rounds<U extends Unit>(
    units: readonly U[],
    measure: (unit: U, round: number) => Promise<Metrics | Map<string, Metrics>>,
    options: { rounds?: number } = {},
  ): Promise<void> {
    const rounds = options.rounds ?? this.settings.rounds;
    const ticks = await ticksPerSecond();
    // Each round starts a different stretch into the list, so a drift over the run does not
    // fall on the same units every round.
    const stride = Math.max(1, Math.ceil(units.length / rounds));
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < units.length; k++) {
        const unit = units[(k + round * stride) % units.length]!;
        const keys = unit.rows ?? [unit.key];
        const rows = keys.map((key) => {
          const row = this.rows.find((r) => r.key === key);
          if (!row) throw new Error(`row '${key}' measured but not declared`);
          return row;
        });
        const quiet = await this.quiet();
        const at = new Date().toISOString();
        const before = foreignTicks(this.#servers);
        const t0 = performance.now();
        let measured: Map<string, Metrics>;
        let error: string | undefined;
        try {
          const result = await measure(unit, round);
          measured = result instanceof Map ? result : new Map([[keys[0]!, result]]);
        } catch (e) {
          measured = new Map();
          error = e instanceof Error ? e.message : String(e);
        }
        const otherCores = foreignCores(
          before,
          foreignTicks(this.#servers),
          (performance.now() - t0) / 1000,
          ticks,
        );
        for (const row of rows) {
          const metrics = measured.get(row.key);
          const run: Run = {
            round,
            at,
            quiet,
            otherCores: Number.isFinite(otherCores) ? otherCores : null,
            metrics: metrics ? toJsonMetrics(metrics) : {},
            ...(metrics ? {} : { error: error ?? "no figures returned" }),
          };
          row.runs.push(run);
          console.error(
            `round ${round + 1}/${rounds} ${row.label}${paramsText(row)}: ` +
              (run.error ? `FAILED ${run.error}` : metricsText(metrics!)) +
              ` (idle ${num(quiet.idle * 100)}%${quiet.ok ? "" : ", not quiet"}, others ${
                num(otherCores, 2)
              } cores)`,
          );
        }
      }
    }
  }
}

function toJsonMetrics(metrics: Metrics): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const [k, v] of Object.entries(metrics)) out[k] = Number.isFinite(v) ? v : null;
  return out;
}

function paramsText(row: Row): string {
  const entries = Object.entries(row.params);
  return entries.length ? ` [${entries.map(([k, v]) => `${k} ${v}`).join(", ")}]` : "";
}

function metricsText(metrics: Metrics): string {
  return Object.entries(metrics).slice(0, 4).map(([k, v]) =>
    `${k} ${num(v, Number.isInteger(v) || Math.abs(v) >= 10 ? 0 : 3)}`
  ).join(", ");
}

/** Writes a result file (never BENCHMARKS.md); returns its path. */
export async function saveResult(result: BenchResultInput): Promise<string> {
  // Validated as the report will read it, so a bench cannot write what the report refuses.
  parseResult(JSON.stringify(result), `result of ${result.bench}`);
  await Deno.mkdir(RESULTS, { recursive: true });
  const stamp = result.time.replace(/[:.]/g, "-");
  const suffix = result.overridden.length ? "-overridden" : result.incomplete ? "-incomplete" : "";
  const path = `${RESULTS}/${result.bench}-${stamp}${suffix}.json`;
  await Deno.writeTextFile(path, JSON.stringify(result, null, 2) + "\n");
  return path;
}

/**
 * Runs a bench: reads its settings (a bad one: message and exit 2), installs
 * the signal handlers and the watchdog, calls `body`, saves the raw result
 * (also when `body` fails), prints the section it would give, stops every
 * child and exits (0, or 1 when the bench failed).
 */
/** `deno task bench:… --help`: what it measures and its settings. */
export function benchUsage(
  options: { title: string; command: string },
  spec: SettingsSpec,
): string {
  const lines = Object.entries(spec).map(([name, s]) =>
    `  --${name}=VALUE  ${s.env}, default ${s.default}: ${s.help}`
  );
  return `usage: ${options.command.replaceAll("`", "")} [--setting=value ...]

${options.title}. A run with any setting changed is saved as overridden (never in BENCHMARKS.md).

settings (flag or environment variable):
${lines.join("\n")}`;
}

export async function runBench<S extends SettingsSpec>(
  options: BenchOptions<S>,
  body: (bench: Bench<S>) => Promise<Layout>,
): Promise<never> {
  const spec = { ...COMMON, ...options.settings } as SettingsSpec;
  if (wantsHelp(Deno.args)) {
    console.log(benchUsage(options, spec));
    Deno.exit(0);
  }
  let settings: ReturnType<typeof readSettings>;
  try {
    settings = readSettings(spec);
  } catch (error) {
    console.error(`bench:${options.name}: ${error instanceof Error ? error.message : error}`);
    Deno.exit(2);
  }
  if (settings.values.rounds as number < 1) {
    console.error(`bench:${options.name}: rounds must be at least 1`);
    Deno.exit(2);
  }
  const bench = new Bench(options, settings);
  const onSignal = () => {
    killAll();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  // A crash outside `body` (an unhandled rejection) must not leave components running.
  globalThis.addEventListener("unload", killAll);
  globalThis.addEventListener("unhandledrejection", killAll);
  let timedOut = false;
  const watchdog = setTimeout(() => {
    timedOut = true;
    console.error(`bench:${options.name}: watchdog expired, stopping children`);
    killAll();
  }, options.watchdogMs ?? 60 * 60_000);
  Deno.unrefTimer(watchdog);
  if (settings.overridden.length) {
    console.error(
      `bench:${options.name}: settings overridden (${settings.overridden.join(", ")}): the ` +
        "result is saved labelled overridden and will not be shown in BENCHMARKS.md",
    );
  }
  let layout: Layout = { description: "", tables: [] };
  let failure: string | undefined;
  try {
    layout = await body(bench);
  } catch (error) {
    failure = error instanceof Error ? (error.stack ?? error.message) : String(error);
    if (timedOut) failure = `watchdog expired; ${failure}`;
    console.error(`bench:${options.name} failed: ${failure}`);
  }
  clearTimeout(watchdog);
  await stopAll();
  const result: BenchResultInput = {
    format: RESULT_FORMAT,
    bench: options.name,
    title: options.title,
    command: options.command,
    time: bench.started.toISOString(),
    ...await provenance(),
    settings: settings.values,
    defaults: Object.fromEntries(Object.entries(spec).map(([k, s]) => [k, s.default])),
    overridden: settings.overridden,
    ...(failure ? { incomplete: failure.split("\n")[0]! } : {}),
    quiet: { minIdle: bench.minIdle, maxWaitMs: settings.values.quiet_wait_ms as number },
    rounds: settings.values.rounds as number,
    description: layout.description,
    tables: layout.tables,
    rows: bench.rows,
    notes: layout.notes ?? [],
    checks: layout.checks ?? [],
    data: layout.data,
  };
  const path = await saveResult(result);
  const relative = path.slice(REPO.length);
  if (!failure) console.log(renderSection(parseResult(JSON.stringify(result), path), relative));
  console.error(
    `raw result: ${relative}` +
      (settings.overridden.length
        ? " (overridden: not for BENCHMARKS.md)"
        : failure
        ? " (incomplete: not for BENCHMARKS.md)"
        : "; `deno task bench:report` puts it in BENCHMARKS.md"),
  );
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  // Everything is closed; exit explicitly so a lingering native handle cannot keep us alive.
  Deno.exit(failure ? 1 : 0);
}
