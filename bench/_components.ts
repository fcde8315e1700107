/**
 * Child processes of the benchmarks: `bench/procs/*.ts` scripts spoken to in
 * lines over stdin/stdout ({@link Child}), and the real components
 * (`main.ts <component>`, {@link startComponent}) on free loopback ports.
 * Every child is registered, so {@link killAll} (signal handlers, watchdog)
 * and {@link stopAll} (end of a bench) leave none behind. Also the load
 * helpers the benches share: {@link until}, {@link closedLoop}.
 * Bench-only; nothing outside bench/ imports this.
 *
 * @module
 */

import { freePort } from "../tests/_helpers.ts";

export { freePort };

const REPO = new URL("../", import.meta.url).pathname;
const MAIN = `${REPO}main.ts`;
const running = new Set<Child>();
const encoder = new TextEncoder();
/** Lines kept for {@link Child.line}; a child printing counts forever keeps only the latest. */
const MAX_QUEUED_LINES = 10_000;

export interface ChildOptions {
  /** Shown in its diagnostics. */
  name: string;
  /** Script path, absolute or relative to the repository (e.g. `bench/procs/broker.ts`). */
  script?: string;
  args?: string[];
  env?: Record<string, string>;
  /** Working directory and the tree whose deno.json is used (default: this repository). */
  tree?: string;
  /** Extra `deno run` flags, e.g. `--v8-flags=…`. */
  denoFlags?: string[];
  /** How {@link Child.stop} asks it to end: close stdin (bench/procs) or SIGTERM (components). */
  stopBy?: "stdin" | "SIGTERM";
  /** Runs this executable with `args` instead of a Deno script (e.g. a private redis-server). */
  command?: string;
}

/** A child Deno process; its stdout is read in lines as they come. */
export class Child {
  readonly name: string;
  readonly pid: number;
  readonly status: Promise<Deno.CommandStatus>;
  #process: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #lines: string[] = [];
  #latest = new Map<string, string>();
  #waiters: Array<() => void> = [];
  #ended = false;
  #pump: Promise<void>;
  #stopBy: "stdin" | "SIGTERM";

  constructor(options: ChildOptions) {
    const tree = (options.tree ?? REPO).replace(/\/?$/, "/");
    if (!options.script && !options.command) throw new Error(`${options.name}: nothing to run`);
    const named = options.script ?? "";
    const script = named.startsWith("/") ? named : `${tree}${named}`;
    this.name = options.name;
    this.#stopBy = options.stopBy ?? "stdin";
    const process = new Deno.Command(options.command ?? Deno.execPath(), {
      args: options.command ? (options.args ?? []) : [
        "run",
        "-A",
        ...(options.denoFlags ?? []),
        "--config",
        `${tree}deno.json`,
        script,
        ...(options.args ?? []),
      ],
      cwd: tree,
      env: options.env,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#process = process;
    this.pid = process.pid;
    this.status = process.status;
    this.#stdin = process.stdin.getWriter();
    running.add(this);
    this.#pump = (async () => {
      let buffered = "";
      try {
        for await (const chunk of process.stdout.pipeThrough(new TextDecoderStream())) {
          buffered += chunk;
          let at: number;
          while ((at = buffered.indexOf("\n")) >= 0) {
            const line = buffered.slice(0, at);
            buffered = buffered.slice(at + 1);
            this.#latest.set(line.split(" ", 1)[0]!, line);
            this.#lines.push(line);
            if (this.#lines.length > MAX_QUEUED_LINES) this.#lines.shift();
          }
          for (const wake of this.#waiters.splice(0)) wake();
        }
      } catch { /* closed */ }
      this.#ended = true;
      for (const wake of this.#waiters.splice(0)) wake();
    })();
  }

  /** Writes one line to its stdin. */
  async send(line: string): Promise<void> {
    await this.#stdin.write(encoder.encode(line + "\n"));
  }

  /**
   * The rest of its next line starting with `prefix` (trimmed), within
   * `timeoutMs`; lines before it are printed to stderr as diagnostics.
   */
  async line(prefix: string, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      while (this.#lines.length > 0) {
        const line = this.#lines.shift()!;
        if (line.startsWith(prefix)) return line.slice(prefix.length).trim();
        console.error(`[${this.name}] ${line}`);
      }
      if (this.#ended) throw new Error(`${this.name} exited before '${prefix}'`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: no '${prefix}' within ${timeoutMs} ms`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** The rest of the latest line whose first word is `word`, if any came (for streamed counts). */
  latest(word: string): string | undefined {
    const line = this.#latest.get(word);
    return line === undefined ? undefined : line.slice(word.length).trim();
  }

  /** Asks it to end (stdin closed, or SIGTERM); SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (!running.has(this)) return;
    if (this.#stopBy === "SIGTERM") {
      try {
        this.#process.kill("SIGTERM");
      } catch { /* gone */ }
    }
    try {
      await this.#stdin.close();
    } catch { /* closed */ }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      this.status.then(() => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), graceMs)),
    ]);
    clearTimeout(timer);
    if (!exited) this.kill();
    await this.status;
    await this.#pump;
    running.delete(this);
  }

  /** SIGKILL at once (error paths, signal handlers). */
  kill(): void {
    try {
      this.#process.kill("SIGKILL");
    } catch { /* gone */ }
  }
}

