/**
 * Small helpers of the benchmarks: latency percentiles, CPU time of a process
 * read from /proc, and number formatting for markdown tables.
 *
 * @module
 */

/** Summary of one measurement. */
export interface Summary {
  count: number;
  errors: number;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
}

/** Nearest-rank percentile of the first `count` samples (sorted in place). */
export function summarize(
  samples: Float64Array,
  count: number,
  errors: number,
  seconds: number,
): Summary {
  const sorted = samples.subarray(0, count).sort();
  const at = (q: number) =>
    count === 0 ? NaN : sorted[Math.min(count - 1, Math.max(0, Math.ceil(q * count) - 1))]!;
  return {
    count,
    errors,
    seconds,
    perSecond: seconds > 0 ? count / seconds : 0,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
  };
}

let clockTicks: number | undefined;

/** Kernel clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be read. */
export async function ticksPerSecond(): Promise<number> {
  if (clockTicks !== undefined) return clockTicks;
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output();
    const value = Number(new TextDecoder().decode(out.stdout).trim());
    clockTicks = Number.isFinite(value) && value > 0 ? value : 100;
  } catch {
    clockTicks = 100;
  }
  return clockTicks;
}

/** utime + stime of a process in clock ticks, or undefined when it is gone. */
export function cpuTicks(pid: number | "self"): number | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Field 2 (comm) may hold spaces: count fields after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}

/** Pid of a running process whose /proc/<pid>/comm is `name`, if any. */
export function findPid(name: string): number | undefined {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${entry.name}/comm`).trim() === name) {
        return Number(entry.name);
      }
    } catch {
      // the process ended while we looked
    }
  }
  return undefined;
}

/** Measures CPU of several processes between {@link CpuMeter.start} and {@link CpuMeter.percent}. */
export class CpuMeter {
  #pids: Array<number | "self">;
  #ticks: number;
  #start: Array<number | undefined> = [];
  #t0 = 0;

  constructor(pids: Array<number | "self">, ticksPerSecond: number) {
    this.#pids = pids;
    this.#ticks = ticksPerSecond;
  }

  start(): void {
    this.#start = this.#pids.map((pid) => cpuTicks(pid));
    this.#t0 = performance.now();
  }

  /** Percent of one core used by each process since start. */
  percent(): number[] {
    const seconds = (performance.now() - this.#t0) / 1000;
    return this.#pids.map((pid, i) => {
      const before = this.#start[i];
      const after = cpuTicks(pid);
      if (before === undefined || after === undefined || seconds <= 0) return NaN;
      return ((after - before) / this.#ticks / seconds) * 100;
    });
  }
}

/** A number for a table: thousands separators, fixed decimals, "n/a" for NaN. */
export function num(value: number, decimals = 0): string {
  if (!Number.isFinite(value)) return "n/a";
  return value.toLocaleString("en-US", {
    minimumFractionDigits: decimals,
    maximumFractionDigits: decimals,
  });
}

/** Renders a markdown table. */
export function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}
