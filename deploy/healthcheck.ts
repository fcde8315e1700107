/**
 * The container health check: asks the running component's `/healthz` and
 * exits 0 when it answers 200 (UP), 1 otherwise. The image has no curl.
 *
 * One image runs every component, each with its own health port, so the
 * check finds the component from the command line of the process running
 * main.ts (`$PLANTD_HEALTHCHECK_PID`, else PID 1, else the only process
 * running main.ts) and resolves that component's configuration exactly as
 * main.ts does: defaults, the YAML file, `PLANTD_<COMPONENT>_*` from the
 * environment (the check runs with the container's), and the flags.
 *
 *   deno run -A deploy/healthcheck.ts
 *
 * (-A: Deno grants reading another process's /proc entry only with all permissions.)
 *
 * @module
 */
import {
  alarmsConfig,
  brokerConfig,
  busConfig,
  echoConfig,
  gatewayConfig,
  metricsConfig,
  stateConfig,
} from "../config/components.ts";
import { type ComponentConfig, loadConfig } from "../config/load.ts";
import type { z } from "zod";

const TIMEOUT_MS = 4000;

/** Where each component serves /healthz: its health server, or the gateway's own port. */
const HEALTH: Record<string, { config: ComponentConfig<z.ZodObject>; gateway?: boolean }> = {
  broker: { config: brokerConfig },
  bus: { config: busConfig },
  echo: { config: echoConfig },
  state: { config: stateConfig },
  metrics: { config: metricsConfig },
  alarms: { config: alarmsConfig },
  gateway: { config: gatewayConfig, gateway: true },
  // dev serves everything's health through its gateway.
  dev: { config: gatewayConfig, gateway: true },
};

/** The component and flags of a `deno run … main.ts <component> [flags]` command line. */
export function componentOf(argv: string[]): { component: string; flags: string[] } | undefined {
  const main = argv.findIndex((arg) => arg === "main.ts" || arg.endsWith("/main.ts"));
  if (main < 0 || argv[main + 1] === undefined) return undefined;
  return { component: argv[main + 1]!, flags: argv.slice(main + 2) };
}

function commandLine(pid: string): string[] | undefined {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").filter((a) => a !== "");
  } catch {
    return undefined;
  }
}

/** The command line of the process to check. */
function findProcess(): string[] {
  const pid = Deno.env.get("PLANTD_HEALTHCHECK_PID");
  if (pid) {
    const argv = commandLine(pid);
    if (!argv) throw new Error(`no process ${pid}`);
    return argv;
  }
  const first = commandLine("1");
  if (first && componentOf(first)) return first;
  // Under an init (compose `init: true`) the component is not PID 1.
  const found: string[][] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name) || String(Deno.pid) === entry.name) continue;
    const argv = commandLine(entry.name);
    if (argv && componentOf(argv)) found.push(argv);
  }
  if (found.length !== 1) {
    throw new Error(`expected one process running main.ts, found ${found.length}`);
  }
  return found[0]!;
}

/** The /healthz URL of a component's command line, or undefined when it serves none. */
export function healthUrl(
  argv: string[],
  env: Record<string, string> = Deno.env.toObject(),
): string | undefined {
  const found = componentOf(argv);
  if (!found) throw new Error(`not a main.ts command line: ${argv.join(" ")}`);
  const entry = HEALTH[found.component];
  if (!entry) return undefined; // one-shot commands (state-backup)
  // dev takes only --log-level/--log-format; its gateway reads the environment alone.
  const flags = found.component === "dev" ? [] : found.flags;
  const config = loadConfig(entry.config, { args: flags, env }) as Record<string, unknown>;
  const host = String(entry.gateway ? config.host : config.health_host);
  const port = Number(entry.gateway ? config.port : config.health_port);
  if (port === 0) return undefined;
  const reachable = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return `http://${reachable.includes(":") ? `[${reachable}]` : reachable}:${port}/healthz`;
}

async function main(): Promise<number> {
  const argv = findProcess();
  const url = healthUrl(argv);
  if (!url) {
    console.log(`${componentOf(argv)!.component}: no health server; running`);
    return 0;
  }
  const response = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
  const body = await response.text();
  if (response.status === 200) return 0;
  console.log(`${url}: HTTP ${response.status} ${body.slice(0, 500)}`);
  return 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (error) {
    console.log(`healthcheck: ${error instanceof Error ? error.message : String(error)}`);
    Deno.exit(1);
  }
}