/** Starts a `bench/procs` script (or any script) and waits for its `READY` line; returns both. */
export async function spawnReady(
  options: ChildOptions,
  timeoutMs = 30_000,
): Promise<{ child: Child; ready: string }> {
  const child = new Child(options);
  try {
    return { child, ready: await child.line("READY", timeoutMs) };
  } catch (error) {
    await child.stop(0);
    throw error;
  }
}

/** A running `main.ts` component. */
export interface Component {
  pid: number;
  stop(): Promise<void>;
}

/** Starts `main.ts <component> --log-level error ...args` with `env` added. */
export function startComponent(
  component: string,
  args: string[],
  env: Record<string, string> = {},
): Component {
  const child = new Child({
    name: component,
    script: MAIN,
    args: [component, "--log-level", "error", ...args],
    env,
    stopBy: "SIGTERM",
  });
  return { pid: child.pid, stop: () => child.stop(3000) };
}

/**
 * `main.ts state` on `db` (a file, or a database URL) against the broker at
 * `brokerEndpoint`, publishing its changes to `busEndpoint` ("" for none),
 * health server off.
 */
export function startStateService(
  db: string,
  brokerEndpoint: string,
  busEndpoint: string,
  extra: string[] = [],
): Component {
  return startComponent("state", [
    "--db",
    db,
    "--broker-endpoint",
    brokerEndpoint,
    "--health-port",
    "0",
    "--bus-endpoint",
    busEndpoint,
    ...extra,
  ]);
}

/** Stops every child still running (end of a bench, error paths). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((child) => child.stop(3000)));
}

/** SIGKILLs every child at once, without waiting (signal handlers and watchdogs). */
export function killAll(): void {
  for (const child of running) child.kill();
}

/** Polls `ready` every 50 ms until it resolves true; fails after `ms`. */
export async function until(
  ready: () => Promise<boolean>,
  ms: number,
  what: string,
): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      if (await ready()) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} not ready within ${ms} ms`);
}

/**
 * Runs `op` in a closed loop with `inFlight` concurrent callers: `warmupMs`
 * unmeasured, then until `measureMs` pass or `maxOps` complete. Returns the
 * latencies (ms) of the measured operations and the measured seconds.
 */
export async function closedLoop(
  inFlight: number,
  op: (i: number) => Promise<unknown>,
  options: { warmupMs: number; measureMs: number; maxOps: number },
): Promise<{ latencies: Float64Array; count: number; errors: number; seconds: number }> {
  const latencies = new Float64Array(options.maxOps);
  let count = 0;
  let errors = 0;
  let i = 0;
  let measuring = false;
  let started = 0;
  let stop = false;
  const warmupEnd = performance.now() + options.warmupMs;
  const worker = async () => {
    while (!stop) {
      const t0 = performance.now();
      if (!measuring && t0 >= warmupEnd) {
        measuring = true;
        started = t0;
      }
      try {
        await op(i++);
        if (measuring && count < options.maxOps) latencies[count++] = performance.now() - t0;
      } catch {
        if (measuring) errors++;
      }
      if (
        measuring && (count >= options.maxOps || performance.now() - started >= options.measureMs)
      ) {
        stop = true;
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return { latencies, count, errors, seconds: (performance.now() - started) / 1000 };
}
