/**
 * Failover of a broker pair (docs/ha.md), measured: `main.ts broker` as
 * primary and backup, a `main.ts state` worker registered with both, and
 * steady state writes (open loop, a fresh key each) through an MdpClient of
 * the pair. Each round SIGKILLs the active broker under that load, waits for
 * writes to resume on the other, checks every write against the store, and
 * restarts the killed broker (it comes back passive), so kills alternate
 * between primary and backup. A last round kills the passive broker.
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
import { median } from "./_stats.ts";

/** Settings of {@link measureFailover}. */
export interface FailoverSettings {
  /** SIGKILLs, at least 5 for a median and range worth reading. @default 5 */
  kills?: number;
  /** The pair's heartbeat_ms. @default 1000 (the default configuration) */
  heartbeatMs?: number;
  /** Writes started per second. @default 200 */
  rate?: number;
  /** Timeout (deadline) of each write. @default 3000 */
  timeoutMs?: number;
  /** Writes acknowledged before each kill, and after it (sent after it) before the round ends. @default 200 */
  writesAround?: number;
  /** Told of each step, for a progress line. */
  log?: (line: string) => void;
}

/** One kill. */
export interface KillResult {
  /** Which broker was killed. */
  killed: "primary" | "backup";
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

/** Summary of all kills. */
export interface FailoverResult {
  settings: Required<Omit<FailoverSettings, "log">>;
  kills: KillResult[];
  /** A last kill, of the passive broker: writes go on through the active one. */
  passiveKill: Omit<KillResult, "failoverMs">;
  failoverMs: { median: number; min: number; max: number };
}

async function until(what: string, timeoutMs: number, ready: () => boolean | Promise<boolean>) {
  const deadline = Date.now() + timeoutMs;
  while (!(await ready())) {
    if (Date.now() > deadline) throw new Error(`bench:ha: ${what} not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Runs the kills (see the module documentation); every process is stopped at the end. */
export async function measureFailover(settings: FailoverSettings = {}): Promise<FailoverResult> {
  const s = {
    kills: settings.kills ?? 5,
    heartbeatMs: settings.heartbeatMs ?? 1000,
    rate: settings.rate ?? 200,
    timeoutMs: settings.timeoutMs ?? 3000,
    writesAround: settings.writesAround ?? 200,
  };
  const log = settings.log ?? (() => {});
  const ports: PairPorts = pairPorts();
  const endpoints = [ports.primary.endpoint, ports.backup.endpoint];
  const dir = await Deno.makeTempDir({ prefix: "bench-ha-" });
  const brokers = {
    primary: new BrokerProcess(ports, "primary", s.heartbeatMs),
    backup: new BrokerProcess(ports, "backup", s.heartbeatMs),
  };
  const state = startStateProcess(endpoints, `${dir}/state.db`);
  const client = new MdpClient(endpoints, { timeoutMs: s.timeoutMs });
  const kills: KillResult[] = [];
  let passiveKill: FailoverResult["passiveKill"] | undefined;
  try {
    await brokers.primary.waitState("active");
    await brokers.backup.waitState("passive");
    for (let round = 0; round <= s.kills; round++) {
      const scope = `bench-ha-${round}`;
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
      const active = (await brokers.primary.state()) === "active" ? "primary" : "backup";
      // The rounds kill the active broker; the last one the passive broker.
      const passiveRound = round === s.kills;
      const victim = passiveRound ? (active === "primary" ? "backup" : "primary") : active;
      const load = new WriteLoad(client, scope, {
        rate: s.rate,
        maxInFlight: 1024,
        timeoutMs: s.timeoutMs,
      });
      await until("writes before the kill", 30_000, () => load.acked >= s.writesAround);
      // At a random point of the heartbeat: the peer's last report is that far behind.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * s.heartbeatMs));
      const killedAt = Date.now();
      await brokers[victim].kill();
      await until(
        "writes after the kill",
        60_000,
        () => load.ackedSince(killedAt) >= s.writesAround,
      );
      await load.stop();
      const check = await checkWrites(client, scope, load.records);
      const restartedAt = Date.now();
      brokers[victim].restart();
      await brokers[victim].waitState("passive", 60_000);
      const result: KillResult = {
        killed: victim,
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
      if (passiveRound) {
        const { failoverMs: _, ...rest } = result;
        passiveKill = rest;
      } else kills.push(result);
      log(
        `kill ${round + 1}/${s.kills + 1} (${victim}, ${passiveRound ? "passive" : "active"}): ` +
          `first write after it acknowledged in ${result.failoverMs} ms, ` +
          `${result.failed} failed ${JSON.stringify(result.errors)}, ${result.lost} lost, ` +
          `${result.duplicated} duplicated`,
      );
    }
  } finally {
    await client.close();
    await state.stop("SIGKILL");
    await brokers.primary.kill();
    await brokers.backup.kill();
    await Deno.remove(dir, { recursive: true });
  }
  const times = kills.map((k) => k.failoverMs);
  return {
    settings: s,
    kills,
    passiveKill: passiveKill!,
    failoverMs: { median: median(times), min: Math.min(...times), max: Math.max(...times) },
  };
}
