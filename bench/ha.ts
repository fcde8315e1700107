/**
 * `deno task bench:ha`: high availability, measured. For now the failover
 * of a broker pair under steady state writes (bench/ha_failover.ts); the
 * result is kept in bench/results/.
 *
 * Environment: BENCH_HA_KILLS (default 5), BENCH_HA_HEARTBEAT_MS (default
 * 1000, the pair's default), BENCH_HA_RATE (writes per second, default 200),
 * BENCH_HA_TIMEOUT_MS (each write's deadline, default 3000).
 *
 * @module
 */
import { measureFailover } from "./ha_failover.ts";
import { num, saveResult, table } from "./_stats.ts";

const settings = {
  kills: Number(Deno.env.get("BENCH_HA_KILLS") ?? "5"),
  heartbeatMs: Number(Deno.env.get("BENCH_HA_HEARTBEAT_MS") ?? "1000"),
  rate: Number(Deno.env.get("BENCH_HA_RATE") ?? "200"),
  timeoutMs: Number(Deno.env.get("BENCH_HA_TIMEOUT_MS") ?? "3000"),
};

const watchdog = setTimeout(() => {
  console.error("bench:ha: watchdog expired");
  Deno.exit(2);
}, 120_000 * settings.kills);

const result = await measureFailover({ ...settings, log: (line) => console.error(line) });
clearTimeout(watchdog);

console.log(
  `## Broker pair failover (deno task bench:ha)\n\n` +
    `SIGKILL of the active broker of a pair under ${settings.rate} state writes/s (open loop, ` +
    `a fresh key each, deadline ${settings.timeoutMs} ms), heartbeat_ms ${settings.heartbeatMs}; ` +
    `the killed broker is restarted (passive) before the next kill.\n`,
);
console.log(table(
  [
    "kill",
    "killed",
    "failover ms",
    "writes",
    "acked",
    "failed",
    "failed, applied before told",
    "lost",
    "duplicated",
    "phantoms",
    "rejoin ms",
  ],
  result.kills.map((k, i) => [
    String(i + 1),
    k.killed,
    num(k.failoverMs),
    num(k.attempted),
    num(k.acked),
    num(k.failed),
    num(k.failedApplied),
    num(k.lost),
    num(k.duplicated),
    num(k.phantoms),
    num(k.rejoinMs),
  ]),
));
const passive = result.passiveKill;
console.log(
  `\nSIGKILL of the passive broker (${passive.killed}) under the same load: ` +
    `${num(passive.attempted)} writes, ${num(passive.failed)} failed, ${num(passive.lost)} lost, ` +
    `${num(passive.duplicated)} duplicated; restarted, passive again after ${
      num(passive.rejoinMs)
    } ms`,
);
const { median, min, max } = result.failoverMs;
console.log(
  `\nfailover: median ${num(median)} ms, range ${num(min)}-${
    num(max)
  } ms over ${result.kills.length} kills`,
);
console.log(`result: ${await saveResult("ha", result.settings, result)}`);
