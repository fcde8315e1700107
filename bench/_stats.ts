/**
 * Small helpers of the benchmarks: latency percentiles, medians, CPU time of
 * processes read from /proc (ours, a server's, everyone else's), the idle
 * share of the machine, and number formatting for markdown tables.
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

/** Busy clock ticks of the whole machine (all cores) from /proc/stat, or undefined. */
export function machineBusyTicks(): number | undefined {
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n")[0]!;
    // cpu user nice system idle iowait irq softirq steal ...
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    return f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!;
  } catch {
    return undefined;
  }
}

/** Fraction of the machine's CPU time that was idle over `ms`. */
export async function idleFraction(ms: number): Promise<number> {
  const read = () => {
    const f = Deno.readTextFileSync("/proc/stat").split("\n")[0]!.trim().split(/\s+/).slice(1)
      .map(Number);
    const idle = f[3]! + f[4]!;
    return { idle, total: f.reduce((a, b) => a + b, 0) };
  };
  try {
    const a = read();
    await new Promise((resolve) => setTimeout(resolve, ms));
    const b = read();
    return b.total > a.total ? (b.idle - a.idle) / (b.total - a.total) : 1;
  } catch {
    return 1;
  }
}

/** Measures CPU of several processes between {@link CpuMeter.start} and {@link CpuMeter.percent}. */
export class CpuMeter {
  #pids: Array<number | "self">;
  #ticks: number;
  #start: Array<number | undefined> = [];
  #machine: number | undefined;
  #t0 = 0;
  #seconds = 0;
  #used = 0;
  #machineUsed: number | undefined;

  constructor(pids: Array<number | "self">, ticksPerSecond: number) {
    this.#pids = pids;
    this.#ticks = ticksPerSecond;
  }

  start(): void {
    this.#start = this.#pids.map((pid) => cpuTicks(pid));
    this.#machine = machineBusyTicks();
    this.#t0 = performance.now();
  }

  /** Percent of one core used by each process since start. */
  percent(): number[] {
    const seconds = (performance.now() - this.#t0) / 1000;
    const machine = machineBusyTicks();
    this.#seconds = seconds;
    this.#used = 0;
    const result = this.#pids.map((pid, i) => {
      const before = this.#start[i];
      const after = cpuTicks(pid);
      if (before === undefined || after === undefined || seconds <= 0) return NaN;
      this.#used += after - before;
      return ((after - before) / this.#ticks / seconds) * 100;
    });
    this.#machineUsed = machine !== undefined && this.#machine !== undefined
      ? machine - this.#machine
      : undefined;
    return result;
  }

  /**
   * Percent of one core used by everything else on the machine (other
   * processes, kernel work not charged to ours) over the last
   * {@link CpuMeter.percent} interval: a sign of interference.
   */
  otherPercent(): number {
    if (this.#machineUsed === undefined || this.#seconds <= 0) return NaN;
    return (Math.max(0, this.#machineUsed - this.#used) / this.#ticks / this.#seconds) * 100;
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

/** Median of the values (the mean of the middle two for an even count); NaN for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** utime + stime ticks of every process whose /proc/<pid>/comm is `name` (e.g. all of PostgreSQL). */
export function ticksOfCommand(name: string): number {
  let total = 0;
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${entry.name}/comm`).trim() !== name) continue;
    } catch {
      continue;
    }
    total += cpuTicks(Number(entry.name)) ?? 0;
  }
  return total;
}

/**
 * CPU ticks used so far by every process that is neither this one, nor one
 * of its descendants, nor named in `servers` (servers under test, such as
 * redis-server, whose work is part of the measurement).
 */
export function foreignTicks(servers: ReadonlySet<string>): Map<number, number> {
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      // Fields after the command (which may hold spaces): state ppid … utime(14) stime(15).
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const command = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      if (servers.has(command)) continue;
      const pid = Number(entry.name);
      parent.set(pid, Number(fields[1]));
      ticks.set(pid, Number(fields[11]) + Number(fields[12]));
    } catch { /* gone */ }
  }
  const ours = (pid: number): boolean => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; p = parent.get(p) ?? 0, hops++) {
      if (p === Deno.pid) return true;
    }
    return false;
  };
  for (const pid of [...ticks.keys()]) if (ours(pid)) ticks.delete(pid);
  return ticks;
}

/** Cores used by other processes between two {@link foreignTicks} snapshots `seconds` apart. */
export function foreignCores(
  before: Map<number, number>,
  after: Map<number, number>,
  seconds: number,
  ticksPerSecond: number,
): number {
  let delta = 0;
  for (const [pid, t] of after) delta += t - (before.get(pid) ?? 0);
  return seconds > 0 ? delta / ticksPerSecond / seconds : NaN;
}
