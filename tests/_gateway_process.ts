/**
 * A gateway in a process of its own (`main.ts gateway`) against a test
 * system's broker and buses: the second replica of tests that need two
 * gateway processes (shared Redis, shared auth database).
 *
 * @module
 */
import { freePort, spawnWatched, waitFor } from "./_helpers.ts";
import type { System } from "./_system.ts";

/** A spawned gateway: its URL, its stderr so far, and how to stop it. */
export interface GatewayProcess {
  url: string;
  stop(): Promise<void>;
  stderr(): string;
}

/** Starts `main.ts gateway` with `env` on top of the system's endpoints; waits for /livez. */
export async function spawnGateway(
  system: System,
  env: Record<string, string>,
): Promise<GatewayProcess> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "plantd-gw-" });
  await Deno.mkdir(`${dir}/data`);
  const root = new URL("..", import.meta.url).pathname;
  const child = spawnWatched(
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", `${root}deno.json`, `${root}main.ts`, "gateway"],
      cwd: dir,
      env: {
        PLANTD_GATEWAY_PORT: String(port),
        PLANTD_GATEWAY_BROKER_ENDPOINT: system.brokerEndpoint,
        PLANTD_GATEWAY_BUSES: JSON.stringify(system.backends),
        PLANTD_GATEWAY_METRICS_DB: "",
        PLANTD_GATEWAY_LOG_LEVEL: "warn",
        PLANTD_GATEWAY_STATE_BUS_SECRET: system.stateBusSecret,
        ...env,
      },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }),
  );
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    await child.stop();
    await Deno.remove(dir, { recursive: true });
  };
  try {
    await waitFor(async () => {
      if (child.exited()) throw new Error(`gateway process exited: ${child.stderr()}`);
      try {
        await (await fetch(`${url}/livez`)).body?.cancel();
        return true;
      } catch {
        return false;
      }
    }, { timeoutMs: 60_000, intervalMs: 100, what: "second gateway /livez" });
  } catch (error) {
    await stop();
    throw error;
  }
  return { url, stop, stderr: child.stderr };
}
