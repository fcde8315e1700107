/**
 * Failover of a broker pair (docs/ha.md), measured for bench/ha.ts:
 * `main.ts broker` as primary and backup, a `main.ts state` worker
 * registered with both, and steady state writes (open loop, a fresh key
 * each) through an MdpClient of the pair. Each kill SIGKILLs the active (or
 * the passive) broker under that load, waits for writes to resume, checks
 * every write against the store, and restarts the killed broker (it comes
 * back passive), so kills of the active broker alternate between primary
 * and backup.
 *
 * Per kill: failover time (SIGKILL to the first acknowledgement of a write
 * sent after it), writes failed (their caller was told so), lost
 * (acknowledged, not in the store), duplicated (a key at revision 2 or
 * more) and phantoms (applied after the caller was told it failed).
 *
 * @module
 */
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import {
  BrokerProcess,
  checkWrites,
  type PairPorts,
  pairPorts,
  startStateProcess,
  WriteLoad,
} from "../tests/_pair.ts";

/** Settings of a {@link FailoverPair}. */
export interface FailoverSettings {
  /** The pair's heartbeat_ms (1000 in the default configuration). */
  heartbeatMs: number;
  /** Writes started per second. */
  rate: number;
  /** Timeout (deadline) of each write. */
  timeoutMs: number;
  /** Writes acknowledged before each kill, and after it (sent after it) before the kill ends. */
  writesAround: number;
}

/** One kill. */
export interface KillResult {
  /** Which broker was killed, and whether it was the active one. */
  killed: "primary" | "backup";
  active: boolean;
  /** SIGKILL to the first acknowledgement of a write sent after it. */
  failoverMs: number;
  attempted: number;
  acked: number;
  failed: number;
  /** Failed writes that the store holds: applied before their caller was told. */
  failedApplied: number;
  lost: number;
  duplicated: number;
  phantoms: number;
  /** Restart of the killed broker to its report of "passive". */
  rejoinMs: number;
  /** Failed writes by what their caller was told. */
  errors: Record<string, number>;
}

async function until(what: string, timeoutMs: number, ready: () => boolean | Promise<boolean>) {
  const deadline = Date.now() + timeoutMs;
  while (!(await ready())) {
    if (Date.now() > deadline) throw new Error(`bench:ha: ${what} not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * A broker pair, a state worker registered with both and a client of the
 * pair; {@link kill} measures one SIGKILL (see the module documentation).
 */
export class FailoverPair {
  readonly #s: FailoverSettings;
  readonly #dir: string;
  readonly #brokers: Record<"primary" | "backup", BrokerProcess>;
  readonly #state: ReturnType<typeof startStateProcess>;
  readonly #client: MdpClient;
  #round = 0;

  private constructor(s: FailoverSettings, dir: string) {
    this.#s = s;
    this.#dir = dir;
    const ports: PairPorts = pairPorts();
    const endpoints = [ports.primary.endpoint, ports.backup.endpoint];
    this.#brokers = {
      primary: new BrokerProcess(ports, "primary", s.heartbeatMs),
      backup: new BrokerProcess(ports, "backup", s.heartbeatMs),
    };
    this.#state = startStateProcess(endpoints, `${dir}/state.db`);
    this.#client = new MdpClient(endpoints, { timeoutMs: s.timeoutMs });
    // These children are not the harness's: its signal handler and watchdog end in Deno.exit.
    globalThis.addEventListener("unload", this.#killNow);
  }

  readonly #killNow = () => {
    for (const child of [this.#brokers.primary.child, this.#brokers.backup.child, this.#state]) {
      try {
        child.process.kill("SIGKILL");
      } catch { /* gone */ }
    }
  };

  /** Starts the pair (primary active, backup passive) and the state worker in `dbDir`. */
  static async start(settings: FailoverSettings, dbDir?: string): Promise<FailoverPair> {
    const dir = await Deno.makeTempDir({ prefix: "bench-ha-", dir: dbDir });
    const pair = new FailoverPair(settings, dir);
    try {
      await pair.#brokers.primary.waitState("active");
      await pair.#brokers.backup.waitState("passive");
    } catch (error) {
      await pair.stop();
      throw error;
    }
    return pair;
  }

  /** SIGKILLs the active broker (or the passive one) under load; restarts it before returning. */
  async kill(which: "active" | "passive"): Promise<KillResult> {
    const s = this.#s;
    const client = this.#client;
    const scope = `bench-ha-${this.#round++}`;
    await until("the state service", 30_000, async () => {
      try {
        const [reply] = await client.request(STATE_SERVICE, [
          "create-scope",
          JSON.stringify({ service: scope }),
        ]);
        return JSON.parse(text(reply!)).success === true;
      } catch {
        return false;
      }
    });
    const active = (await this.#brokers.primary.state()) === "active" ? "primary" : "backup";
    const victim = which === "active" ? active : active === "primary" ? "backup" : "primary";
    const load = new WriteLoad(client, scope, {
      rate: s.rate,
      maxInFlight: 1024,
      timeoutMs: s.timeoutMs,
    });
    await until("writes before the kill", 30_000, () => load.acked >= s.writesAround);
    // At a random point of the heartbeat: the peer's last report is that far behind.
    await new Promise((resolve) => setTimeout(resolve, Math.random() * s.heartbeatMs));
    const killedAt = Date.now();
    await this.#brokers[victim].kill();
    await until(
      "writes after the kill",
      60_000,
      () => load.ackedSince(killedAt) >= s.writesAround,
    );
    await load.stop();
    const check = await checkWrites(client, scope, load.records);
    const restartedAt = Date.now();
    this.#brokers[victim].restart();
    await this.#brokers[victim].waitState("passive", 60_000);
    const result: KillResult = {
      killed: victim,
      active: which === "active",
      failoverMs: load.firstAckSince(killedAt)! - killedAt,
      attempted: check.attempted,
      acked: check.acked,
      failed: check.failed,
      failedApplied: check.failedApplied,
      lost: check.lost.length,
      duplicated: check.duplicated.length,
      phantoms: check.phantoms.length,
      rejoinMs: Date.now() - restartedAt,
      errors: {},
    };
    for (const record of load.records) {
      if (record.error === undefined) continue;
      const kind = record.error.replace(/:.*/s, "");
      result.errors[kind] = (result.errors[kind] ?? 0) + 1;
    }
    return result;
  }

  /** Stops every process of the pair and removes its database. */
  async stop(): Promise<void> {
    globalThis.removeEventListener("unload", this.#killNow);
    await this.#client.close();
    await this.#state.stop("SIGKILL");
    await this.#brokers.primary.kill();
    await this.#brokers.backup.kill();
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}
