/**
 * Benchmarks that run the real components: `main.ts <component>` child
 * processes on free loopback ports, stopped (SIGTERM, then SIGKILL) at the
 * end or when the bench fails. Bench-only helpers; nothing imports this but
 * bench/.
 *
 * @module
 */

import { freePort } from "../tests/_helpers.ts";

export { freePort };

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;
const running = new Set<Deno.ChildProcess>();

/** A running `main.ts` component. */
export interface Component {
  pid: number;
  stop(): Promise<void>;
}

/** Starts `main.ts <component> ...args` with `env` added. */
export function startComponent(
  component: string,
  args: string[],
  env: Record<string, string> = {},
): Component {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", CONFIG, MAIN, component, "--log-level", "error", ...args],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  running.add(child);
  return {
    pid: child.pid,
    async stop() {
      if (!running.has(child)) return;
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 3000);
      await child.status;
      clearTimeout(timer);
      running.delete(child);
    },
  };
}

/** Kills every component still running (for error paths). */
export async function stopAll(): Promise<void> {
  for (const child of [...running]) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    running.delete(child);
  }
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
