/**
 * Broker pairs for tests (docs/ha.md): in this process (startBroker), or as
 * real `main.ts broker` processes that can be SIGKILLed and restarted.
 *
 * @module
 */
import { Registry } from "prom-client";
import { brokerConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { startBroker } from "../roles/broker.ts";
import { connectableEndpoint } from "../roles/running.ts";
import type { MdpClient } from "../mdp/client.ts";
import { MdpError } from "../mdp/errors.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { freePort, spawnWatched, waitFor, type WatchedChild } from "./_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Where the two brokers of a pair listen (fixed ports, so a broker can restart on them). */
export interface PairPorts {
  primary: { endpoint: string; stateBind: string; healthPort: number };
  backup: { endpoint: string; stateBind: string; healthPort: number };
}

/** Free loopback ports for a pair. */
export function pairPorts(): PairPorts {
  const side = () => ({
    endpoint: `tcp://127.0.0.1:${freePort()}`,
    stateBind: `tcp://127.0.0.1:${freePort()}`,
    healthPort: freePort(),
  });
  return { primary: side(), backup: side() };
}

/** The command-line flags of one broker of the pair. */
export function pairArgs(
  ports: PairPorts,
  role: "primary" | "backup",
  heartbeatMs: number,
  extra: string[] = [],
): string[] {
  const self = ports[role];
  const peer = ports[role === "primary" ? "backup" : "primary"];
  return [
    "--endpoint",
    self.endpoint,
    "--health-port",
    String(self.healthPort),
    "--buses",
    "[]",
    "--heartbeat-interval-ms",
    "200",
    "--heartbeat-liveness",
    "10",
    "--ha",
    JSON.stringify({
      role,
      state_bind: self.stateBind,
      peer_state_endpoint: peer.stateBind,
      heartbeat_ms: heartbeatMs,
    }),
    ...extra,
  ];
}

/** One broker of a pair in this process. */
export async function startPairBroker(
  ports: PairPorts,
  role: "primary" | "backup",
  heartbeatMs = 100,
  extraArgs: string[] = [],
) {
  const registry = new Registry();
  const started = await startBroker(
    loadConfig(brokerConfig, {
      args: [...pairArgs(ports, role, heartbeatMs, extraArgs), "--log-level", "error"],
      env: {},
    }),
    registry,
  );
  return { ...started, registry, endpoint: connectableEndpoint(started.server.endpoint) };
}

/** The `pair_state` and `pair_peer` checks of a broker's /healthz. */
export async function pairHealth(
  healthPort: number,
): Promise<{ status: number; state: string; peer: string; peerUp: boolean }> {
  const response = await fetch(`http://127.0.0.1:${healthPort}/healthz`);
  const body = await response.json();
  const check = (name: string) =>
    body.checks.find((c: { name: string }) => c.name === name) as {
      status: string;
      output: string;
    };
  return {
    status: response.status,
    state: check("pair_state").output.split(" ")[0]!,
    peer: check("pair_peer").output,
    peerUp: check("pair_peer").status === "UP",
  };
}

/** A `main.ts broker` process of a pair. */
export class BrokerProcess {
  readonly role: "primary" | "backup";
  readonly healthPort: number;
  child: WatchedChild;
  #args: string[];

  constructor(
    ports: PairPorts,
    role: "primary" | "backup",
    heartbeatMs: number,
    extraArgs: string[] = [],
  ) {
    this.role = role;
    this.healthPort = ports[role].healthPort;
    this.#args = pairArgs(ports, role, heartbeatMs, ["--log-level", "info", ...extraArgs]);
    this.child = this.#spawn();
  }

  #spawn(): WatchedChild {
    return spawnWatched(
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "main.ts", "broker", ...this.#args],
        cwd: ROOT,
        env: { PLANTD_BROKER_LOG_FORMAT: "json" },
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }),
    );
  }

  /** Its pair state from /healthz, or undefined while it does not answer. */
  async state(): Promise<string | undefined> {
    try {
      return (await pairHealth(this.healthPort)).state;
    } catch {
      return undefined;
    }
  }

  /** Waits until /healthz names `state`. */
  async waitState(state: string, timeoutMs = 30_000): Promise<void> {
    let last: string | undefined;
    await waitFor(async () => (last = await this.state()) === state, {
      timeoutMs,
      intervalMs: 50,
      what: () => `the ${this.role} to be ${state} (is ${last}); stderr: ${this.child.stderr()}`,
    });
  }

  /** A check of its /healthz, or undefined while it does not answer. */
  async check(name: string): Promise<{ status: string; output?: string } | undefined> {
    try {
      const response = await fetch(`http://127.0.0.1:${this.healthPort}/healthz`);
      const body = await response.json();
      return body.checks.find((c: { name: string }) => c.name === name);
    } catch {
      return undefined;
    }
  }

  kill(): Promise<Deno.CommandStatus> {
    return this.child.stop("SIGKILL");
  }

  /** Starts it again on the same ports (after {@link kill}). */
  restart(): void {
    this.child = this.#spawn();
  }

  stop(): Promise<Deno.CommandStatus> {
    return this.child.stop("SIGTERM");
  }
}

/** A `main.ts state` process serving through both brokers of a pair. */
export function startStateProcess(endpoints: readonly string[], db: string): WatchedChild {
  return spawnWatched(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "main.ts",
        "state",
        "--broker-endpoint",
        endpoints.join(","),
        "--db",
        db,
        "--health-port",
        "0",
        "--bus-endpoint",
        "",
        "--heartbeat-interval-ms",
        "200",
        "--heartbeat-liveness",
        "10",
        "--log-level",
        "warn",
      ],
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }),
  );
}

