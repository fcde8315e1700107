/**
 * Helpers of the durable-request tests: a broker in its own process (so it
 * can be SIGKILLed and started again on the same journal and port), and the
 * broker's journal operations as a client calls them.
 *
 * @module
 */
import { MdpClient } from "../mdp/client.ts";
import { freePort, spawnWatched, waitFor, type WatchedChild } from "./_helpers.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

/** A broker process with durable services. */
export interface BrokerProcess {
  readonly endpoint: string;
  readonly healthUrl: string;
  child: WatchedChild;
  /** Starts it again (after a kill) on the same port, journal and settings. */
  restart(): Promise<void>;
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/** Options of {@link startBrokerProcess}. */
export interface BrokerProcessOptions {
  journal: string;
  durableServices: string[];
  /** More `--key value` arguments. */
  args?: string[];
}

/** Starts `main.ts broker` on free ports; resolves once its health server answers. */
export async function startBrokerProcess(options: BrokerProcessOptions): Promise<BrokerProcess> {
  const port = freePort();
  const healthPort = freePort();
  const endpoint = `tcp://127.0.0.1:${port}`;
  const healthUrl = `http://127.0.0.1:${healthPort}`;
  const spawn = () =>
    spawnWatched(
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          MAIN,
          "broker",
          "--endpoint",
          endpoint,
          "--health-port",
          String(healthPort),
          "--log-level",
          "warn",
          // No buses: their default ports are shared by everything on this machine.
          "--buses",
          "[]",
          "--heartbeat-interval-ms",
          "200",
          "--heartbeat-liveness",
          "10",
          "--journal",
          options.journal,
          "--durable-services",
          JSON.stringify(options.durableServices),
          ...(options.args ?? []),
        ],
        stdout: "null",
        stderr: "piped",
      }),
    );
  const process: BrokerProcess = {
    endpoint,
    healthUrl,
    child: spawn(),
    async restart() {
      if (!process.child.exited()) throw new Error("the broker is still running");
      process.child = spawn();
      await serving(process);
    },
    stop: (signal) => process.child.stop(signal),
  };
  await serving(process);
  return process;
}

async function serving(broker: BrokerProcess): Promise<void> {
  await waitFor(async () => {
    if (broker.child.exited()) throw new Error(`the broker exited: ${broker.child.stderr()}`);
    try {
      const response = await fetch(`${broker.healthUrl}/livez`);
      await response.body?.cancel();
      return response.ok;
    } catch {
      return false;
    }
  }, { timeoutMs: 30_000, intervalMs: 50, what: "the broker's health server" });
}

/** The broker's /healthz `journal` check. */
export async function journalCheck(
  broker: BrokerProcess,
): Promise<{ status: string; output?: string; required?: boolean } | undefined> {
  const response = await fetch(`${broker.healthUrl}/healthz`);
  const body = await response.json();
  return body.checks.find((c: { name: string }) => c.name === "journal");
}

/** An `org.plantd.Broker` journal operation: its `data`, or throws its error. */
export async function brokerOp(
  client: MdpClient,
  operation: string,
  params: Record<string, unknown> = {},
): Promise<Record<string, unknown>> {
  const [reply] = await client.request("org.plantd.Broker", [operation, JSON.stringify(params)], {
    timeoutMs: 10_000,
  });
  const parsed = JSON.parse(decoder.decode(reply));
  if (!parsed.success) throw new Error(`${operation}: ${parsed.error}`);
  return parsed.data;
}

/** Every dead letter, following the pages. */
export async function allDeadLetters(client: MdpClient): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = [];
  let after: string | undefined;
  do {
    const page = await brokerOp(client, "dlq-list", { limit: 1000, ...(after ? { after } : {}) });
    out.push(...page.dead_letters as Array<Record<string, unknown>>);
    after = page.next as string | undefined;
  } while (after);
  return out;
}