/** What became of one write of a {@link WriteLoad}. */
export interface WriteRecord {
  key: string;
  sentAt: number;
  /** When its success reply arrived. */
  ackedAt?: number;
  /** When its caller was told it failed, and how. */
  failedAt?: number;
  error?: string;
}

/**
 * Steady state writes through an MdpClient, as a gateway sends them: a new
 * write every `1000 / rate` ms whatever happens to the others (at most
 * `maxInFlight` at once), each setting a fresh key once (`k1`, `k2`, …) in
 * `scope`, until stopped. A failed write is not retried.
 */
export class WriteLoad {
  readonly records: WriteRecord[] = [];
  #stopped = false;
  #inFlight = new Set<Promise<void>>();
  #loop: Promise<void>;
  #next = 1;
  #client: MdpClient;
  #scope: string;
  #timeoutMs: number;

  constructor(
    client: MdpClient,
    scope: string,
    options: { rate: number; maxInFlight: number; timeoutMs: number },
  ) {
    this.#client = client;
    this.#scope = scope;
    this.#timeoutMs = options.timeoutMs;
    const interval = 1000 / options.rate;
    this.#loop = (async () => {
      let due = Date.now();
      while (!this.#stopped) {
        while (due <= Date.now() && this.#inFlight.size < options.maxInFlight) {
          const write: Promise<void> = this.#write().finally(() => this.#inFlight.delete(write));
          this.#inFlight.add(write);
          due += interval;
        }
        // Behind (in-flight cap): no burst to catch up.
        if (due < Date.now() - interval) due = Date.now();
        await new Promise((resolve) => setTimeout(resolve, Math.max(1, due - Date.now())));
      }
    })();
  }

  async #write(): Promise<void> {
    const record: WriteRecord = { key: `k${this.#next++}`, sentAt: Date.now() };
    this.records.push(record);
    try {
      const [reply] = await this.#client.request(STATE_SERVICE, [
        "state-set",
        JSON.stringify({ service: this.#scope, key: record.key, value: record.key }),
      ], { timeoutMs: this.#timeoutMs });
      const parsed = JSON.parse(text(reply!));
      if (parsed.success === true) record.ackedAt = Date.now();
      else {
        record.failedAt = Date.now();
        record.error = String(parsed.error);
      }
    } catch (error) {
      record.failedAt = Date.now();
      record.error = error instanceof MdpError ? `${error.name}: ${error.message}` : String(error);
    }
  }

  /** Writes acknowledged so far whose request was sent at or after `since`. */
  ackedSince(since: number): number {
    return this.records.filter((r) => r.ackedAt !== undefined && r.sentAt >= since).length;
  }

  get acked(): number {
    return this.records.filter((r) => r.ackedAt !== undefined).length;
  }

  /** The first acknowledgement of a write sent at or after `since`. */
  firstAckSince(since: number): number | undefined {
    let first: number | undefined;
    for (const r of this.records) {
      if (
        r.ackedAt !== undefined && r.sentAt >= since && (first === undefined || r.ackedAt < first)
      ) {
        first = r.ackedAt;
      }
    }
    return first;
  }

  /** Stops making writes and waits for those in flight to settle. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
    await Promise.all(this.#inFlight);
  }
}

/** The outcome of a {@link WriteLoad} against what the store holds. */
export interface WriteCheck {
  attempted: number;
  acked: number;
  failed: number;
  /** Failed writes that were applied anyway (before their caller was told). */
  failedApplied: number;
  /** Acknowledged writes missing from the store or holding another value. */
  lost: string[];
  /** Keys at a revision above 1: applied more than once. */
  duplicated: string[];
  /** Failed writes applied after their caller was told they failed. */
  phantoms: string[];
}

/** Reads every key a load wrote (through `client`) and checks it (see {@link WriteCheck}). */
export async function checkWrites(
  client: MdpClient,
  scope: string,
  records: readonly WriteRecord[],
): Promise<WriteCheck> {
  const check: WriteCheck = {
    attempted: records.length,
    acked: 0,
    failed: 0,
    failedApplied: 0,
    lost: [],
    duplicated: [],
    phantoms: [],
  };
  for (let i = 0; i < records.length; i += 1000) {
    const chunk = records.slice(i, i + 1000);
    const [reply] = await client.request(STATE_SERVICE, [
      "state-get-many",
      JSON.stringify({ service: scope, keys: chunk.map((r) => r.key) }),
    ], { timeoutMs: 10_000 });
    const parsed = JSON.parse(text(reply!));
    if (parsed.success !== true) throw new Error(`state-get-many failed: ${parsed.error}`);
    const entries = parsed.data.entries as Record<
      string,
      { value: string; revision: number; updated_at: number } | null
    >;
    for (const record of chunk) {
      const entry = entries[record.key];
      if (record.ackedAt !== undefined) check.acked++;
      if (record.failedAt !== undefined) check.failed++;
      if (entry && entry.revision !== 1) check.duplicated.push(record.key);
      if (record.ackedAt !== undefined && entry?.value !== record.key) check.lost.push(record.key);
      if (record.failedAt !== undefined && entry) {
        check.failedApplied++;
        if (entry.updated_at > record.failedAt) check.phantoms.push(record.key);
      }
    }
  }
  return check;
}
